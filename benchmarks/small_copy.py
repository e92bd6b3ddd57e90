"""What the memory system gives transfers of select_passing's size (CUDA only).

Device time (a CUDA graph of 4 calls on 4 buffer sets, median of 30 replays) of plain device
copies moving 16.5 and 25.4 MB and of a torch sum over 16.5 MB of bf16, next to the large-copy
rate that the select bar is stated against (select_passing NOTES.md, last section).

    python3 benchmarks/small_copy.py
"""

from __future__ import annotations

import statistics
import sys

import torch

MB = 1 << 20


def graph_us(fns: list, replays: int = 30) -> float:
    """Microseconds per call of ``fns`` (one call each) captured in one CUDA graph."""
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(fns))
    return statistics.median(times)


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
        t = graph_us(copies(int(total_mb * MB / 2)))
        print(f"copy moving {total_mb} MB (half read, half written): {t:.1f} us, "
              f"{total_mb * MB / t / 1e3:.0f} GB/s")
    xs = [torch.randn(16128 * 4 * 128, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
    t = graph_us([lambda x=x: x.sum() for x in xs])
    print(f"torch sum over 16.5 MB of bf16 (read only): {t:.1f} us, "
          f"{xs[0].numel() * 2 / t / 1e3:.0f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
