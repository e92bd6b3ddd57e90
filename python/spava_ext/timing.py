"""The one GPU timing utility (used by the simulator and every benchmark script)."""

from __future__ import annotations

import statistics
from typing import Callable, Optional, Sequence

import torch

__all__ = ["gpu_time"]


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
