"""The one GPU timing utility (used by the simulator and every benchmark script)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Callable, Optional, Sequence

import torch

__all__ = ["ClockSampler", "capture_graph", "gpu_time", "gpu_time_interleaved", "graph_time",
           "sustained_time"]


# The highest SM clock of the supported cards (H100 boost: 1980 MHz): a hold of t seconds is
# t * _MAX_CLOCK_HZ cycles, so it lasts at least t at any clock.
_MAX_CLOCK_HZ = 2.0e9


def _host_s(call: Callable[[], None]) -> float:
    """Seconds the host takes to enqueue one call (its glue up to the last launch)."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _sample_ms(call: Callable[[], None], pipelined: int, clocks: Optional[list] = None,
               hold_s: float = 0.0) -> float:
    """Milliseconds per call of ``pipelined`` calls of ``call`` between two CUDA events. With
    ``clocks``, appends the SM clock read while the calls are queued (the GPU busy with them;
    read after the synchronisation it shows the idle boost clock). With ``hold_s``, a one-thread
    spin kernel of that length is queued before the start event, so that the window opens with
    the first call's kernels already queued: the host's glue of the first call is not counted
    as device time (without the hold, 27-99 us of host glue of an attn_fwd call would be, i.e.
    ~7-25 us per call at 4 calls per sample)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if hold_s > 0:
        torch.cuda._sleep(int(hold_s * _MAX_CLOCK_HZ))
    start.record()
    for _ in range(pipelined):
        call()
    end.record()
    if clocks is not None:
        clocks.append(_sm_clock_mhz())
    end.synchronize()
    return start.elapsed_time(end) / pipelined


def _stats(times: list, pipelined: int) -> dict:
    return {"ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "max_ms": max(times), "repeats": len(times),
            "calls_per_sample": pipelined}


def gpu_time(fn: Callable, args_list: Optional[Sequence[tuple]] = None, warmup: int = 3,
             repeats: int = 20, pipelined: int = 1) -> dict:
    """Median / min / max milliseconds of ``fn(*args)`` over ``repeats`` samples timed with CUDA
    events after ``warmup`` calls, cycling through ``args_list`` (several input sets keep a
    result from coming out of a warm L2).

    A sample is one call, synchronised, by default: host work before the first kernel counts.
    With ``pipelined = n`` a sample is n calls queued back to back between the events, divided
    by n: the host runs ahead as in a model's forward pass, and the time is the device's (the
    window opens once the first call is queued: see ``_sample_ms``)."""
    args_list = list(args_list or [()])
    host = [_host_s(lambda i=i: fn(*args_list[i % len(args_list)])) for i in range(warmup)]
    torch.cuda.synchronize()
    hold = _hold_s(host) if pipelined > 1 else 0.0
    calls = iter(range(1 << 62))  # timed call k uses args_list[k % len]
    call = lambda: fn(*args_list[next(calls) % len(args_list)])  # noqa: E731
    return _stats([_sample_ms(call, pipelined, hold_s=hold) for _ in range(repeats)], pipelined)


def sustained_time(fn: Callable[[], None], est_ms: float, windows: int = 3,
                   window_s: float = 0.5, warm_s: float = 0.5) -> dict:
    """``fn`` alone under sustained load: ~warm_s seconds of back-to-back calls, then
    ``windows`` samples of ~window_s seconds each, every sample one run of calls queued back to
    back between two CUDA events (no gap, no synchronisation inside): ms per call = the
    device's sustained throughput, averaged over whatever the power limit does meanwhile.
    Short samples are not enough at the 700 W limit: the clock swings between states for tens
    to hundreds of milliseconds, so the median of 20 samples of 4 calls landed anywhere in a
    +-8 % band (the same call measured 589 and 674 TF/s in one run), and side by side
    with slower, lower-power contenders a kernel measured up to ~9 % faster (the headroom after
    their samples: the rank-0 call of 3B heads at 584 TF/s beside its plain plan, 637 with
    cuDNN and flash SDPA between its samples). The benchmarks' headline rates are taken this
    way; the side-by-side timings (same clocks) give the ratios to the baselines. Where NVML
    can be read, the fraction of the windows in which the power cap (or a slowdown) held the
    clock down comes with them, and NVML's mean clock reading (:class:`ClockSampler`)."""
    per_ms = max(est_ms, 1e-3)
    calls = max(4, int(window_s * 1e3 / per_ms))
    for _ in range(max(3, int(warm_s * 1e3 / per_ms))):
        fn()
    torch.cuda.synchronize()
    e0, t0 = _energy_mj(), time.perf_counter()
    with ClockSampler() as clocks:
        r = gpu_time(fn, warmup=3, repeats=windows, pipelined=calls)
    e1, t1 = _energy_mj(), time.perf_counter()
    out = {**r, "ms": r["mean_ms"], "median_ms": r["ms"], **clocks.summary()}
    if e0 is not None and e1 is not None and e1 > e0:
        # the card's energy over the windows (and gpu_time's 3 warm-up calls): joules per call
        # and the mean power; under the power limit, FLOP per joule is what a kernel can improve
        out["joules_per_call"] = (e1 - e0) * 1e-3 / (windows * calls + 3)
        out["power_w"] = (e1 - e0) * 1e-3 / (t1 - t0)
    return out


# NVML's clock event ("throttle") reason bits that lower the SM clock below what was asked
_REASONS = {"power_cap": 0x4,            # SW power cap: the board's power limit
            "thermal": 0x20 | 0x40,      # SW / HW thermal slowdown
            "hw_slowdown": 0x8 | 0x80}   # HW slowdown, HW power brake


