"""Bandwidth of spava::quantize_fp8 (csrc/kernels/quantize) on the CUDA device: bytes moved (x
read, e4m3 values and fp32 scales written) per second, against the device's copy bandwidth,
for Q, K and V of one rank at the key shape (128K / 8 ranks, Qwen2.5-VL-7B heads) and larger.

    python benchmarks/bench_quantize.py
"""

from __future__ import annotations

import torch

from bench_utils import copy_bandwidth_gbs, gpu_time
from spava_ext import ops

# (name, [B, L, H, D], rotate, transpose)
CASES = [
    ("q 16K x 28 heads", (1, 16384, 28, 128), False, False),
    ("q rotated", (1, 16384, 28, 128), True, False),
    ("k 18K x 4 heads", (1, 18240, 4, 128), False, False),
    ("v transposed", (1, 18240, 4, 128), False, True),
    ("q 128K x 28 heads", (1, 131072, 28, 128), False, False),
    ("q 128K rotated", (1, 131072, 28, 128), True, False),
    ("v 128K x 28 transposed", (1, 131072, 28, 128), False, True),
    ("D 64, 128K x 32", (1, 131072, 32, 64), False, False),
]


def bench_quantize(block: int = 128, dtype=torch.bfloat16, repeats: int = 20) -> list[dict]:
    """One entry per case: milliseconds (median), GB/s and its fraction of copy bandwidth."""
    copy_gbs = copy_bandwidth_gbs()
    rows = []
    for name, shape, rotate, transpose in CASES:
        xs = [torch.randn(shape, dtype=dtype, device="cuda") for _ in range(2)]  # not from L2
        outs = [ops.quantize_fp8(x, block, rotate, transpose) for x in xs]
        ms = gpu_time(lambda x, o: ops.quantize_fp8(x, block, rotate, transpose, *o),
                      list(zip(xs, outs)), repeats=repeats)["ms"]
        nbytes = xs[0].nbytes + outs[0][0].nbytes + outs[0][1].nbytes
        gbs = nbytes / (ms * 1e-3) / 1e9
        rows.append({"case": name, "shape": list(shape), "rotate": rotate,
                     "transpose": transpose, "ms": ms, "gbs": gbs, "of_copy": gbs / copy_gbs})
    return rows


if __name__ == "__main__":
    for r in bench_quantize():
        print(f"{r['case']:<26} {r['ms']:8.3f} ms {r['gbs']:8.0f} GB/s "
              f"{100 * r['of_copy']:5.1f} % of copy")
