"""CUDA kernels against reference.py: every compiled dtype x head dim x GQA ratio, irregular
segments, and the whole single-GPU schedule. Skipped cleanly without a GPU."""

import pytest
import torch

import spava_ext
from spava_ext import SpavaLayout, ops, reference
from utils import assert_attn_close, grid_inputs

pytestmark = pytest.mark.cuda

FULL = ops.FULL
HEAD_DIMS = ops.build_info().get("attn_fwd_head_dims", [])
DTYPES = [torch.bfloat16, torch.float16]


def spava_like_segments(Lq_anchor, Lq_chunk, Hkv, D, dtype, npass=3, cap=37, seed=0):
    """Rows [anchor | chunk] x [P_0..P_(npass-1) (strided views of a packed buffer) | anchor |
    chunk], as step 3 of the schedule builds them, with lengths that are not tile multiples."""
    g = torch.Generator().manual_seed(seed)
    B = 2
    packed = torch.randn(npass * cap, 2, B, Hkv, D, generator=g).to("cuda", dtype)
    anchor_k, anchor_v, chunk_k, chunk_v = (
        torch.randn(B, n, Hkv, D, generator=g).to("cuda", dtype)
        for n in (Lq_anchor, Lq_anchor, Lq_chunk, Lq_chunk))
    ks = [packed[:2 * cap, 0].transpose(0, 1), packed[2 * cap: 2 * cap + 29, 0].transpose(0, 1),
          anchor_k, chunk_k]
    vs = [packed[:2 * cap, 1].transpose(0, 1), packed[2 * cap: 2 * cap + 29, 1].transpose(0, 1),
          anchor_v, chunk_v]
    a = Lq_anchor
    return ks, vs, [a, a, 0, 0], [FULL, FULL, 0, -a]


@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (4, 2), (14, 2), (16, 2)])
def test_attn_fwd_cuda_matches_reference(D, dtype, Hq, Hkv):
    a, c = 150, 333  # anchor and chunk rows: neither is a multiple of the 128-row tile
    ks, vs, rb, dg = spava_like_segments(a, c, Hkv, D, dtype, seed=D + Hq)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, a + c, Hq, D, generator=g).to("cuda", dtype)
    out, lse = ops.attn_fwd(q, ks, vs, rb, dg)
    ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg)
    low, _ = reference.attn_fwd(q, ks, vs, rb, dg, upcast=False)
    assert_attn_close(f"D{D} {dtype} {Hq}/{Hkv}", out, ref, low)
    assert (lse.cpu() - ref_lse.cpu()).abs().max() < 1e-2


CASES = {  # (Lq, [(Ls, row_begin, diag)], Hq, Hkv)
    "one_query_row": (1, [(1013, 0, FULL), (1, 0, 0)], 8, 2),
    "question_partial_gqa7": (64, [(700, 0, FULL), (517, 0, FULL), (64, 0, 0)], 28, 4),
    "rows_without_keys": (200, [(60, 150, FULL), (40, 0, -170)], 4, 4),
    "no_segments": (70, [], 2, 2),
    "tiny_segments": (17, [(1, 0, FULL), (13, 0, 0), (17, 3, -2)], 2, 1),
    "gqa8_long_causal": (1500, [(1500, 0, 0)], 16, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_attn_fwd_cuda_edge_cases(case):
    Lq, segs, Hq, Hkv = CASES[case]
    g = torch.Generator().manual_seed(3)
    for D in HEAD_DIMS:
        for dtype in DTYPES:
            q = torch.randn(1, Lq, Hq, D, generator=g).to("cuda", dtype)
            ks = [torch.randn(1, n, Hkv, D, generator=g).to("cuda", dtype) for n, _, _ in segs]
            vs = [torch.randn(1, n, Hkv, D, generator=g).to("cuda", dtype) for n, _, _ in segs]
            rb, dg = [s[1] for s in segs], [s[2] for s in segs]
            out = torch.full_like(q, float("nan"))  # poison: every element must be written
            lse = torch.full((1, Hq, Lq), float("nan"), device="cuda")
            ops.attn_fwd(q, ks, vs, rb, dg, out=out, lse=lse)
            ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg)
            low, _ = reference.attn_fwd(q, ks, vs, rb, dg, upcast=False)
            assert_attn_close(f"{case} D{D} {dtype}", out, ref, low)
            lse, ref_lse = lse.cpu(), ref_lse.cpu()
            assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
            fin = ~torch.isneginf(ref_lse)
            if fin.any():
                assert (lse[fin] - ref_lse[fin]).abs().max() < 1e-2


def test_attn_fwd_cuda_fp32_out_and_scale():
    D = HEAD_DIMS[-1]
    ks, vs, rb, dg = spava_like_segments(40, 90, 2, D, torch.bfloat16)
    q = torch.randn(2, 130, 6, D, device="cuda", dtype=torch.bfloat16)
    out, lse = ops.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.05, out_dtype=torch.float32)
    ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.05)
    low, _ = reference.attn_fwd(q, ks, vs, rb, dg, softmax_scale=0.05, upcast=False)
    assert out.dtype == torch.float32
    assert_attn_close("fp32 out", out, ref, low)


