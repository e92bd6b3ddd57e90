"""Every op against reference.py on irregular shapes, on CPU and (when present) CUDA."""

import pytest
import torch

from spava_ext import ops, reference
from utils import DEVICES, assert_attn_close, assert_lse_close, grid_inputs, randn_inputs

FULL = ops.FULL


def needs(op: str, device: str) -> None:
    if device == "cuda" and op not in ops.build_info()["cuda_ops"]:
        pytest.skip(f"spava::{op} has no CUDA kernel in this build")


def dtypes_for(device):
    return [torch.float32, torch.bfloat16, torch.float16] if device == "cpu" else [
        torch.bfloat16, torch.float16]


# ---------------------------------------------------------------------------------- attn_fwd
# (Lq, [(Ls, row_begin, diag)], Hq, Hkv, D): named after the edge they cover
ATTN_CASES = {
    "one_full_segment": (37, [(53, 0, FULL)], 4, 2, 32),
    "causal_aligned": (64, [(64, 0, 0)], 7, 1, 16),
    "anchor_rows_skip_passing": (45, [(13, 9, FULL), (17, 9, FULL), (9, 0, 0), (36, 0, -9)],
                                 14, 2, 64),
    "empty_segments": (11, [(0, 0, FULL), (5, 0, 0), (0, 3, 0)], 2, 2, 8),
    "rows_without_keys": (20, [(6, 12, FULL), (4, 0, -15)], 4, 4, 16),
    "no_segments_at_all": (5, [], 2, 2, 8),
    "one_query_row": (1, [(1013, 0, FULL), (1, 0, 0)], 8, 2, 80),
    "question_partial": (7, [(30, 0, FULL), (41, 0, FULL), (7, 0, 0)], 28, 4, 128),
}


def make_attn_case(case, dtype, device, seed=0):
    Lq, segs, Hq, Hkv, D = ATTN_CASES[case]
    g = torch.Generator().manual_seed(seed)
    # q is a strided view (a row slice of a bigger tensor, batch 2)
    q = torch.randn(2, Lq + 3, Hq, D, generator=g)[:, 2: 2 + Lq].to(device, dtype)
    ks = [torch.randn(2, n, Hkv, D, generator=g).to(device, dtype) for n, _, _ in segs]
    vs = [torch.randn(2, n, Hkv, D, generator=g).to(device, dtype) for n, _, _ in segs]
    return q, ks, vs, [s[1] for s in segs], [s[2] for s in segs]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(ATTN_CASES))
def test_attn_fwd_matches_reference(case, device):
    needs("attn_fwd", device)
    if device == "cuda" and ATTN_CASES[case][-1] not in ops.build_info()["attn_fwd_head_dims"]:
        pytest.skip("head dim not compiled for CUDA")
    for dtype in dtypes_for(device):
        q, ks, vs, rb, dg = make_attn_case(case, dtype, device)
        out, lse = ops.attn_fwd(q, ks, vs, rb, dg)
        ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg)
        low, low_lse = reference.attn_fwd(q, ks, vs, rb, dg, upcast=False)
        lowprec = dtype != torch.float32
        assert_attn_close(f"{case}/{dtype}", out, ref, low if lowprec else None)
        assert out.dtype == dtype and lse.dtype == torch.float32
        assert lse.shape == (q.shape[0], q.shape[2], q.shape[1])  # [B, Hq, Lq]
        assert_lse_close(f"{case}/{dtype}", lse, ref_lse, low_lse if lowprec else None)


@pytest.mark.parametrize("device", DEVICES)
def test_attn_fwd_writes_into_strided_views_and_fp32_out(device):
    needs("attn_fwd", device)
    dtype = dtypes_for(device)[-1]
    q, ks, vs, rb, dg = make_attn_case("anchor_rows_skip_passing", dtype, device, seed=4)
    big = torch.full((2, q.shape[1] + 10, q.shape[2], q.shape[3]), 7.0, device=device)
    lse_big = torch.full((2, q.shape[2], q.shape[1] + 10), 7.0, device=device)
    ops.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.3, out=big[:, 4: 4 + q.shape[1]],
                 lse=lse_big[:, :, 5: 5 + q.shape[1]])
    ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.3)
    low, low_lse = reference.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.3, upcast=False)
    # The CPU op computes in fp32 whatever the input dtype (fp32 rounding only); the CUDA kernels
    # multiply the probabilities by V in the input dtype.
    cuda = device == "cuda"
    assert_attn_close("fp32 out", big[:, 4: 4 + q.shape[1]], ref, low if cuda else None)
    assert_lse_close("fp32 out", lse_big[:, :, 5: 5 + q.shape[1]], ref_lse,
                     low_lse if cuda else None)
    assert (big[:, :4] == 7).all() and (big[:, 4 + q.shape[1]:] == 7).all()
    assert (lse_big[:, :, :5] == 7).all() and (lse_big[:, :, 5 + q.shape[1]:] == 7).all()