class ClockSampler:
    """Samples the SM clock and NVML's clock event reasons every ``period_s`` in a thread while
    the ``with`` block runs (the main thread waits in CUDA synchronisation meanwhile, so the
    samples cover the device's work). ``summary()``: the mean SM clock reading over the
    samples, the number of samples, and for each reason in ``_REASONS`` the fraction of samples
    in which it was active. Empty where NVML cannot be read (CPU machines, no pynvml).

    The clock is NVML's reading (``nvml_sm_clock_mhz``), which under the power cap is not the
    effective clock (docs/kernels/attn_fwd.md: a call that ran at <= 1.53 GHz read 1980 MHz;
    the clock64 trace gives the effective one), so it is reported beside the rates, never used
    to derive TF/s per GHz or a fraction of peak. The reason fractions are what it is for:
    whether the power limit held the clock down throughout."""

    def __init__(self, period_s: float = 0.005):
        self.period_s = period_s
        self.samples: list = []  # (clock MHz, reasons bitmask or None)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._read = _nvml_clock_reader()

    def __enter__(self) -> "ClockSampler":
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append(self._read())
            except Exception:  # a failed read (driver busy): skip that sample
                pass

    def summary(self) -> dict:
        if not self.samples:
            return {}
        out = {"nvml_sm_clock_mhz": statistics.fmean(c for c, _ in self.samples),
               "clock_samples": len(self.samples)}
        reasons = [m for _, m in self.samples if m is not None]
        for name, bits in _REASONS.items():
            if reasons:
                out[f"{name}_fraction"] = sum(1 for m in reasons if m & bits) / len(reasons)
        return out


def _nvml_clock_reader() -> Optional[Callable[[], tuple]]:
    """A function returning (SM clock MHz, clock event reasons bitmask or None), or None."""
    try:
        import pynvml

        handle = torch.cuda._get_pynvml_handler()
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)

        def read() -> tuple:  # the clock as _sm_clock_mhz reads it, failures raised
            return (int(torch.cuda.clock_rate()),
                    int(reasons(handle)) if reasons is not None else None)

        read()
        return read
    except Exception:  # no NVML / pynvml, no CUDA device
        return None


def _energy_mj() -> Optional[int]:
    """The GPU's energy counter (NVML, millijoules since the driver loaded), or None."""
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(torch.cuda._get_pynvml_handler()))
    except Exception:  # no NVML / pynvml, or a card without the counter
        return None


def capture_graph(fns: Sequence[Callable[[], None]]) -> torch.cuda.CUDAGraph:
    """One CUDA graph holding one call of each of ``fns`` (each run once eagerly first)."""
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    return graph


def graph_time(graph: torch.cuda.CUDAGraph, calls_per_replay: int = 1, warmup: int = 3,
               repeats: int = 30, hold: bool = True) -> dict:
    """Device time per call of a captured CUDA graph holding ``calls_per_replay`` calls: median /
    min / max over ``repeats`` replays, each timed alone with CUDA events. With ``hold`` (the
    default) each replay is queued behind a spin kernel, so that the window opens with the
    graph's work queued: the host's graph launch and an idle device's launch latency are not
    counted (``hold=False``: the window opens before the launch)."""
    host = [_host_s(graph.replay) for _ in range(warmup)]
    torch.cuda.synchronize()
    hold_s = _hold_s(host) if hold else 0.0
    times = [_sample_ms(graph.replay, 1, hold_s=hold_s) / calls_per_replay
             for _ in range(repeats)]
    return _stats(times, calls_per_replay)


def _hold_s(host_times: list) -> float:
    """The device hold before a pipelined sample: twice the host's enqueue time of one call
    (median of the warm-up calls; the first one, with its one-off setup, left out) + 20 us."""
    steady = host_times[1:] or host_times
    return 2 * statistics.median(steady) + 20e-6 if steady else 0.0


def _sm_clock_mhz() -> Optional[int]:
    """The current SM clock (NVML), or None where it cannot be read."""
    try:
        return int(torch.cuda.clock_rate())
    except Exception:  # no NVML / pynvml
        return None


def gpu_time_interleaved(fns: dict, warmup: int = 3, repeats: int = 20,
                         pipelined: int = 1) -> dict:
    """:func:`gpu_time` of several functions measured side by side: each sample times every
    function once, in turn, so that all of them see the same clocks (an H100 at its power limit
    runs anywhere from ~1350 to 1980 MHz under sustained tensor-core load, which moves a
    back-to-back comparison by 10 % or more). The order rotates from sample to sample, so that
    each function goes first equally often: the first call after the host's synchronisation
    (a short idle GPU) runs at a higher clock, which favoured the first function by ~2 % in a
    fixed order (measured: the same kernel twice, 606 vs 593 TF/s). Returns
    ``{name: gpu_time-style dict, with the median SM clock read while its calls were queued}``
    plus the median over all samples under ``"sm_clock_mhz"`` (None where NVML is absent).
    With ``pipelined = 1`` the read may land after the call ended (an idle reading)."""
    host = {name: [] for name in fns}
    for _ in range(warmup):
        for name, fn in fns.items():
            host[name].append(_host_s(fn))
    torch.cuda.synchronize()
    hold = {name: _hold_s(h) if pipelined > 1 else 0.0 for name, h in host.items()}
    names = list(fns)
    times = {name: [] for name in fns}
    clocks = {name: [] for name in fns}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(_sample_ms(fns[name], pipelined, clocks[name], hold[name]))
    out = {name: _stats(t, pipelined) for name, t in times.items()}
    for name in names:  # the clock while the function's calls ran (median over samples)
        known = [c for c in clocks[name] if c is not None]
        out[name]["sm_clock_mhz"] = statistics.median(known) if known else None
    known = [c for name in names for c in clocks[name] if c is not None]
    out["sm_clock_mhz"] = statistics.median(known) if known else None
    return out
