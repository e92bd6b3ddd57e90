"""The one GPU timing utility (used by the simulator and every benchmark script)."""

from __future__ import annotations

import statistics
from typing import Callable, Optional, Sequence

import torch

__all__ = ["gpu_time", "gpu_time_interleaved"]


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
    times = []
    calls = 0
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(pipelined):
            fn(*args_list[calls % len(args_list)])
            calls += 1
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / pipelined)
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": repeats, "calls_per_sample": pipelined}


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
    back-to-back comparison by 10 % or more). Returns ``{name: gpu_time-style dict}`` plus the
    median SM clock over the samples under ``"sm_clock_mhz"`` (None where NVML is absent)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    clocks = []
    for _ in range(repeats):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(pipelined):
                fn()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / pipelined)
        clocks.append(_sm_clock_mhz())
    out = {name: {"ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t),
                  "repeats": repeats, "calls_per_sample": pipelined}
           for name, t in times.items()}
    known = [c for c in clocks if c is not None]
    out["sm_clock_mhz"] = statistics.median(known) if known else None
    return out