@pytest.mark.parametrize("D", HEAD_DIMS)
def test_attn_fwd_cuda_strided_out(D):
    """out is a window of a larger poisoned buffer (rows, heads and columns around it): the rows
    land where the strides say, rows past q_len and the padding stay untouched. Many units per
    CTA (2 x 6 query tiles x 16 heads), so the output staging of the TMA-store epilogue is
    reused."""
    g = torch.Generator().manual_seed(5)
    B, Lq, Hq, Hkv = 2, 700, 16, 2
    q = torch.randn(B, Lq, Hq, D, generator=g).to("cuda", torch.bfloat16)
    ks = [torch.randn(B, n, Hkv, D, generator=g).to("cuda", torch.bfloat16) for n in (300, Lq)]
    vs = [torch.randn(B, n, Hkv, D, generator=g).to("cuda", torch.bfloat16) for n in (300, Lq)]
    buf = torch.full((B, Lq + 60, Hq + 1, D + 16), float("nan"), device="cuda",
                     dtype=torch.bfloat16)
    out = buf[:, 30:30 + Lq, 1:, 8:8 + D]
    ops.attn_fwd(q, ks, vs, [0, 0], [FULL, 0], out=out)
    ref, _ = reference.attn_fwd(q, ks, vs, [0, 0], [FULL, 0])
    low, _ = reference.attn_fwd(q, ks, vs, [0, 0], [FULL, 0], upcast=False)
    assert_attn_close(f"strided out D{D}", out, ref, low)
    pad = torch.ones_like(buf, dtype=torch.bool)
    pad[:, 30:30 + Lq, 1:, 8:8 + D] = False
    assert buf[pad].isnan().all(), "attn_fwd wrote outside out"


def test_attn_fwd_cuda_errors():
    q = torch.randn(1, 8, 2, 96, device="cuda", dtype=torch.bfloat16)
    if 96 not in HEAD_DIMS:
        with pytest.raises(ValueError, match="head dim 96 is not compiled"):
            ops.attn_fwd(q, [q[:, :, :1]], [q[:, :, :1]], [0], [0])
    q = torch.randn(1, 8, 2, 64, device="cuda", dtype=torch.float32)
    with pytest.raises(TypeError, match="bf16 or fp16"):
        ops.attn_fwd(q, [q], [q], [0], [0])


# ---------------------------------------------------------------------------------- select
def check_select(q, k, v, starts, lens, p, pool, capacity=None, name=""):
    """CUDA select_passing equals the reference bit for bit (indices and the gathered rows), and
    a second call gives the same bytes."""
    idx, kv = ops.select_passing(q, k, v, starts, lens, p, pool, capacity=capacity)
    ref_idx, ref_kv = reference.select_passing(q.cpu(), k.cpu(), v.cpu(), starts, lens, p, pool,
                                               capacity=capacity)
    assert torch.equal(idx.cpu(), ref_idx), (name, p, pool)
    assert torch.equal(kv.cpu(), ref_kv), (name, p, pool)
    idx2, kv2 = ops.select_passing(q, k, v, starts, lens, p, pool, capacity=capacity)
    assert torch.equal(idx, idx2) and torch.equal(kv, kv2), name  # same input, same bytes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hq,Hkv,D,nq", [(7, 1, 64, 3), (28, 4, 128, 64), (16, 2, 80, 1)])
def test_select_passing_cuda_equals_reference(dtype, Hq, Hkv, D, nq):
    q, k, v = grid_inputs(2, 3000, Hq, Hkv, D, dtype=dtype, seed=D, device="cuda")
    starts, lens = [5, 1700, 2990], [1695, 1290, 0]
    for p, pool in [(128, 5), (1000, 3), (2000, 1)]:
        check_select(q[:, -nq:], k, v, starts, lens, p, pool)


