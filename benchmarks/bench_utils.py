"""The one timing utility of the benchmarks, plus result files.

``gpu_time(fn, ...)``: CUDA events around each call, warm-up first, median of the repeats,
optional rotation over several input sets (so a result cannot come from a warm L2).
Results go to ``benchmarks/results/<name>_<date>_<card>.json`` with card, date and commit.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def gpu_time(fn: Callable, args_list: Optional[Sequence[tuple]] = None, warmup: int = 3,
             repeats: int = 20) -> dict:
    """Median / min / max milliseconds of ``fn(*args)`` over ``repeats`` calls, cycling through
    ``args_list`` (default one empty tuple)."""
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


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    t = gpu_time(lambda: dst.copy_(src), warmup=3, repeats=10)["ms"]
    return 2 * nbytes / (t * 1e-3) / 1e9


def card() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def commit() -> str:
    if os.environ.get("SPAVA_COMMIT"):
        return os.environ["SPAVA_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=Path(__file__).parent).strip()
    except Exception:
        return "unknown"


def write_result(name: str, payload: dict) -> Path:
    """Write ``payload`` plus card/date/commit/torch to benchmarks/results (and to $OUT)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"card": card(), "date": now.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
            "torch": torch.__version__, "cuda": torch.version.cuda}
    slug = card().replace(" ", "_").replace("/", "_")
    path = RESULTS / f"{name}_{now.strftime('%Y%m%d')}_{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**meta, **payload}, indent=1)
    path.write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], path.name).write_text(text)
    return path
