"""The FP8 scheme's reference (spava_ext.fp8): per-block e4m3 quantisation, the Hadamard
rotation, and the scheme's attention error against fp64."""

import math

import pytest
import torch

from spava_ext import fp8


def test_quantize_blocks_scales_and_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 3, 16, generator=g) * 5
    x[:, 128:256, 1] = 0  # an all-zero block: scale 1
    values, scale = fp8.quantize_blocks(x, block=128)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (2, 3, 3)
    amax = x[:, 256:].abs().amax(dim=(1, 3))  # the last, partial block
    torch.testing.assert_close(scale[:, 2], amax / fp8.E4M3_MAX)
    assert torch.all(scale[:, 1, 1] == 1)
    back = fp8.dequantize_blocks(values, scale, block=128)
    # e4m3: 3 mantissa bits (relative step 2^-3, rounding error <= 2^-4), subnormals below 2^-6
    floor = scale.repeat_interleave(128, dim=1)[:, :300, :, None] * 2.0 ** -9
    assert torch.all((back - x).abs() <= x.abs() * 2.0 ** -4 + floor)
    assert torch.equal(back[:, 128:256, 1], torch.zeros(2, 128, 16))
    with pytest.raises(ValueError, match="quantize_blocks"):
        fp8.quantize_blocks(torch.ones(3, 4), block=128)


def test_hadamard_is_orthonormal_and_keeps_scores():
    h = fp8.hadamard(128)
    torch.testing.assert_close(h @ h.T, torch.eye(128), atol=1e-6, rtol=0)
    q, k = torch.randn(5, 128), torch.randn(7, 128)
    torch.testing.assert_close((q @ h) @ (k @ h).T, q @ k.T, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        fp8.hadamard(80)


@pytest.mark.parametrize("D", [1, 8, 64, 128, 256])
def test_rotate_hadamard_is_the_matrix_product(D):
    x = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(D)) * 10
    got = fp8.rotate_hadamard(x)
    # fp32 rounding: log2(D) butterfly stages and the scaling, on partial sums up to
    # sqrt(D) * max|x| in magnitude
    atol = D.bit_length() * 2.0 ** -23 * D ** 0.5 * x.abs().max().item()
    torch.testing.assert_close(got, x.double() @ fp8.hadamard(D).double(), atol=atol, rtol=0,
                               check_dtype=False)
    assert got.dtype == torch.float32
    with pytest.raises(ValueError, match="rotate_hadamard: .*power of two, got 80"):
        fp8.rotate_hadamard(torch.ones(2, 80))


def _inputs(seed, outliers):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for heads in (8, 2, 2):
        x = torch.randn(1, 512, heads, 128, generator=g)
        if outliers:  # 0.1 % of the entries drawn from N(0, 10^2)
            pick = torch.rand(x.shape, generator=g) < 1e-3
            x = torch.where(pick, torch.randn(x.shape, generator=g) * 10, x)
        xs.append(x)
    return xs


@pytest.mark.parametrize("outliers", [False, True])
def test_fp8_attention_error_against_fp64(outliers):
    q, k, v = _inputs(1, outliers)
    exact = fp8._attention(q.double(), k.double(), v.double(), True, 128 ** -0.5, torch.float64)
    bf16 = fp8.rmse(fp8.bf16_attention(q, k, v), exact)
    plain = fp8.rmse(fp8.fp8_attention(q, k, v), exact)
    rotated = fp8.rmse(fp8.fp8_attention(q, k, v, rotate=True), exact)
    assert bf16 < 2e-3 and 4 * bf16 < plain < 3e-2 and rotated < 3e-2
    if outliers:  # the rotation spreads the outliers: the blocks' scales fall
        assert rotated < plain


def test_fp8_attention_of_representable_inputs_is_exact():
    """Values that e4m3 holds exactly, in blocks whose maximum is 448 (scale 1), and equal
    scores (probabilities 1): nothing is rounded, the result is the causal running mean."""
    g = torch.Generator().manual_seed(2)
    q, k = torch.zeros(1, 4, 1, 16), torch.zeros(1, 4, 1, 16)
    exact_values = torch.tensor([-448.0, -3.0, -1.5, -0.25, 0.0, 0.5, 2.0, 6.0, 448.0])
    v = exact_values[torch.randint(0, 9, (1, 4, 1, 16), generator=g)]
    v[0, 0, 0, 0] = 448.0
    got = fp8.fp8_attention(q, k, v, causal=True)
    want = torch.cumsum(v, dim=1) / torch.arange(1, 5).view(1, 4, 1, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-6)


