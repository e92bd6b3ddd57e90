"""Helpers of the benchmark routines (benchmarks/bench.py): the timing utility
(``spava_ext.timing.gpu_time``: CUDA events, warm-up, median, rotating inputs), copy bandwidth,
the card's temperature, result files (``benchmarks/results/<name>_<date>_<card>.json`` with
card, date and commit), and the benchmarks' only access to environment variables
(SPAVA_COMMIT, OUT, LOCAL_RANK read; :func:`environment` sets others for a block)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator
from unittest import mock

import torch

from spava_ext.timing import (capture_graph, gpu_time, gpu_time_interleaved,  # noqa: F401
                              graph_time, sustained_time)  # (re-exported)

RESULTS = Path(__file__).resolve().parent / "results"

# Dense bf16 tensor-core peak of the H100 SXM per GHz of SM clock: 132 SMs x 4096 FLOP per clock
# (989 TF/s at 1830 MHz). Rates divided by peak-at-the-measured-clock compare runs at different
# clocks (the card at its 700 W limit runs 1350-1980 MHz).
PEAK_TFLOPS_PER_GHZ = 132 * 4096 / 1e3


def peak_fraction(tf: float, clock_mhz) -> float | None:
    """TF/s over the dense bf16 peak at ``clock_mhz`` (None without a clock reading)."""
    return None if not clock_mhz else tf / (PEAK_TFLOPS_PER_GHZ * clock_mhz / 1e3)


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    t = gpu_time(lambda: dst.copy_(src), warmup=3, repeats=10)["ms"]
    return 2 * nbytes / (t * 1e-3) / 1e9


def card_temperature_c() -> int | None:
    """The GPU's temperature (NVML, degrees C), None where it cannot be read; the benchmarks
    record it next to each call (at the 700 W limit the card's state moves the clock)."""
    try:
        return int(torch.cuda.temperature())
    except Exception:  # no NVML / pynvml
        return None


def cool_to(limit_c: int, max_wait_s: float = 100.0) -> dict:
    """Wait, idle, until the GPU is at or below ``limit_c`` degrees C (at most ``max_wait_s``):
    benchmarks call it before each workload so that every workload starts near the same
    temperature, whatever ran before it. Returns the temperature before and after and the
    wait."""
    before = card_temperature_c()
    if before is None or limit_c <= 0:
        return {"limit_c": limit_c, "before_c": before, "after_c": before, "wait_s": 0.0}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.monotonic()
    now = before
    while now is not None and now > limit_c and time.monotonic() - t0 < max_wait_s:
        time.sleep(1.0)
        now = card_temperature_c()
    return {"limit_c": limit_c, "before_c": before, "after_c": now,
            "wait_s": round(time.monotonic() - t0, 1)}


def card() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def commit() -> str:
    """SPAVA_COMMIT, else git's HEAD, else "unknown". On the GPU box the tree's copy of .git
    can be stale (seen 2026-11-25): scripts/gpu_check.sh requires SPAVA_COMMIT there."""
    if os.environ.get("SPAVA_COMMIT"):
        return os.environ["SPAVA_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=root).strip()
    except Exception:
        return "unknown"


def int_list(text: str) -> list[int]:
    """An argparse type: "2,4,8" (or "28/4") -> [2, 4, 8]."""
    try:
        return [int(x) for x in text.replace("/", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by ',' or '/', got "
                                         f"{text!r}") from None


def local_rank() -> int:
    """The process's GPU under torchrun (LOCAL_RANK; 0 outside it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def environment(**values) -> Iterator[None]:
    """Environment variables set (a value) or unset (None) inside the block; every variable is
    as before after it."""
    with mock.patch.dict(os.environ):
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield


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
