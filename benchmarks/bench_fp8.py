"""FP8 accuracy (routine ``fp8``), the FP8 attention kernel's arithmetic (spava_ext.fp8.attn_fwd,
docs/kernels/attn_fp8.md) emulated with torch's float8_e4m3fn:

1. Dense causal attention: the RMSE against fp64 of FP8, plain and with the Hadamard rotation of
   Q and K, and of the bf16 path, on random inputs and on FlashAttention-3's outlier test (0.1 %
   of the entries drawn from N(0, 10^2)).
2. Spava: the fidelity probes' video-like layer (benchmarks/fidelity.py, needles of strength
   0.5) at the paper's keep ratio: each row class's relative error against dense fp32
   attention, for Spava with bf16 inputs and with FP8 attention (spava_ext.fp8.spava_attention,
   plain and rotated); and the needle recall, which the FP8 schedule shares with bf16 (the
   passing blocks are selected before quantisation).

    python benchmarks/bench.py --routine fp8 [--device cpu] [--length 2048]
"""

from __future__ import annotations

import argparse

import torch

import torch.nn.functional as F

from bench_utils import write_result
from fidelity import class_errors, needle_recall, plant_needles, row_class_errors
from spava_ext import SpavaLayout, fp8
from spava_ext.fp8 import _attention
from spava_ext.synthetic import video_like_layer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=2048, help="query and key rows")
    parser.add_argument("--heads", default="28/4", help="query / kv heads")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cpu")
    parser.add_argument("--frames", type=int, default=64,
                        help="frames of the Spava section's video-like layer (64 tokens each)")


def inputs(seed: int, length: int, hq: int, hkv: int, d: int, outliers: bool, device):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for heads in (hq, hkv, hkv):
        x = torch.randn(1, length, heads, d, generator=g)
        if outliers:
            pick = torch.rand(x.shape, generator=g) < 1e-3
            x = torch.where(pick, torch.randn(x.shape, generator=g) * 10, x)
        xs.append(x.to(device))
    return xs


def run(args: argparse.Namespace) -> int:
    hq, hkv = (int(h) for h in args.heads.split("/"))
    rows = []
    for outliers in (False, True):
        errs = {"bf16": [], "fp8": [], "fp8_rotated": []}
        for seed in range(args.seeds):
            q, k, v = inputs(seed, args.length, hq, hkv, args.head_dim, outliers, args.device)
            exact = _attention(q.double(), k.double(), v.double(), True,
                               args.head_dim ** -0.5, torch.float64)
            errs["bf16"].append(fp8.rmse(fp8.bf16_attention(q, k, v), exact))
            errs["fp8"].append(fp8.rmse(fp8.fp8_attention(q, k, v), exact))
            errs["fp8_rotated"].append(fp8.rmse(fp8.fp8_attention(q, k, v, rotate=True), exact))
        row = {"inputs": "outliers" if outliers else "random",
               **{name: max(e) for name, e in errs.items()}, "per_seed": errs}
        rows.append(row)
        print(f"{row['inputs']:>8}: RMSE (max over {args.seeds} seeds) bf16 {row['bf16']:.2e}, "
              f"fp8 {row['fp8']:.2e}, fp8 rotated {row['fp8_rotated']:.2e}")
    path = write_result("fp8_accuracy", {"length": args.length, "heads_q": hq, "heads_kv": hkv,
                                         "head_dim": args.head_dim, "causal": True,
                                         "emulated": True, "rows": rows,
                                         "spava": spava_errors(args.device, args.frames)})
    print(f"wrote {path}")
    return 0


def spava_errors(device: str, frames: int) -> dict:
    """Row-class errors of Spava (paper layout, W = 4) with bf16 inputs and with FP8 attention
    on the fidelity layer, and the needle recall of its selection."""
    layer = video_like_layer(frames, 64, 64, 32, 8, 2, 128, seed=1)
    L = layer.q.shape[1]
    layout = SpavaLayout.auto(L, 32, 4)
    k, pos = plant_needles(layer, layout, 24, 0.5, seed=7)
    q, v = layer.q.to(device), layer.v.to(device)
    k = k.to(device)
    G = q.shape[2] // k.shape[2]
    dense = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.repeat_interleave(G, 2).transpose(1, 2),
        v.repeat_interleave(G, 2).transpose(1, 2), is_causal=True).transpose(1, 2)
    bf = [t.to(torch.bfloat16) for t in (q, k, v)]
    res = {"L": L, "layout": repr(layout), "recall": needle_recall(bf[0], bf[1], layout, pos),
           "bf16": row_class_errors(*bf, layout, dense),
           "fp8": class_errors(fp8.spava_attention(q, k, v, layout), layout, dense),
           "fp8_rotated": class_errors(fp8.spava_attention(q, k, v, layout, rotate=True),
                                       layout, dense)}
    res["dense_sources"] = error_sources(q, k, v)
    for name in ("bf16", "fp8", "fp8_rotated"):
        errs = ", ".join(f"{c} {e:.2e}" for c, e in res[name].items() if e is not None)
        print(f"spava {name:>11}: relative error {errs}")
    print(f"needle recall (bf16 and fp8 select alike): {res['recall']:.1%}")
    print("dense attention of the layer, relative error by what is rounded to e4m3: "
          + ", ".join(f"{n} {e:.2e}" for n, e in res["dense_sources"].items()))
    return res


def error_sources(q, k, v) -> dict:
    """Relative error of dense causal attention of the layer against fp64 when only Q and K,
    only V, or only the probabilities are rounded to e4m3 (blocks of 128 rows), and all of
    them (the kernel's arithmetic)."""
    scale = q.shape[-1] ** -0.5
    exact = _attention(q.double(), k.double(), v.double(), True, scale, torch.float64)

    def rel(out):
        return float((out.double() - exact).norm() / exact.norm())

    qd, kd, vd = (fp8.dequantize_blocks(*fp8.quantize_blocks(x), 128) for x in (q, k, v))
    f32, e4m3 = torch.float32, torch.float8_e4m3fn
    return {"qk": rel(_attention(qd, kd, v.float(), True, scale, f32)),
            "v": rel(_attention(q.float(), k.float(), vd, True, scale, f32)),
            "p": rel(_attention(q.float(), k.float(), v.float(), True, scale, e4m3)),
            "all": rel(fp8.fp8_attention(q, k, v))}