# ------------------------------------------------------------- the FP8 kernel's arithmetic
def _dequantized(src, first, rows):
    """fp32 K and V rows ``[first, first + rows)`` of a quantised source."""
    sl = slice(first, first + rows)
    return src.k[:, sl] * src.ks[:, sl, :, None], src.v[:, sl] * src.vs[:, sl, :, None]


def _segments(seed, v_scales=(1.0,)):
    """Query rows and three segments (two of one source, split off the block grid, one of a
    second source of two parts) with row_begin / diag rules of every kind; V's blocks of the
    first source scaled by ``v_scales`` in turn."""
    g = torch.Generator().manual_seed(seed)
    Lq, Hq, Hkv, D = 150, 4, 2, 32
    q = torch.randn(1, Lq, Hq, D, generator=g)
    k1, v1 = torch.randn(1, 400, Hkv, D, generator=g), torch.randn(1, 400, Hkv, D, generator=g)
    for j in range(4):  # blocks of 128 rows
        v1[:, 128 * j : 128 * (j + 1)] *= v_scales[j % len(v_scales)]
    k2, v2 = torch.randn(1, 90, Hkv, D, generator=g), torch.randn(1, 90, Hkv, D, generator=g)
    s1 = fp8.quantize_source(k1, v1)
    s2 = fp8.quantize_source(k2, v2, parts=[50, 40])
    segs = [fp8.Segment(s1, 10, 200, row_begin=20),          # rows >= 20 see it all
            fp8.Segment(s1, 300, 100, diag=-50),              # causal, 50 rows behind
            fp8.Segment(s2, 30, 60, row_begin=5, diag=-3)]
    q8, qs = fp8.quantize_rows(q)
    return q8, qs, segs


def _reference(q8, qs, segs, scale):
    """reference.attn_fwd of the dequantised inputs."""
    from spava_ext import reference

    ks, vs = zip(*(_dequantized(s.source, s.first, s.rows) for s in segs))
    return reference.attn_fwd(q8 * qs[..., None], ks, vs, [s.row_begin for s in segs],
                              [s.diag for s in segs], scale)


@pytest.mark.parametrize("v_scales", [(1.0,), (1.0, 2.0 ** -20, 2.0 ** 20, 3.0)])
def test_attn_fwd_is_attention_of_the_dequantised_inputs(v_scales):
    """The kernel's arithmetic equals attention of the dequantised Q, K, V up to the e4m3
    rounding of the probabilities; the log-sum-exp (from unrounded probabilities) to fp32
    rounding. V blocks 2^40 apart in scale: each tile's probabilities keep e4m3's range."""
    q8, qs, segs = _segments(0, v_scales)
    out, lse = fp8.attn_fwd(q8, qs, segs, 32 ** -0.5)
    want, want_lse = _reference(q8, qs, segs, 32 ** -0.5)
    empty = torch.isneginf(want_lse)  # rows 0..4 see no key
    assert bool(empty[:, :, :5].all()) and not bool(empty[:, :, 5:].any())
    assert torch.equal(torch.isneginf(lse), empty) and torch.all(out[:, :5] == 0)
    torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=1e-5)
    # a probability rounded to e4m3 is off by at most 2^-4 of itself (or 2^-10 of the tile's
    # largest V-scaled weight below e4m3's normal range): the output moves by at most that
    # share of the weights, times the largest |v| the row sees
    vmax = max(float(_dequantized(s.source, s.first, s.rows)[1].abs().max()) for s in segs)
    err = (out - want).abs().amax(dim=(2, 3))
    assert float(err.max()) <= 2.0 ** -4 * vmax
    assert float((out - want).abs().mean()) <= 2.0 ** -8 * vmax


