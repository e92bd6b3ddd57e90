"""Per-unit overhead of the attn_fwd kernel (CUDA only).

Full (non-causal) attention with the same FLOPs and 8 to 128 key tiles per unit (Lq x Lk =
2^27, Qwen2.5-VL-7B heads, D = 128, bf16), timed interleaved (rotating order, 4 calls queued per
sample). Prints TF/s and the fraction of the dense bf16 peak at the SM clock read under load,
then fits e(L) = e_inf * L / (L + c): c is the unit's fixed cost in key-tile times (attn_fwd
NOTES.md, session 5).

    python3 benchmarks/unit_overhead.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import gpu_time_interleaved, peak_fraction  # noqa: E402

from spava_ext import ops  # noqa: E402

HQ, HKV, D, BLOCK_N = 28, 4, 128, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    fns, flops = {}, {}
    for lk in (1024, 2048, 4096, 8192, 16384):
        lq = (1 << 27) // lk
        q = torch.randn(1, lq, HQ, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, lk, HKV, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, lk, HKV, D, device="cuda", dtype=torch.bfloat16)
        out, lse = torch.empty_like(q), torch.empty(1, HQ, lq, device="cuda")
        tiles = lk // BLOCK_N
        fns[tiles] = (lambda q=q, k=k, v=v, out=out, lse=lse:
                      ops.attn_fwd(q, [k], [v], [0], [ops.FULL], out=out, lse=lse))
        flops[tiles] = 4.0 * lq * lk * D * HQ
    t = gpu_time_interleaved(fns, repeats=args.repeats, pipelined=4)
    peak = {}
    print(torch.cuda.get_device_name())
    for tiles, fn_t in ((n, t[n]) for n in fns):
        tflops = flops[tiles] / (fn_t["ms"] * 1e-3) / 1e12
        clock = fn_t["sm_clock_mhz"]
        peak[tiles] = peak_fraction(tflops, clock)
        shown = f"{100 * peak[tiles]:.1f} % of peak at {clock:.0f} MHz" if clock else "no clock"
        print(f"{tiles:4d} key tiles per unit: {fn_t['ms']:.3f} ms {tflops:6.1f} TF/s ({shown})")
    if peak[8] and peak[128]:
        r = peak[128] / peak[8]  # = 16 (8 + c) / (128 + c)
        print(f"fixed cost per unit c = {128 * (r - 1) / (16 - r):.2f} key-tile times")


if __name__ == "__main__":
    main()