def test_select_passing_cuda_long_chunk():
    """A 64K-token chunk and p = 8192 (smoothed scores no longer fit in shared memory)."""
    q, k, v = grid_inputs(1, 65536 + 64, 8, 2, 128, dtype=torch.bfloat16, seed=9, device="cuda")
    check_select(q[:, -64:], k, v, [0], [65536], 8192, 5, name="64K chunk")


def tie_inputs(B, L, Hq, Hkv, D, dtype, seed, levels):
    """Scores with few distinct values: k in {0, 1} on `levels` leading columns, q all ones, so
    score = number of ones; long runs of equal keys cross every radix digit and warp range."""
    g = torch.Generator().manual_seed(seed)
    q = torch.ones(B, 4, Hq, D)
    k = torch.zeros(B, L, Hkv, D)
    k[..., :levels] = torch.randint(0, 2, (B, L, Hkv, levels), generator=g).float()
    v = torch.randn(B, L, Hkv, D, generator=g)
    return tuple(t.to("cuda", dtype) for t in (q, k, v))


@pytest.mark.parametrize("levels", [0, 1, 3])
def test_select_passing_cuda_ties(levels):
    """Many equal smoothed scores (all equal when levels = 0): the m-th largest key sits inside a
    run of equal keys, so every radix digit is needed and the lowest positions must win."""
    q, k, v = tie_inputs(2, 9000, 8, 2, 64, torch.bfloat16, seed=levels, levels=levels)
    starts, lens = [0, 4000, 8999], [4000, 4999, 1]
    for p, pool in [(1, 1), (700, 1), (2500, 5), (3999, 3)]:
        check_select(q, k, v, starts, lens, p, pool, name=f"levels {levels}")


def test_select_passing_cuda_shapes():
    """Head dims 8..512 (one or several load rounds per tile in the score kernel, idle threads
    when 256 % (D/8) != 0), a pool window wider than a tile, GQA 1 and 7, batch 2, a long
    question (several qsum splits, each looping), 16 irregular chunks."""
    cases = [  # (B, L, Hq, Hkv, D, nq, pool)
        (2, 2000, 4, 4, 8, 5, 5), (1, 2000, 7, 1, 96, 9, 9), (2, 2500, 14, 2, 512, 3, 127),
        (1, 3000, 14, 2, 256, 300, 31), (2, 1900, 6, 3, 80, 2, 1)]
    for i, (B, L, Hq, Hkv, D, nq, pool) in enumerate(cases):
        q, k, v = grid_inputs(B, L, Hq, Hkv, D, dtype=torch.float16, seed=40 + i, device="cuda")
        starts = [0, 17, 400, 401, 1000, 1300, 1301, 1302, 1500, 1513, 1600, 1700, 1750, 1800,
                  1850, 1899][:16]
        lens = [17, 383, 1, 0, 300, 1, 1, 198, 13, 87, 100, 50, 50, 50, 49, 1]
        for p in (1, 40, 150):
            check_select(q[:, -nq:], k, v, starts, lens, p, pool, name=f"case {i}")


def test_select_passing_cuda_no_selection_and_padding():
    """p >= len for every chunk (rows kept in order, no scoring), p >= len for some chunks only,
    an empty chunk, and a capacity larger than every m (zero / -1 padding)."""
    q, k, v = grid_inputs(2, 1200, 8, 2, 128, dtype=torch.bfloat16, seed=5, device="cuda")
    starts, lens = [0, 300, 700, 1100], [300, 400, 0, 100]
    check_select(q[:, -7:], k, v, starts, lens, 400, 5, name="p = max len")
    check_select(q[:, -7:], k, v, starts, lens, 10**6, 5, capacity=512, name="p huge")
    check_select(q[:, -7:], k, v, starts, lens, 200, 3, capacity=777, name="mixed + padding")


def test_select_passing_cuda_keys_in_global_memory():
    """A chunk whose keys exceed the gather kernel's shared-memory key cache (16384 keys: its
    keys are read at L2 in tiles of 8192 in every pass) next to one whose keys fit."""
    q, k, v = grid_inputs(1, 61000, 8, 2, 64, dtype=torch.bfloat16, seed=6, device="cuda")
    check_select(q[:, -16:], k, v, [0, 60000], [60000, 1000], 300, 5, name="global keys")


