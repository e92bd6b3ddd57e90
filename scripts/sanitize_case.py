"""Small cases for compute-sanitizer (memcheck / racecheck) on every CUDA kernel.

    compute-sanitizer --tool memcheck python3 scripts/sanitize_case.py all
    compute-sanitizer --tool racecheck python3 scripts/sanitize_case.py attn
    compute-sanitizer --tool memcheck --error-exitcode 1 python3 scripts/sanitize_case.py fuzz

``fuzz`` (not part of ``all``) replays a seeded corpus of tests/fuzz_cases.py on CUDA: bad
arguments (int64 extremes, negatives, empty and mismatched sizes, strided views) of every op,
each an error naming the op or the reference's result.
"""

import sys
from pathlib import Path

import torch

import spava_ext
from spava_ext import SpavaLayout, ops


def attn() -> None:
    for D in ops.build_info()["attn_fwd_head_dims"]:
        q = torch.randn(1, 150, 4, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 200, 2, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        ops.attn_fwd(q, [k[:, :37], k[:, 37:]], [v[:, :37], v[:, 37:]], [20, 0], [ops.FULL, -5])
        # more units (256) than CTAs: a CTA reuses its output tile across units
        q = torch.randn(1, 2000, 16, D, device="cuda", dtype=torch.bfloat16)
        ops.attn_fwd(q, [k], [v], [0], [ops.FULL])
        # CTA pairs (D % 64 == 0): groups of 7 heads, so some pairs share K / V (multicast)
        # and some straddle two kv heads
        q = torch.randn(1, 300, 14, D, device="cuda", dtype=torch.bfloat16)
        ops.attn_fwd(q, [k[:, :150]], [v[:, :150]], [0], [0])
    torch.cuda.synchronize()


def select() -> None:
    q = torch.randn(1, 7, 8, 64, device="cuda", dtype=torch.half)
    k = torch.randn(1, 500, 2, 64, device="cuda", dtype=torch.half)
    ops.select_passing(q, k, k, [3, 250], [240, 249], 30, 5)  # one score tile per item
    ops.select_passing(q, k, k, [3, 250, 499], [240, 249, 0], 245, 5, capacity=300)  # m = len
    ops.select_passing(q, k.round(), k, [0], [500], 100, 1)  # integer scores: ties
    q = torch.randn(2, 40, 14, 256, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 900, 2, 256, device="cuda", dtype=torch.bfloat16)
    ops.select_passing(q, k, k, [0, 450], [450, 449], 64, 127)  # two load rounds, 4 tiles
    k = torch.randn(1, 9000, 2, 128, device="cuda", dtype=torch.bfloat16).round()
    ops.select_passing(q[:1, :, :4, :128], k, k, [0], [9000], 1000, 5)  # ties, keys at L2
    k = torch.randn(1, 52000, 1, 64, device="cuda", dtype=torch.bfloat16)
    ops.select_passing(q[:1, :, :7, :64], k, k, [0], [52000], 1000, 5)  # keys in global memory
    torch.cuda.synchronize()


def merge() -> None:
    outs = torch.randn(3, 1, 5, 4, 64, device="cuda")
    ops.merge_states(outs, torch.randn(3, 1, 4, 5, device="cuda"))
    torch.cuda.synchronize()


def layer() -> None:
    D = ops.build_info()["attn_fwd_head_dims"][-1]
    layout = SpavaLayout(700, 64, 9, 1, 50)
    q = torch.randn(1, 700, 4, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 700, 2, D, device="cuda", dtype=torch.bfloat16)
    spava_ext.spava_attention(q, k, k, layout)
    torch.cuda.synchronize()


def fuzz(cases_per_op: int = 200) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fuzz_cases import CASES, RandomPick

    for op, case in CASES.items():
        for seed in range(cases_per_op):
            torch.manual_seed(seed)
            try:
                case(RandomPick(seed), "cuda")
            except AssertionError as e:
                raise AssertionError(f"fuzz case {op} seed {seed}: {e}") from e
        torch.cuda.synchronize()
        print(f"fuzz {op}: {cases_per_op} cases ok")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for name, fn in (("attn", attn), ("select", select), ("merge", merge), ("layer", layer)):
        if which in (name, "all"):
            fn()
            print(f"{name}: ok")
    if which == "fuzz":
        fuzz()