def test_attn_fwd_key_tiles_follow_the_blocks():
    """A segment cut in two at a block boundary visits the same tiles in the same order: the
    same bytes. Cut inside a block, one tile becomes two (another rounding of p)."""
    q8, qs, segs = _segments(1)
    s1 = segs[0].source
    whole = fp8.attn_fwd(q8, qs, [fp8.Segment(s1, 10, 300)], 0.2)
    at_block = fp8.attn_fwd(q8, qs, [fp8.Segment(s1, 10, 118), fp8.Segment(s1, 128, 182)], 0.2)
    inside = fp8.attn_fwd(q8, qs, [fp8.Segment(s1, 10, 100), fp8.Segment(s1, 110, 200)], 0.2)
    assert torch.equal(whole[0], at_block[0]) and torch.equal(whole[1], at_block[1])
    assert not torch.equal(whole[0], inside[0])
    torch.testing.assert_close(whole[0], inside[0], atol=2e-2, rtol=0)


def test_quantize_source_blocks_restart_at_each_part():
    k = torch.randn(1, 300, 2, 16, generator=torch.Generator().manual_seed(4))
    k[:, 200:] *= 100  # the second part's scale must not leak into the first
    src = fp8.quantize_source(k, k, parts=[200, 100])
    assert src.block.tolist() == [0] * 128 + [1] * 72 + [2] * 100
    torch.testing.assert_close(src.ks[:, 199], k[:, 128:200].abs().amax(dim=(1, 3)) / 448)
    with pytest.raises(ValueError, match="quantize_source: parts"):
        fp8.quantize_source(k, k, parts=[200])


@pytest.mark.parametrize("shard_anchor", [False, True])
@pytest.mark.parametrize("passing_len", [None, 40])
def test_spava_attention_fp8_error_is_the_dense_fp8_error(shard_anchor, passing_len):
    """Spava through the FP8 arithmetic is as close to the fp64 Spava reference (exact: dense
    causal attention) as dense FP8 attention is to dense fp64 attention."""
    from spava_ext import SpavaLayout, reference

    g = torch.Generator().manual_seed(5)
    L = 1100
    q, k, v = (torch.randn(1, L, h, 64, generator=g) for h in (4, 2, 2))
    layout = SpavaLayout(L, 150, 17, 3, passing_len=passing_len, shard_anchor=shard_anchor)
    got = fp8.spava_attention(q, k, v, layout)
    want = reference.spava_attention(q.double(), k.double(), v.double(), layout)
    dense_err = fp8.rmse(fp8.fp8_attention(q, k, v),
                         reference.dense_causal_attention(q.double(), k.double(), v.double()))
    assert 0 < fp8.rmse(got, want) <= 1.3 * dense_err


def test_attn_fwd_rounds_probabilities_to_e4m3():
    """One row, two keys of one block with probabilities 1 and 0.6: the product with V takes
    e4m3(0.6) = 0.625, the row sum the unrounded 1.6."""
    c = 0.5 * math.log2(math.e)  # softmax_scale 0.5
    k = torch.zeros(1, 2, 1, 16)
    k[0, 1, 0, 0] = -1.0
    v = torch.zeros(1, 2, 1, 16)
    v[0, 0, 0, 0], v[0, 1, 0, 0], v[0, 1, 0, 1] = 448.0, 2.0, 448.0
    ones = torch.ones(1, 2, 1)
    ks = torch.full((1, 2, 1), -math.log2(0.6) / c)  # x = q8 k8 * c * ks = log2(0.6)
    src = fp8.Source(k, v, ks, ones, torch.zeros(2, dtype=torch.long))
    q = torch.zeros(1, 1, 1, 16)
    q[0, 0, 0, 0] = 1.0
    out, lse = fp8.attn_fwd(q, torch.ones(1, 1, 1), [fp8.Segment(src, 0, 2)], 0.5)
    assert out[0, 0, 0, 0].item() == pytest.approx((448 + 0.625 * 2) / 1.6, rel=1e-6)
    assert out[0, 0, 0, 1].item() == pytest.approx(0.625 * 448 / 1.6, rel=1e-6)
    assert lse.item() == pytest.approx(math.log(1.6), rel=1e-6)
