"""The FP8 scheme's reference (spava_ext.fp8): per-block e4m3 quantisation, the Hadamard
rotation, and the scheme's attention error against fp64."""

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
