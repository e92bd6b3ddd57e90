"""Timeline of select_passing's three kernels from their trace (CUDA; a build with the trace).

The trace (csrc/kernels/common/trace.cuh) is compiled in only when the extension
is built with SPAVA_ATTN_TRACE=1: thread 0 of every CTA stamps its phases with %globaltimer and
clock64. The script captures a CUDA graph of 4 calls of bench_kernels' select_passing (its
layout and inputs: rank W - 1 of W = 8 at 128K tokens, 2 chunks of 8064 keys, p = 1024, pool 5),
times it (held graph replays), replays it once more and reads the last call's stamps: when each
kernel's CTAs start, wait and end (us from the first qsum CTA's start), and the median cycles of
the select's phases in kernel 3.

    SPAVA_ATTN_TRACE=1 bash scripts/gpu_check.sh build      # on the GPU box
    python3 benchmarks/select_trace.py [heads ...]          # bench_kernels.HEADS names; default:
                                                            # qwen2.5-vl-7b and its D = 64 twin
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROWS, EVENTS, CLOCK, SM = 1088, 32, 16, 15  # common/trace.cuh: rows, events, clock64 offset, SM
KERNELS = {  # name: (first row, last row + 1, event names)
    "qsum": (0, 64, ["start", "end"]),
    "score": (64, 576, ["start", "pdl_wait", "qsum", "raw", "end"]),
    "gather": (576, 1088, ["start", "pdl_wait", "cache", "threshold", "kept", "end"]),
}
# kernel 3's phases: (name, from event, to event), cycles by clock64
GATHER_PHASES = [("wait->cache", 1, 2), ("threshold", 2, 3), ("kept", 3, 4), ("gather", 4, 5),
                 ("pick digit 1", 2, 8), ("count digit 2", 8, 10), ("pick digit 2", 10, 11),
                 ("rank / digit 3", 11, 3), ("kept: load", 3, 12), ("kept: count", 12, 13),
                 ("kept: scan", 13, 14), ("kept: write", 14, 6), ("kept: barrier", 6, 4)]


def analyse(trace: torch.Tensor) -> dict:
    """Timeline of one call from a [ROWS, EVENTS] int64 trace: per kernel and event the
    (min, median, max) time in us from the first qsum CTA's start over the CTAs that stamped
    it; kernel 3's phases in median clock64 cycles; the call's span (first start to last end)."""
    t = trace.to(torch.int64)
    starts = [int(t[r, 0]) for r in range(*KERNELS["qsum"][:2]) if t[r, 0] > 0]
    t0 = min(starts)
    out = {"kernels": {}}
    for name, (lo, hi, events) in KERNELS.items():
        rows = [r for r in range(lo, hi) if t[r, 0] > 0]
        info = {"ctas": len(rows), "sms": len({int(t[r, SM]) for r in rows})}
        for e, ev in enumerate(events):
            v = [(int(t[r, e]) - t0) / 1e3 for r in rows if t[r, e] > 0]
            if v:
                info[ev] = (min(v), statistics.median(v), max(v))
        out["kernels"][name] = info
    rows = [r for r in range(*KERNELS["gather"][:2]) if t[r, 0] > 0 and t[r, 2] > 0]
    phases = {}
    for name, a, b in GATHER_PHASES:
        v = [int(t[r, CLOCK + b] - t[r, CLOCK + a]) for r in rows
             if t[r, CLOCK + a] > 0 and t[r, CLOCK + b] > 0]
        if v:
            phases[name] = statistics.median(v)
    out["gather_cycles"] = phases
    ends = [info["end"][2] for info in out["kernels"].values() if "end" in info]
    out["span_us"] = max(ends) if ends else None
    return out


def report(result: dict) -> str:
    lines = []
    for name, info in result["kernels"].items():
        evs = "; ".join(f"{k} {v[0]:.2f}/{v[1]:.2f}/{v[2]:.2f}" for k, v in info.items()
                        if isinstance(v, tuple))
        lines.append(f"  {name:6s} ({info['ctas']} CTAs on {info['sms']} SMs): {evs}")
    lines.append("  kernel 3, median cycles: " + ", ".join(
        f"{k} {v:.0f}" for k, v in result["gather_cycles"].items()))
    return "\n".join(lines)


def run(heads: str, path: str) -> None:
    from bench_kernels import HEADS, rank_tensors  # GPU-only imports

    from spava_ext import SpavaLayout, ops, timing
    from spava_ext.trace import trace_to

    Hq, Hkv, D = HEADS[heads]
    layout = SpavaLayout.auto(131072 + 64, 64, 8)  # bench_kernels' defaults
    rank = layout.world_size - 1
    seg = layout.local_segments(rank)
    sets = [rank_tensors(layout, rank, Hq, Hkv, D, torch.bfloat16, seed=100 * i)[:3]
            for i in range(4)]
    sets = [(q[:, seg.question_start:], k, v) for q, k, v in sets]
    cap = layout.passing_cap
    idx = torch.empty(2, 1, Hkv, cap, dtype=torch.long, device="cuda")
    kv = torch.empty(2, cap, 2, 1, Hkv, D, dtype=torch.bfloat16, device="cuda")

    def call(s):
        ops.select_passing(*s, [seg.chunk1_start, seg.chunk2_start], [seg.chunk1, seg.chunk2],
                           layout.passing_len, layout.pool_kernel, indices=idx, kv=kv)

    graph = timing.capture_graph([lambda s=s: call(s) for s in sets])
    t = timing.graph_time(graph, calls_per_replay=4)
    print(f"{heads} (D = {D}): held graph replay {t['ms'] * 1e3:.1f} us per call "
          f"(min {t['min_ms'] * 1e3:.1f})")
    for rep in range(2):
        torch.cuda.synchronize()
        graph.replay()
        with trace_to(path):
            call(sets[0])  # writes the stamps of the graph's last call, then runs
        torch.cuda.synchronize()
        raw = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.int64)
        result = analyse(raw.view(ROWS, EVENTS))
        print(f" replay {rep}: call span {result['span_us']:.2f} us; times in us (min/median/max)")
        print(report(result))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for heads in sys.argv[1:] or ["qwen2.5-vl-7b", "qwen2.5-vl-7b-d64"]:
            run(heads, os.path.join(tmp, "select_trace.bin"))
