"""The one GPU timing utility (used by the simulator and every benchmark script)."""

from __future__ import annotations

import statistics
from typing import Callable, Optional, Sequence

import torch

__all__ = ["gpu_time", "gpu_time_interleaved"]


def _sample_ms(call: Callable[[], None], pipelined: int, clocks: Optional[list] = None) -> float:
    """Milliseconds per call of ``pipelined`` calls of ``call`` between two CUDA events. With
    ``clocks``, appends the SM clock read while the calls are queued (the GPU busy with them;
    read after the synchronisation it shows the idle boost clock)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(pipelined):
        call()
    end.record()
    if clocks is not None:
        clocks.append(_sm_clock_mhz())
    end.synchronize()
    return start.elapsed_time(end) / pipelined


def _stats(times: list, pipelined: int) -> dict:
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times), "calls_per_sample": pipelined}


def gpu_time(fn: Callable, args_list: Optional[Sequence[tuple]] = None, warmup: int = 3,
             repeats: int = 20, pipelined: int = 1) -> dict:
    """Median / min / max milliseconds of ``fn(*args)`` over ``repeats`` samples timed with CUDA
    events after ``warmup`` calls, cycling through ``args_list`` (several input sets keep a
    result from coming out of a warm L2).

    A sample is one call, synchronised, by default: host work before the first kernel counts.
    With ``pipelined = n`` a sample is n calls queued back to back between the events, divided
    by n: the host runs ahead as in a model's forward pass, and the time is the device's."""
    args_list = list(args_list or [()])
    for i in range(warmup):
        fn(*args_list[i % len(args_list)])
    torch.cuda.synchronize()
    calls = iter(range(1 << 62))  # timed call k uses args_list[k % len]
    call = lambda: fn(*args_list[next(calls) % len(args_list)])  # noqa: E731
    return _stats([_sample_ms(call, pipelined) for _ in range(repeats)], pipelined)


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
    fixed order (measured 2026-11-25: the same kernel twice, 606 vs 593 TF/s). Returns
    ``{name: gpu_time-style dict, with the median SM clock read while its calls were queued}``
    plus the median over all samples under ``"sm_clock_mhz"`` (None where NVML is absent).
    With ``pipelined = 1`` the read may land after the call ended (an idle reading)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    torch.cuda.synchronize()
    names = list(fns)
    times = {name: [] for name in fns}
    clocks = {name: [] for name in fns}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(_sample_ms(fns[name], pipelined, clocks[name]))
    out = {name: _stats(t, pipelined) for name, t in times.items()}
    for name in names:  # the clock while the function's calls ran (median over samples)
        known = [c for c in clocks[name] if c is not None]
        out[name]["sm_clock_mhz"] = statistics.median(known) if known else None
    known = [c for name in names for c in clocks[name] if c is not None]
    out["sm_clock_mhz"] = statistics.median(known) if known else None
    return out
