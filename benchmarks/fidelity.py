"""Fidelity probes (routine ``fidelity``; real-weight accuracy cannot be measured on these
machines).

1. Needle recall: keys aligned with the question ("needles", strength beta in units of the key
   scale) are planted in random context positions of a synthetic video-like layer; recall is the
   share of needles that the query-aware selection keeps in the passing blocks, at the paper's
   keep ratio and around it, against the share a random selection would keep.
2. Row-class error of Spava against dense causal attention on the same layer (anchor, C0 and
   question rows exact; later chunk rows approximate) and its sensitivity to passing_len and
   anchor_len. All W ranks are emulated in one process with the data they would exchange.

    python benchmarks/bench.py --routine fidelity [--device cpu|cuda]   (minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import plot
from bench_utils import write_result
from spava_ext import SpavaLayout, ops
from spava_ext.attention import spava_attention_rank
from spava_ext.comm import emulate_ranks
from spava_ext.synthetic import video_like_layer


def plant_needles(layer, layout: SpavaLayout, n: int, beta: float, seed: int):
    """Add beta * sqrt(D) along each kv head's question direction to n random context keys;
    returns the positions."""
    g = torch.Generator().manual_seed(seed)
    B, L, Hkv, D = layer.k.shape
    G = layer.q.shape[2] // Hkv
    qsum = layer.q[:, layout.question_start:].float().view(B, -1, Hkv, G, D).sum(dim=(1, 3))
    unit = qsum / qsum.norm(dim=-1, keepdim=True)  # [B, Hkv, D]
    pos = layout.anchor_len + torch.randperm(layout.context_len, generator=g)[:n]
    k = layer.k.clone()
    k[:, pos] += (beta * D ** 0.5 * unit).unsqueeze(1).to(k.dtype)
    return k, pos


def needle_recall(q, k, layout: SpavaLayout, needles: torch.Tensor) -> float:
    p = layout.passing_len or layout.passing_cap
    idx, _ = ops.select_passing(q[:, layout.question_start:], k, k, layout.chunk_starts,
                                layout.chunk_sizes, p, layout.pool_kernel)  # [C, B, Hkv, cap]
    Hkv = k.shape[2]
    total = 0
    for h in range(Hkv):  # batch 0; every kv head has its own selection
        sel = set(idx[:, 0, h][idx[:, 0, h] >= 0].tolist())
        total += sum(int(x) in sel for x in needles.tolist())
    return total / (len(needles) * Hkv)


def row_class_errors(q, k, v, layout: SpavaLayout, dense: torch.Tensor) -> dict:
    outs = emulate_ranks(lambda r, comm: spava_attention_rank(
        *[layout.shard(t, r) for t in (q, k, v)], layout, comm), layout.world_size)
    return class_errors(layout.unshard(outs).float(), layout, dense)


def class_errors(out, layout: SpavaLayout, dense: torch.Tensor) -> dict:
    """Relative error of ``out`` against ``dense`` per row class (anchor, C0, later chunks,
    question)."""
    a, qs, c0 = layout.anchor_len, layout.question_start, layout.chunk_bounds(0)[1]

    def rel(s, e):
        if e <= s:
            return None
        return ((out[:, s:e] - dense[:, s:e]).norm() / dense[:, s:e].norm()).item()

    return {"anchor": rel(0, a), "C0": rel(a, c0), "later_chunks": rel(c0, qs),
            "question": rel(qs, layout.seq_len)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--tokens-per-frame", type=int, default=64)
    parser.add_argument("--world", type=int, default=4)
    parser.add_argument("--needles", type=int, default=24)


def run(args: argparse.Namespace) -> int:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    layer = video_like_layer(args.frames, args.tokens_per_frame, 64, 32, 8, 2,
                             128 if args.device == "cuda" else 64, seed=1)
    L = layer.q.shape[1]
    base = SpavaLayout.auto(L, 32, args.world)
    result = {"L": L, "world": args.world, "paper_layout": repr(base),
              "recall": recall_sweep(layer, base, args.needles, args.device, dtype),
              **error_sweeps(layer, base, args.needles, args.device, dtype)}
    path = write_result("fidelity", result)
    print(f"wrote {path}")
    try:
        print(f"wrote {plot.plot_file(path)}")
    except ModuleNotFoundError as e:  # matplotlib is a benchmark requirement, not the package's
        print(f"no plot ({e}); `python benchmarks/plot.py {path}` draws it later")
    return 0


def recall_sweep(layer, base: SpavaLayout, needles: int, device: str, dtype) -> list:
    """Needle recall against needle strength and keep ratio (half, once and twice the paper's
    passing_len)."""
    rows = []
    L, chunk = layer.q.shape[1], max(base.chunk_sizes)
    for beta in (0.0, 0.25, 0.5, 1.0):
        for p in (base.passing_len // 2, base.passing_len, 2 * base.passing_len):
            lay = SpavaLayout(L, base.anchor_len, 32, base.world_size, min(p, chunk))
            k, pos = plant_needles(layer, lay, needles, beta, seed=int(beta * 100) + p)
            rec = needle_recall(layer.q.to(device, dtype), k.to(device, dtype), lay, pos)
            keep = sum(lay.passing_sizes) / lay.context_len
            rows.append({"beta": beta, "passing_len": lay.passing_len, "keep_ratio": keep,
                         "recall": rec})
            print(f"needles beta={beta:<4} p={lay.passing_len:<5} keep {keep:6.1%}  "
                  f"recall {rec:6.1%}", flush=True)
    return rows


def error_sweeps(layer, base: SpavaLayout, needles: int, device: str, dtype) -> dict:
    """Row-class error against dense causal attention (needles of strength 0.5 planted),
    sweeping passing_len (``passing_sweep``) and anchor_len (``anchor_sweep``)."""
    L, chunk = layer.q.shape[1], max(base.chunk_sizes)
    k, _ = plant_needles(layer, base, needles, 0.5, seed=7)
    qd, kd, vd = (t.to(device, dtype) for t in (layer.q, k, layer.v))
    G = qd.shape[2] // kd.shape[2]
    dense = F.scaled_dot_product_attention(
        qd.transpose(1, 2).float(), kd.repeat_interleave(G, 2).transpose(1, 2).float(),
        vd.repeat_interleave(G, 2).transpose(1, 2).float(), is_causal=True).transpose(1, 2)
    out = {"passing_sweep": [], "anchor_sweep": []}
    for p in (16, 32, 64, 128, 256, chunk):
        lay = SpavaLayout(L, base.anchor_len, 32, base.world_size, p)
        err = row_class_errors(qd, kd, vd, lay, dense)
        out["passing_sweep"].append({"passing_len": p, **err})
        print(f"p={p:<5} a={lay.anchor_len:<5} errors {err}", flush=True)
    for a in (0, 32, 64, 128, 256, 512):
        lay = SpavaLayout(L, a, 32, base.world_size, base.passing_len)
        err = row_class_errors(qd, kd, vd, lay, dense)
        out["anchor_sweep"].append({"anchor_len": a, **err})
        print(f"p={lay.passing_len:<5} a={a:<5} errors {err}", flush=True)
    return out
