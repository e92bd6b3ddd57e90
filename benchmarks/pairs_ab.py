"""attn_fwd with CTA pairs (SPAVA_ATTN_PAIRS unset: pairs where the plan allows them) against
single CTAs (SPAVA_ATTN_PAIRS=0), in one process.

The D = 128 calls of bench_kernels (Qwen2.5-VL-7B and -3B heads, ranks 0 and 7, host1 / host2;
W = 8 at 128K), dense causal 32K, the D = 64 / 80 rank-7 host1 call (7B heads; D = 80 does not
pair, so its two modes are the same launch: a control), and with --layer the whole per-rank
layer (simulated gathers, ready flags). Each call alone under sustained load
(``timing.sustained_time``), the two modes alternating over two rounds (auto, 0, then 0, auto), so
that the card's drift shows as a spread, not as a difference. Writes
benchmarks/results/pairs_ab_<date>_<card>.json (card, date, commit).

    python benchmarks/pairs_ab.py [--layer]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from bench_kernels import attn_calls, rank_tensors, tflops  # noqa: E402
from bench_utils import write_result  # noqa: E402
from spava_ext import SpavaLayout, ops  # noqa: E402
from spava_ext.attention import spava_attention_rank  # noqa: E402
from spava_ext.comm import SimulatedComm  # noqa: E402
from spava_ext.timing import gpu_time, sustained_time  # noqa: E402


def with_pairs(pairs: bool, fn):
    """fn with pairs where possible (SPAVA_ATTN_PAIRS unset) or never (0)."""
    def run():
        if pairs:
            os.environ.pop("SPAVA_ATTN_PAIRS", None)
        else:
            os.environ["SPAVA_ATTN_PAIRS"] = "0"
        try:
            return fn()
        finally:
            os.environ.pop("SPAVA_ATTN_PAIRS", None)
    return run


def calls(layout):
    """(name, fn, allowed pairs, D, Hq) of every call measured."""
    out = []
    for Hq, Hkv, D, heads in [(28, 4, 128, "7B"), (16, 2, 128, "3B"), (28, 4, 64, "7B"),
                              (28, 4, 80, "7B")]:
        for rank in ((0, 7) if D == 128 else (7,)):
            q, k, v, r1, r2 = rank_tensors(layout, rank, Hq, Hkv, D, torch.bfloat16)
            for name, qr, keys in attn_calls(layout, rank, q, k, v, r1, r2)[:2]:
                if D != 128 and name != "host1":
                    continue
                o = torch.empty_like(qr)

                def fn(qr=qr, keys=keys, o=o):
                    ops.attn_fwd(qr, keys.k, keys.v, keys.row_begin, keys.diag, out=o)
                out.append((f"{heads} D{D} r{rank} {name}", fn, keys.pairs(qr.shape[1]), D, Hq))
    L = 32768
    q = torch.randn(1, L, 28, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, L, 4, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    o = torch.empty_like(q)
    out.append(("7B D128 dense causal 32K", lambda: ops.attn_fwd(q, [k], [v], [0], [0], out=o),
                L * (L + 1) // 2, 128, 28))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", action="store_true", help="also the whole per-rank layer")
    args = parser.parse_args()
    layout = SpavaLayout.auto(131072 + 64, 64, 8)
    rows = []

    def measure(name, fn, rate=None):
        for rnd in range(2):
            for pairs in ((True, False) if rnd == 0 else (False, True)):
                f = with_pairs(pairs, fn)
                r = sustained_time(f, gpu_time(f, warmup=2, repeats=3, pipelined=2)["ms"])
                row = {"call": name, "pairs": pairs, "round": rnd, "ms": r["ms"],
                       "power_w": r.get("power_w"), "joules_per_call": r.get("joules_per_call")}
                if rate is not None:
                    row["tflops"] = rate(r["ms"])
                rows.append(row)
                print(f"{name:26s} pairs={'auto' if pairs else 'off '} round {rnd}: "
                      f"{r['ms']:.4f} ms"
                      + (f" {row['tflops']:.1f} TF/s" if rate else "")
                      + f" {r.get('power_w') or 0:.0f} W", flush=True)

    for name, fn, pairs, D, Hq in calls(layout):
        measure(name, fn, lambda ms, pairs=pairs, D=D, Hq=Hq: tflops(pairs, D, Hq, ms))
    if args.layer:
        for Hq, Hkv, heads in [(28, 4, "7B"), (16, 2, "3B")]:
            for rank in (0, 6):
                q, k, v, _, _ = rank_tensors(layout, rank, Hq, Hkv, 128, torch.bfloat16)
                comm = SimulatedComm(rank, 8)
                measure(f"{heads} layer r{rank}",
                        lambda q=q, k=k, v=v, comm=comm: spava_attention_rank(q, k, v, layout,
                                                                              comm))
    print(write_result("pairs_ab", {"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