@pytest.mark.parametrize("levels", [0, 2, None])
def test_select_passing_cuda_key_tiles(levels):
    """Every gather CTA repeats the select over tiles of 8192 keys: chunks just past one tile
    (8320, 8321), a chunk of one score tile (200), ties (levels) or exact grid scores (None), p near
    len (the kept rows fill every CTA of the item) and p = 1 (one CTA holds the only kept row)."""
    if levels is None:
        q, k, v = grid_inputs(1, 17000, 14, 2, 128, dtype=torch.bfloat16, seed=11, device="cuda")
        q = q[:, -5:]
    else:
        q, k, v = tie_inputs(1, 17000, 14, 2, 128, torch.bfloat16, seed=11, levels=levels)
    starts, lens = [0, 8320, 16641], [8320, 8321, 200]
    for p, pool in [(1, 1), (199, 5), (1024, 5), (8319, 3)]:
        check_select(q, k, v, starts, lens, p, pool, name=f"levels {levels}")


@pytest.mark.parametrize("levels", [0, 1, None])
def test_select_passing_cuda_cache_and_tile_limits(levels):
    """Chunks at a key-tile boundary (8192, 8193), at the shared-memory key cache's limit (16384)
    and one past it (16385, keys read at L2), cached and uncached items in one call. With levels
    0 every key is equal, so the kept equal keys (the lowest positions) cross tiles and every
    CTA's row range; p = 9000 keeps whole chunks of 8192 / 8193 rows next to selecting ones;
    p = 1000 / 777 leave m off the gather-row multiples (a CTA range straddles m)."""
    lens = [8192, 8193, 16384, 16385]
    starts = [0, 8192, 16385, 32769]
    L = starts[-1] + lens[-1] + 3
    if levels is None:
        q, k, v = grid_inputs(1, L, 8, 2, 64, dtype=torch.bfloat16, seed=13, device="cuda")
        q = q[:, -9:]
    else:
        q, k, v = tie_inputs(1, L, 8, 2, 64, torch.bfloat16, seed=13, levels=levels)
    for p, pool in [(777, 5), (1000, 1), (9000, 3)]:
        check_select(q, k, v, starts, lens, p, pool, name=f"levels {levels}")


def bin_inputs(L, n_high, seed):
    """q all ones (4 rows, G = 1), so score = 4 * (row sum of k). n_high random rows have
    columns 0..63 = 256 and every row has columns 64..127 in {0, 1}: their scores lie in
    [65536, 65792], one 16-bit key bin with ~30 distinct values (low key bits 15..2); the other
    rows score below 257. Exact in fp32, so the reference gives the same bits."""
    g = torch.Generator().manual_seed(seed)
    q = torch.ones(1, 4, 2, 128)
    k = torch.zeros(1, L, 2, 128)
    k[..., 64:] = torch.randint(0, 2, (1, L, 2, 64), generator=g).float()
    high = torch.randperm(L, generator=g)[:n_high]
    k[:, high, :, :64] = 256.0
    v = torch.randn(1, L, 2, 128, generator=g)
    return tuple(t.to("cuda", torch.bfloat16) for t in (q, k, v))


@pytest.mark.parametrize("n_high,pool,ps", [(200, 1, (1, 37, 150, 199)),
                                            (2000, 5, (1, 1000, 5000)),
                                            (20000, 3, (8192, 9000))])
def test_select_passing_cuda_one_key_bin(n_high, pool, ps):
    """The m-th key inside one crowded 16-bit key bin (its top digits decide nothing): 200
    keys with heavy ties, thousands of them, and a 64K chunk with p = 8192 (keys read at L2).
    Written for select v6 (candidate ranking, radix fallback; reverted), kept since."""
    L = 65536 if n_high > 10000 else 8300
    q, k, v = bin_inputs(L, n_high, seed=n_high)
    for p in ps:
        check_select(q, k, v, [0], [L], p, pool, name=f"high {n_high} p {p}")