# ---------------------------------------------------------------------------------- select_passing
SELECT_CASES = {  # (B, Lk, Hq, Hkv, D, nq, [(start, len)], p, pool)
    "gqa7_two_chunks": (1, 90, 7, 1, 16, 3, [(5, 40), (45, 41)], 6, 5),
    "gqa2_batch2": (2, 64, 4, 2, 32, 1, [(0, 31), (31, 30)], 13, 3),
    "chunk_shorter_than_p": (1, 30, 2, 2, 8, 2, [(3, 4), (7, 20)], 9, 5),
    "empty_chunk": (2, 40, 6, 3, 8, 5, [(10, 0), (10, 25)], 4, 1),
    "pool_wider_than_chunk": (1, 50, 2, 1, 64, 4, [(0, 3), (20, 29)], 2, 7),
}


def make_select_case(case, dtype, device, grid=True, seed=0):
    B, Lk, Hq, Hkv, D, nq, chunks, p, pool = SELECT_CASES[case]
    make = grid_inputs if grid else randn_inputs
    q, k, v = make(B, Lk, Hq, Hkv, D, dtype=dtype, seed=seed, device=device)
    return q[:, -nq:], k, v, [c[0] for c in chunks], [c[1] for c in chunks], p, pool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(SELECT_CASES))
def test_select_passing_equals_reference_exactly(case, device):
    """Grid inputs make every score exact: indices and bytes must match the reference."""
    needs("select_passing", device)
    for dtype in dtypes_for(device):
        q, k, v, starts, lens, p, pool = make_select_case(case, dtype, device)
        idx, kv = ops.select_passing(q, k, v, starts, lens, p, pool, capacity=p + 2)
        ref_idx, ref_kv = reference.select_passing(q, k, v, starts, lens, p, pool, capacity=p + 2)
        assert torch.equal(idx.cpu(), ref_idx.cpu()), case
        assert torch.equal(kv.cpu(), ref_kv.cpu()), case
        idx2, kv2 = ops.select_passing(q, k, v, starts, lens, p, pool, capacity=p + 2)
        assert torch.equal(idx, idx2) and torch.equal(kv, kv2)  # deterministic


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(SELECT_CASES))
def test_select_passing_is_a_top_k_on_random_inputs(case, device):
    """Gaussian inputs: rounding may break near-ties differently, but the kept set must be a
    top-m of the reference's smoothed scores up to fp32 rounding."""
    needs("select_passing", device)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v, starts, lens, p, pool = make_select_case(case, dtype, device, grid=False)
    idx, kv = ops.select_passing(q, k, v, starts, lens, p, pool)
    idx, k_cpu = idx.cpu(), k.cpu()
    for c, (s, n) in enumerate(zip(starts, lens)):
        m = min(p, n)
        if m == 0:
            assert (idx[c] == -1).all()
            continue
        smooth = reference.passing_scores(q.cpu(), k_cpu[:, s: s + n], pool)  # [B, Hkv, n]
        for b in range(k.shape[0]):
            for h in range(k.shape[2]):
                kept = idx[c, b, h, :m] - s
                assert kept.tolist() == sorted(set(kept.tolist())) and kept.min() >= 0
                mask = torch.zeros(n, dtype=torch.bool)
                mask[kept] = True
                tol = 1e-4 * smooth[b, h].abs().max().item()
                if m < n:
                    assert smooth[b, h][mask].min() >= smooth[b, h][~mask].max() - tol
                assert torch.equal(kv[c, :m, 0, b, h].cpu(), k_cpu[b, kept + s, h])


