"""spava_ext.timing: the pipelined sample counts device time only (the host's glue of the first
call is held outside the window), and the hold it queues for that."""

import time

import pytest
import torch
from spava_ext import timing


def test_hold_from_host_times():
    # the first warm-up call (one-off setup) is left out; twice the median + 20 us
    assert timing._hold_s([5e-3, 1e-4, 2e-4, 3e-4]) == pytest.approx(2 * 2e-4 + 20e-6)
    assert timing._hold_s([1e-4]) == pytest.approx(2e-4 + 20e-6)  # one call: that one
    assert timing._hold_s([]) == 0.0


@pytest.mark.cuda
def test_pipelined_sample_excludes_the_first_calls_host_time():
    """Two functions queue the same ~3 ms spin kernel; one spends 2 ms on the host first. With
    2 calls per sample the second call's host time overlaps the first kernel, and the first
    call's is held outside the window: both measure the kernel (the window used to count the
    first 2 ms: +1 ms per call, ~30 %)."""
    cycles = int(3e-3 * timing._MAX_CLOCK_HZ)

    def slow_host():
        time.sleep(2e-3)
        torch.cuda._sleep(cycles)

    t = timing.gpu_time_interleaved({"slow_host": slow_host,
                                     "fast_host": lambda: torch.cuda._sleep(cycles)},
                                    warmup=3, repeats=6, pipelined=2)
    slow, fast = t["slow_host"]["ms"], t["fast_host"]["ms"]
    assert abs(slow - fast) < 0.05 * fast, (slow, fast)


@pytest.mark.cuda
def test_sustained_time_is_the_time_per_call():
    """sustained_time's windows of back-to-back calls give ms per call: a ~1 ms spin kernel
    measures ~1 ms (not the window, not a sample of 4), like gpu_time's pipelined samples."""
    cycles = int(1e-3 * timing._MAX_CLOCK_HZ)
    run = lambda: torch.cuda._sleep(cycles)  # noqa: E731
    ref = timing.gpu_time(run, warmup=3, repeats=5, pipelined=4)["ms"]
    t = timing.sustained_time(run, ref, windows=2, window_s=0.05, warm_s=0.02)
    assert t["calls_per_sample"] == int(50 / ref) and t["repeats"] == 2  # 50 ms windows
    assert abs(t["ms"] - ref) < 0.1 * ref, (t, ref)
    assert t["ms"] == pytest.approx(t["mean_ms"])
    if timing._nvml_clock_reader() is not None:  # the windows' mean SM clock, sampled
        assert t["clock_samples"] > 0 and 100 < t["nvml_sm_clock_mhz"] < 3000, t
        assert 0.0 <= t["power_cap_fraction"] <= 1.0, t


def test_sustained_time_energy_per_call(monkeypatch):
    """With an energy counter, sustained_time reports joules per timed call and the mean power
    (CPU: the GPU pieces stubbed; the counter reads 0 J before the windows and 12 J after)."""
    readings = iter([0, 12_000])
    monkeypatch.setattr(timing, "_energy_mj", lambda: next(readings))
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(timing, "gpu_time", lambda fn, warmup, repeats, pipelined: {
        "ms": 2.0, "mean_ms": 2.1, "min_ms": 2.0, "max_ms": 2.2, "repeats": repeats,
        "calls_per_sample": pipelined})
    t = timing.sustained_time(lambda: None, est_ms=1.0, windows=3, window_s=0.01, warm_s=0.0)
    assert t["ms"] == 2.1 and t["median_ms"] == 2.0
    assert t["joules_per_call"] == pytest.approx(12.0 / (3 * 10 + 3))
    assert t["power_w"] > 0


def test_clock_sampler_summary(monkeypatch):
    """ClockSampler polls (clock, reasons) in a thread while its block runs; the summary is the
    mean clock and the fraction of samples per reason (CPU: the NVML reader stubbed)."""
    readings = iter([(1500, 0x4), (1700, 0x0), (1600, 0x4 | 0x20)] * 1000)
    monkeypatch.setattr(timing, "_nvml_clock_reader", lambda: lambda: next(readings))
    with timing.ClockSampler(period_s=0.001) as s:
        deadline = time.perf_counter() + 1.0
        while len(s.samples) < 3 and time.perf_counter() < deadline:
            time.sleep(0.002)
    n = len(s.samples)
    assert n >= 3
    first = [(1500, 0x4), (1700, 0x0), (1600, 0x24)] * (n // 3 + 1)
    assert s.samples == first[:n]
    summary = s.summary()
    assert summary["clock_samples"] == n
    assert summary["nvml_sm_clock_mhz"] == pytest.approx(sum(c for c, _ in first[:n]) / n)
    assert summary["power_cap_fraction"] == pytest.approx(
        sum(1 for _, m in first[:n] if m & 0x4) / n)
    assert summary["thermal_fraction"] == pytest.approx(
        sum(1 for _, m in first[:n] if m & 0x20) / n)
    assert summary["hw_slowdown_fraction"] == 0.0


def test_clock_sampler_without_nvml(monkeypatch):
    """No NVML: no thread, an empty summary (sustained_time then reports no clock)."""
    monkeypatch.setattr(timing, "_nvml_clock_reader", lambda: None)
    with timing.ClockSampler() as s:
        pass
    assert s.samples == [] and s.summary() == {}