def rank_inputs(L, n_eq, seed):
    """q all ones (4 rows, G = 1), fp16, so score = 4 * k[:, 0]: 100 random rows score
    4 * (200 + i) (distinct), n_eq rows 4 * 50 and the rest 4 * 1. No other score shares the top
    22 key bits of 200.0, so the m-th key for 100 < m <= 100 + n_eq sits among exactly n_eq
    candidates after two digits."""
    g = torch.Generator().manual_seed(seed)
    q = torch.ones(1, 4, 2, 64)
    k = torch.zeros(1, L, 2, 64)
    k[..., 0] = 1.0
    perm = torch.randperm(L, generator=g)
    k[:, perm[:100], :, 0] = (200.0 + torch.arange(100.0)).view(1, 100, 1)
    k[:, perm[100:100 + n_eq], :, 0] = 50.0
    v = torch.randn(1, L, 2, 64, generator=g)
    return tuple(t.to("cuda", torch.float16) for t in (q, k, v))


@pytest.mark.parametrize("n_eq", [2, 31, 32, 33, 40])
def test_select_passing_cuda_ranked_or_third_digit(n_eq):
    """After digits 1 and 2, up to 32 candidate keys are ranked by one warp and more take the
    third digit (select v9): the m-th key among 2 / 31 / 32 / 33 / 40 equal candidates, one taken,
    five, all but one, all (decided at digit 1)."""
    q, k, v = rank_inputs(3000, n_eq, seed=n_eq)
    for p in sorted({101, 100 + min(5, n_eq), 99 + n_eq, 100 + n_eq}):
        check_select(q, k, v, [0], [3000], p, 1, name=f"n_eq {n_eq} p {p}")


def test_select_passing_cuda_ranges_straddle_m():
    """Capacity larger than m and m not a multiple of the gather CTA's rows (64 at D 128, 102 at
    D 80): a CTA range holds the last kept rows and the first zero rows; CTAs wholly past m write
    zeros without waiting for the score grid. Batch 2, fp16."""
    for D, Hq, Hkv in [(128, 8, 2), (80, 6, 3)]:
        q, k, v = grid_inputs(2, 3000, Hq, Hkv, D, dtype=torch.float16, seed=D + 1, device="cuda")
        starts, lens = [0, 1000, 1999], [1000, 999, 1001]
        for p, cap in [(100, 300), (65, 65), (257, 1000), (999, 1001)]:
            check_select(q[:, -3:], k, v, starts, lens, p, 5, capacity=cap, name=f"D {D} p {p}")


def test_select_passing_cuda_graph_replay():
    """Captured in a CUDA graph (the kernels may be chained with programmatic dependent launch)
    and replayed on new inputs: same bytes as eager calls."""
    q, k, v = grid_inputs(1, 5000, 28, 4, 128, dtype=torch.bfloat16, seed=7, device="cuda")
    qq = q[:, -64:].clone()
    starts, lens = [100, 2600], [2500, 2400]
    idx = torch.empty(2, 1, 4, 512, dtype=torch.long, device="cuda")
    kv = torch.empty(2, 512, 2, 1, 4, 128, dtype=torch.bfloat16, device="cuda")

    def run():
        ops.select_passing(qq, k, v, starts, lens, 512, 5, indices=idx, kv=kv)

    run()  # warm-up: kernel attributes, allocator
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for seed in (8, 9):
        q2, k2, v2 = grid_inputs(1, 5000, 28, 4, 128, dtype=torch.bfloat16, seed=seed,
                                 device="cuda")
        qq.copy_(q2[:, -64:]), k.copy_(k2), v.copy_(v2)
        graph.replay()
        want_idx, want_kv = ops.select_passing(q2[:, -64:], k2, v2, starts, lens, 512, 5)
        assert torch.equal(idx, want_idx) and torch.equal(kv, want_kv), seed


def test_merge_states_cuda_in_place_rows():
    outs = torch.randn(4, 1, 9, 3, 64, device="cuda")
    lses = torch.randn(4, 1, 3, 9, device="cuda")
    big = torch.zeros(1, 20, 3, 64, device="cuda", dtype=torch.bfloat16)
    ops.merge_states(outs, lses, out=big[:, 11:])
    ref, _ = reference.merge_states(outs.cpu(), lses.cpu())
    assert_attn_close("merge", big[:, 11:], ref, eps=1e-2)


# ---------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [64, None])
@pytest.mark.parametrize("shard_anchor", [False, True])
def test_spava_attention_cuda_single_rank(dtype, p, shard_anchor):
    D = HEAD_DIMS[-1]
    L, a, nq = 2100, 300, 40
    q, k, v = grid_inputs(1, L, 14, 2, D, dtype=dtype, seed=11, device="cuda")
    layout = SpavaLayout(L, a, nq, 1, p, shard_anchor=shard_anchor)
    out = spava_ext.spava_attention(q, k, v, layout)
    ref = reference.spava_attention(q.cpu(), k.cpu(), v.cpu(), layout)
    low = reference.spava_attention(q.cpu(), k.cpu(), v.cpu(), layout, upcast=False)
    assert_attn_close(f"spava W=1 p={p}", out, ref, low)