@pytest.mark.parametrize("device", DEVICES)
def test_select_passing_tie_rule_on_plateaus(device):
    needs("select_passing", device)
    q = torch.ones(1, 2, 2, 8)
    k = torch.zeros(1, 16, 1, 8)
    k[0, 9] = 1.0  # pool 5 turns this into a plateau on positions 7..11
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    qd, kd = q.to(device, dtype), k.to(device, dtype)
    idx, _ = ops.select_passing(qd, kd, kd, [0, 4], [16, 12], 3, 5)
    assert idx[0, 0, 0].tolist() == [7, 8, 9]
    assert idx[1, 0, 0].tolist() == [7, 8, 9]


# ---------------------------------------------------------------------------------- merge_states
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_merge_states_matches_reference(device, in_dtype):
    needs("merge_states", device)
    n, B, R, H, D = 5, 2, 7, 3, 80
    g = torch.Generator().manual_seed(2)
    outs = torch.randn(n, B, R, H, D, generator=g).to(device, in_dtype)
    lses = (torch.randn(n, B, H, R, generator=g) * 4).to(device)
    lses[1] = -float("inf")  # an empty part
    lses[:, 0, 0, 0] = -float("inf")  # an item where every part is empty
    ref, ref_lse = reference.merge_states(outs.cpu(), lses.cpu())
    for out_dtype in [torch.float32, torch.bfloat16]:
        big = torch.full((B, R + 2, H, D), 9.0, device=device, dtype=out_dtype)
        lse = torch.empty(B, H, R, device=device)
        ops.merge_states(outs, lses, out=big[:, 1: R + 1], lse=lse)
        tol = 1e-5 if out_dtype == torch.float32 else 2e-2
        assert_attn_close("merge", big[:, 1: R + 1], ref, eps=tol)
        assert (big[:, 0] == 9).all() and (big[:, R + 1] == 9).all()
        assert torch.equal(torch.isneginf(lse.cpu()), torch.isneginf(ref_lse))
        fin = ~torch.isneginf(ref_lse)
        assert (lse.cpu()[fin] - ref_lse[fin]).abs().max() < 1e-5
        assert (big[0, 1, 0] == 0).all()  # all-empty item: zeros, not NaN


# ---------------------------------------------------------------------------------- errors
def test_bad_inputs_name_the_op_and_value():
    q, k, v = randn_inputs(1, 10, 4, 2, 8)
    with pytest.raises(ValueError, match=r"spava::attn_fwd: Hq = 4 is not a multiple of Hkv = 3"):
        ops.attn_fwd(q, [k.repeat(1, 1, 3, 1)[:, :, :3]], [v.repeat(1, 1, 3, 1)[:, :, :3]], [0],
                     [0])
    with pytest.raises(TypeError, match=r"spava::attn_fwd: k\[0\]/v\[0\] dtype"):
        ops.attn_fwd(q, [k.half()], [v.half()], [0], [0])
    with pytest.raises(ValueError, match=r"spava::attn_fwd: k, v, row_begin and diag"):
        ops.attn_fwd(q, [k], [v], [0, 1], [0])
    with pytest.raises(ValueError, match=r"spava::attn_fwd: softmax_scale must be finite"):
        ops.attn_fwd(q, [k], [v], [0], [0], softmax_scale=-1.0)
    with pytest.raises(ValueError, match=r"spava::attn_fwd: q must be \[B, Lq, Hq, D\]"):
        ops.attn_fwd(q[0], [k], [v], [0], [0])
    with pytest.raises(ValueError, match=r"spava::select_passing: chunk 1 = \[5, 12\)"):
        ops.select_passing(q[:, -2:], k, v, [0, 5], [5, 7], 2, 5)
    with pytest.raises(ValueError, match=r"spava::select_passing: passing_len must be >= 1, got 0"):
        ops.select_passing(q[:, -2:], k, v, [0], [5], 0, 5)
    with pytest.raises(ValueError, match=r"spava::select_passing: pool_kernel must be odd"):
        ops.select_passing(q[:, -2:], k, v, [0], [5], 2, 4)
    with pytest.raises(ValueError, match=r"spava::select_passing: indices must be"):
        ops.select_passing(q[:, -2:], k, v, [0], [5], 4, 5, capacity=3)
    with pytest.raises(TypeError, match=r"spava::merge_states: lses must be fp32"):
        ops.merge_states(torch.zeros(2, 1, 3, 4, 8), torch.zeros(2, 1, 4, 3, dtype=torch.half))
    with pytest.raises(ValueError, match=r"spava::merge_states: lses must be \[n, B, H, R\]"):
        ops.merge_states(torch.zeros(2, 1, 3, 4, 8), torch.zeros(2, 1, 3, 4))
