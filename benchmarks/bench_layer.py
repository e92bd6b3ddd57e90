"""Layer table (routine ``layer``): simulated W = 2, 4, 8 at 32K-256K context tokens (one H100
plays every rank).

For each point: Spava's critical path (max over ranks of the whole per-rank layer), ZigZag ring,
APB-style and Star-style per-rank attention on the same kernel, dense causal SDPA on the full
sequence, and the predicted hidden share of the passing-block traffic at 450 and 50 GB/s.

    python benchmarks/bench.py --routine layer [--worlds 2,4,8] [--contexts 32768,65536,...]
"""

from __future__ import annotations

import argparse

from bench_utils import int_list, write_result
from spava_ext.simulate import SimConfig, simulate


def q_kv_heads(text: str) -> tuple[int, int]:
    """An argparse type: "28/4" -> (28, 4)."""
    heads = int_list(text)
    if len(heads) != 2:
        raise argparse.ArgumentTypeError(f"expected query/kv heads such as 28/4, got {text!r}")
    return heads[0], heads[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worlds", type=int_list, default="2,4,8")
    parser.add_argument("--contexts", type=int_list, default="32768,65536,131072,262144",
                        help="context tokens")
    parser.add_argument("--heads", type=q_kv_heads, default="28/4",
                        help="query / key-value heads")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    hq, hkv = args.heads
    points, lines = [], []
    dense_cache: dict = {}
    for n in args.contexts:
        for w in args.worlds:
            cfg = SimConfig(context=n, world=w, heads_q=hq, heads_kv=hkv, head_dim=args.head_dim,
                            repeats=args.repeats, dense=n not in dense_cache)
            res = simulate(cfg)
            dense = dense_cache.setdefault(n, res.get("dense_ms"))
            crit, zz, apb, star = (res["critical_path_ms"], res["zigzag_ring_critical_ms"],
                                   res["apb_critical_ms"], res["star_critical_ms"])
            hidden = {bw: min(r["links"][bw]["hidden_fraction"] for r in res["ranks"])
                      for bw in res["ranks"][0]["links"]}
            point = {"context": n, "world": w, "layout": res["layout"], "critical_path_ms": crit,
                     "zigzag_ring_ms": zz, "apb_ms": apb, "star_ms": star, "dense_ms": dense,
                     "min_hidden_fraction": hidden,
                     "rank_layer_ms": [r["layer_ms"] for r in res["ranks"]]}
            points.append(point)
            lines.append(f"n={n:>6} W={w}  spava {crit:8.3f} ms  ring {zz:8.3f} ({zz / crit:4.2f}x)"
                         f"  APB {apb:8.3f} ({apb / crit:4.2f}x)  Star {star:8.3f} "
                         f"({star / crit:4.2f}x)  dense cuDNN {dense['cudnn']:8.1f}"
                         f" ({dense['cudnn'] / crit:5.1f}x)  hidden "
                         + " ".join(f"{100 * f:.0f}%@{bw}" for bw, f in hidden.items()))
            print(lines[-1], flush=True)
    path = write_result("layer", {"heads_q": hq, "heads_kv": hkv, "head_dim": args.head_dim,
                                  "points": points})
    print(f"wrote {path}")
    return 0
