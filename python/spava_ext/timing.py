"""The one GPU timing utility (used by the simulator and every benchmark script)."""

from __future__ import annotations

import statistics
from typing import Callable, Optional, Sequence

import torch

__all__ = ["gpu_time"]


def gpu_time(fn: Callable, args_list: Optional[Sequence[tuple]] = None, warmup: int = 3,
             repeats: int = 20) -> dict:
    """Median / min / max milliseconds of ``fn(*args)`` over ``repeats`` calls timed with CUDA
    events after ``warmup`` calls, cycling through ``args_list`` (several input sets keep a
    result from coming out of a warm L2)."""
    args_list = list(args_list or [()])
    for i in range(warmup):
        fn(*args_list[i % len(args_list)])
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args = args_list[i % len(args_list)]
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": repeats}
