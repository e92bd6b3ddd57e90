"""What the memory system gives transfers of select_passing's size (CUDA only).

Device time (a CUDA graph of 4 calls on 4 buffer sets, median of 30 replays) of plain device
copies moving 16.5 and 25.4 MB and of a torch sum over 16.5 MB of bf16, next to the large-copy
rate that the select bar is stated against (select_passing NOTES.md, last section).

    python3 benchmarks/small_copy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from spava_ext.timing import capture_graph, graph_time  # noqa: E402

MB = 1 << 20


def graph_us(fns: list, hold: bool = True) -> float:
    """Microseconds per call of ``fns`` (one call each) captured in one CUDA graph (timed like
    bench_kernels' select_passing: ``spava_ext.timing.graph_time``, held by default)."""
    return graph_time(capture_graph(fns), len(fns), hold=hold)["ms"] * 1e3


def copies(nbytes: int, sets: int = 4) -> list:
    pairs = [(torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(),
              torch.empty(nbytes, dtype=torch.uint8, device="cuda")) for _ in range(sets)]
    return [lambda s=s, d=d: d.copy_(s) for s, d in pairs]


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    t = graph_us(copies(1 << 29, sets=2))
    print(f"copy of 2 x 512 MB (read + write): {t:.0f} us, {2 * (1 << 29) / t / 1e3:.0f} GB/s")
    for total_mb in (16.5, 25.4):
        fns = copies(int(total_mb * MB / 2))
        t, unheld = graph_us(fns), graph_us(fns, hold=False)
        print(f"copy moving {total_mb} MB (half read, half written): {t:.1f} us, "
              f"{total_mb * MB / t / 1e3:.0f} GB/s (without the hold: {unheld:.1f} us)")
    xs = [torch.randn(16128 * 4 * 128, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
    t = graph_us([lambda x=x: x.sum() for x in xs])
    print(f"torch sum over 16.5 MB of bf16 (read only): {t:.1f} us, "
          f"{xs[0].numel() * 2 / t / 1e3:.0f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
