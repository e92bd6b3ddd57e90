"""attn_fwd's CTA pairs (csrc/kernels/attn_fwd/pair.cuh): clusters of 2 CTAs that take two query
heads of one query tile and share K / V tiles by TMA multicast when both heads read one kv head.

A unit's arithmetic does not depend on the CTA that runs it nor on how its tiles reached shared
memory, so a launch with pairs (the plan's choice wherever heads_q is even and D = 64 or 128)
must give the same bits as the same launch on a budget of one CTA (sm_budget = 1, which runs
unpaired), and both must match the reference. CUDA only (skipped without a GPU)."""

import pytest
import torch

from spava_ext import ops, reference
from utils import assert_attn_close

FULL = ops.FULL
pytestmark = pytest.mark.cuda
HEAD_DIMS = ops.build_info().get("attn_fwd_head_dims", [])


def _inputs(B, Hq, Hkv, D, q_len, full_len, dtype, seed):
    """Rows over a full segment (if any) and a causal segment over themselves."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to("cuda", dtype)

    q = rnd(B, q_len, Hq, D)
    k, v, rb, dg = [], [], [], []
    if full_len:
        k.append(rnd(B, full_len, Hkv, D))
        v.append(rnd(B, full_len, Hkv, D))
        rb.append(0)
        dg.append(FULL)
    k.append(rnd(B, q_len, Hkv, D))
    v.append(rnd(B, q_len, Hkv, D))
    rb.append(37 if full_len else 0)  # the first rows see only the full segment
    dg.append(0)
    return q, k, v, rb, dg


def _launch(sm_budget, q, k, v, rb, dg):
    """attn_fwd of (q, k, v, rb, dg) as one attn_fwd_group problem on ``sm_budget`` CTAs,
    under the plain plan (static rounds, no tail split: the problem waits for a ready flag,
    already set), so that a one-CTA launch runs the same units as the full grid."""
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[0], q.shape[2], q.shape[1], device="cuda")
    ops.attn_fwd_group([ops.AttnProblem(q, k, v, rb, dg, out, lse, 0)],
                       ready=torch.ones(1, dtype=torch.int32, device="cuda"), sm_budget=sm_budget)
    torch.cuda.synchronize()
    return out, lse


@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,Hq,Hkv,q_len,full_len", [
    (1, 16, 2, 700, 1000),   # groups of 8: every pair shares its K / V (multicast)
    (1, 14, 2, 1300, 2999),  # groups of 7: pairs (6, 7) straddle two kv heads (own loads)
    (2, 12, 4, 333, 77),     # batch 2 (heads numbered fastest), groups of 3
    (1, 8, 8, 515, 0),       # no GQA: every pair straddles
    (1, 4, 1, 200, 5000),    # 8 units: the small-grid rule splits every query tile (split-KV)
    (1, 16, 2, 4497, 0),     # causal only, 576 units
])  # pairs at D = 64 and 128 (the 128-byte swizzle); D = 80 runs unpaired (a control)
def test_pairs_give_the_same_bits_as_single_ctas(D, dtype, B, Hq, Hkv, q_len, full_len):
    if D != 128 and q_len > 4000:
        pytest.skip("the longest case once, at D = 128")
    args = _inputs(B, Hq, Hkv, D, q_len, full_len, dtype, seed=q_len + D)
    out_p, lse_p = _launch(0, *args)
    out_s, lse_s = _launch(1, *args)
    name = f"pairs B{B} Hq{Hq} Hkv{Hkv} D{D} {q_len}+{full_len}"
    assert torch.equal(out_p, out_s), f"{name}: out differs from the one-CTA launch"
    assert torch.equal(lse_p, lse_s), f"{name}: lse differs from the one-CTA launch"
    ref, ref_lse = reference.attn_fwd(*args)
    low, _ = reference.attn_fwd(*args, upcast=False)
    assert_attn_close(name, out_p, ref, low)
    assert (lse_p.cpu() - ref_lse.cpu()).abs().max() < 1e-3, f"{name}: lse"
    out_a, _ = ops.attn_fwd(*args)  # the plan's own choice (tail split, counter) too
    assert_attn_close(name + " auto plan", out_a, ref, low)


@pytest.mark.parametrize("sm_budget", [2, 3, 7])
def test_pairs_on_a_capped_grid(sm_budget):
    """sm_budget caps the grid at an even count of CTAs (3 -> one pair, 7 -> three)."""
    args = _inputs(1, 16, 2, 128, 640, 900, torch.bfloat16, seed=sm_budget)
    out_p, lse_p = _launch(sm_budget, *args)
    out_s, lse_s = _launch(1, *args)
    assert torch.equal(out_p, out_s) and torch.equal(lse_p, lse_s)


def test_odd_heads_run_unpaired():
    args = _inputs(1, 7, 1, 128, 200, 0, torch.bfloat16, seed=1)
    out, _ = ops.attn_fwd(*args)
    ref, _ = reference.attn_fwd(*args)
    low, _ = reference.attn_fwd(*args, upcast=False)
    assert_attn_close("odd heads", out, ref, low)


def test_pairs_give_late_flagged_pairs_back_and_finish():
    """Ready flags under the counter, paired: the leader waits for a flag and sends its verdict
    to the partner; a late flag makes the pair give its two units back and stop, and the
    finishing launch computes them (test_attn_group's protocol; its problems pair: Hq = 8,
    D = 64)."""
    from test_attn_group import check_against_reference, launch_with_late_flags

    problems, ready, sched = launch_with_late_flags(torch.bfloat16)
    assert sched[1].item() > 0, "some pair must have been given back"
    ready.fill_(1)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)
    check_against_reference(problems, "pairs: given back, then finished")
    # the same problems with their flags set from the start, static picker: complete at once
    problems, _, _ = launch_with_late_flags(torch.bfloat16)
    ops.attn_fwd_group(problems, ready=torch.ones(2, dtype=torch.int32, device="cuda"))
    check_against_reference(problems, "pairs: flags set, static")
