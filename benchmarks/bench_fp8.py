"""FP8 accuracy (routine ``fp8``): the RMSE against fp64 of the FP8 (e4m3) attention scheme of
spava_ext.fp8, plain and with the Hadamard rotation of Q and K, and of the bf16 path, on random
inputs and on FlashAttention-3's outlier test (0.1 % of the entries drawn from N(0, 10^2)).
The scheme's numerics are emulated with torch's float8_e4m3fn (no FP8 kernel yet).

    python benchmarks/bench.py --routine fp8 [--device cpu] [--length 2048]
"""

from __future__ import annotations

import argparse

import torch

from bench_utils import write_result
from spava_ext import fp8
from spava_ext.fp8 import _attention


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=2048, help="query and key rows")
    parser.add_argument("--heads", default="28/4", help="query / kv heads")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cpu")


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
                                         "emulated": True, "rows": rows})
    print(f"wrote {path}")
    return 0