def test_simulator_runs_every_rank():
    from spava_ext.simulate import SimConfig, format_report, simulate

    res = simulate(SimConfig(context=8192, question=16, world=2, heads_q=4, heads_kv=2,
                             head_dim=HEAD_DIMS[-1], repeats=2))
    assert len(res["ranks"]) == 2 and res["critical_path_ms"] > 0
    assert all(0 <= r["links"]["450"]["hidden_fraction"] <= 1 for r in res["ranks"])
    assert "critical path" in format_report(res)


@pytest.mark.parametrize("shard_anchor", [False, True])
def test_spava_attention_cuda_graph_capture(shard_anchor):
    """A layer captured once in a CUDA graph and replayed on new inputs equals eager runs."""
    D = HEAD_DIMS[-1]
    L, a, nq = 1500, 200, 24
    layout = SpavaLayout(L, a, nq, 1, 100, shard_anchor=shard_anchor)
    q, k, v = grid_inputs(1, L, 8, 2, D, dtype=torch.bfloat16, seed=21, device="cuda")
    spava_ext.spava_attention(q, k, v, layout)  # warm-up: kernel attributes, allocator
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = spava_ext.spava_attention(q, k, v, layout)
    for seed in (22, 23):
        q2, k2, v2 = grid_inputs(1, L, 8, 2, D, dtype=torch.bfloat16, seed=seed, device="cuda")
        q.copy_(q2), k.copy_(k2), v.copy_(v2)
        graph.replay()
        want = spava_ext.spava_attention(q2, k2, v2, layout)
        assert torch.equal(out, want), seed  # same kernels, same inputs: same bytes


@pytest.mark.parametrize("shard_anchor", [False, True])
def test_nccl_world_size_one_prefill_and_decode(shard_anchor):
    """The NCCL path (comm stream, stream-ordered waits; with a sharded anchor its gather
    too, three ready flags and four problems) with one rank, against the reference."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        D = HEAD_DIMS[-1]
        L, a, nq, T = 900, 64, 9, 3
        layout = SpavaLayout(L, a, nq, 1, 50, shard_anchor=shard_anchor)
        q, k, v = grid_inputs(1, L + T, 4, 2, D, dtype=torch.bfloat16, seed=31, device="cuda")
        out = spava_ext.spava_attention(q[:, :L], k[:, :L], v[:, :L], layout)
        ref = reference.spava_attention(q[:, :L].cpu(), k[:, :L].cpu(), v[:, :L].cpu(), layout)
        low = reference.spava_attention(q[:, :L].cpu(), k[:, :L].cpu(), v[:, :L].cpu(), layout,
                                        upcast=False)
        assert_attn_close("nccl prefill", out, ref, low)
        cache = spava_ext.SpavaKVCache(layout, 0, 1, 1, 2, D, torch.bfloat16, "cuda", T)
        cache.store_prefill(0, k[:, :L], v[:, :L])
        dec = spava_ext.decode_attention(q[:, L:], k[:, L:], v[:, L:], cache, 0)
        dense = reference.dense_causal_attention(q.cpu(), k.cpu(), v.cpu())[:, L:]
        low_d = reference.masked_attention(q.cpu(), k.cpu(), v.cpu(),
                                           torch.ones(L + T, L + T, dtype=torch.bool).tril(),
                                           D ** -0.5, upcast=False)[0][:, L:]
        assert_attn_close("nccl decode", dec, dense, low_d)
        # the NCCL path (comm stream, stream-ordered waits) captured in a CUDA graph
        qs, ks, vs = (t[:, :L].clone() for t in (q, k, v))
        spava_ext.spava_attention(qs, ks, vs, layout)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = spava_ext.spava_attention(qs, ks, vs, layout)
        q2, k2, v2 = grid_inputs(1, L, 4, 2, D, dtype=torch.bfloat16, seed=32, device="cuda")
        qs.copy_(q2), ks.copy_(k2), vs.copy_(v2)
        graph.replay()
        assert torch.equal(captured, spava_ext.spava_attention(q2, k2, v2, layout))
    finally:
        dist.destroy_process_group()
