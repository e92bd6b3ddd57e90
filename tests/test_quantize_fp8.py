"""spava::quantize_fp8 (ops.quantize_fp8): the bytes and scales of the reference
spava_ext.fp8.quantize (computed on CPU) on both devices, on random irregular shapes, strided
views, all-zero and saturating blocks, with and without rotation / the transposed layout."""

import math

import pytest
import torch

from spava_ext import fp8, ops
from utils import DEVICES

E4M3 = torch.float8_e4m3fn
SHAPES = [(1, 1, 1, 64), (2, 127, 3, 128), (1, 128, 5, 64), (2, 129, 2, 80), (1, 1000, 4, 128)]


def make_x(shape, dtype, seed, device="cpu"):
    """Gaussian x with a magnitude of its own per (batch, head): blocks get different scales."""
    g = torch.Generator().manual_seed(seed)
    B, L, H, D = shape
    x = torch.randn(shape, generator=g) * torch.exp(2 * torch.randn(B, 1, H, 1, generator=g))
    return x.to(dtype=dtype, device=device)


def packed_view(x):
    """x as the K rows of a packed [L, 2, B, H, D] send buffer: [B, L, H, D] with strides of the
    buffer (rows 2 * B * H * D apart, batch H * D)."""
    B, L, H, D = x.shape
    buf = torch.full((L, 2, B, H, D), 7.0, dtype=x.dtype, device=x.device)
    buf[:, 0] = x.permute(1, 0, 2, 3)
    return buf[:, 0].permute(1, 0, 2, 3)


def assert_matches_reference(x, block=128, rotate=False, transpose=False):
    values, scales = ops.quantize_fp8(x, block, rotate, transpose)
    want_values, want_scales = fp8.quantize(x.cpu(), block, rotate, transpose)
    assert values.dtype == E4M3 and values.shape == want_values.shape and values.is_contiguous()
    torch.testing.assert_close(scales.cpu(), want_scales, atol=0, rtol=0)
    got, want = values.cpu().view(torch.uint8), want_values.view(torch.uint8)
    if not torch.equal(got, want):
        where = (got != want).nonzero()[0].tolist()
        raise AssertionError(f"{(got != want).sum()} bytes differ, first at {where}: "
                             f"{got[tuple(where)]} != {want[tuple(where)]}")
    return values, scales


def untranspose(values, L):
    """[B, H, D, L_pad] -> [B, L, H, D]."""
    return values.view(torch.uint8)[..., :L].permute(0, 3, 1, 2).contiguous().view(E4M3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_bytes_equal_reference(device, dtype, shape, rotate, transpose):
    if device == "cuda" and dtype == torch.float32:
        pytest.skip("CUDA takes bf16 / fp16")
    if rotate and shape[3] & (shape[3] - 1):
        pytest.skip("rotate needs a power-of-two head dim")
    x = make_x(shape, dtype, seed=sum(shape), device=device)
    values, scales = assert_matches_reference(x, 128, rotate, transpose)
    if transpose:
        L = shape[1]
        assert torch.all(values.view(torch.uint8)[..., L:] == 0)
        values = untranspose(values, L)
    # dequantised within e4m3's error: 3 mantissa bits (rounding <= 2^-4 relative) above the
    # subnormals (steps of 2^-9 * scale)
    y = fp8.rotate_hadamard(x.cpu()) if rotate else x.cpu().float()
    back = fp8.dequantize_blocks(values.cpu(), scales.cpu(), 128)
    floor = scales.cpu().repeat_interleave(128, dim=1)[:, :shape[1], :, None] * 2.0 ** -10
    assert torch.all((back - y).abs() <= y.abs() * (2.0 ** -4 + 2.0 ** -20) + floor)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [1, 16, 100, 512, 4096])
@pytest.mark.parametrize("D", [64, 80, 128, 256])
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_block_sizes(device, block, D, rotate, transpose):
    """Blocks of one row, of a size that is not a multiple of 4, and larger than the rows a CUDA
    thread keeps in registers or than L."""
    if rotate and D == 80:
        pytest.skip("rotate needs a power-of-two head dim")
    x = make_x((2, 1000, 3, D), torch.bfloat16, seed=block + D, device=device)
    assert_matches_reference(x, block, rotate, transpose)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_views(device, rotate, transpose):
    x = make_x((2, 300, 3, 128), torch.bfloat16, seed=3, device=device)
    k = packed_view(x)
    assert not k.is_contiguous()
    heads = torch.cat([x, x], dim=2)[:, :, 1:4]  # a slice of a wider tensor's heads
    for view in (k, heads, x[:, 50:250]):
        assert_matches_reference(view, 128, rotate, transpose)
    torch.testing.assert_close(ops.quantize_fp8(k, 128, rotate, transpose)[1],
                               ops.quantize_fp8(x, 128, rotate, transpose)[1], atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transpose", [False, True])
def test_zero_tiny_and_saturating_blocks(device, transpose):
    x = make_x((1, 384, 2, 64), torch.bfloat16, seed=4)
    x[:, :128, 0] = 0  # all zero: scale 1, zero bytes
    x[:, 128:256, 0] = 1e-38  # 1 / (amax / 448) would overflow: scale 2^-126
    x[:, 256:, 0, 5] = 3e38  # huge: every other entry of the block rounds to 0 or a subnormal
    x[:, 128:256, 1, 7] = -1e30
    values, scales = assert_matches_reference(x.to(device), 128, False, transpose)
    values = untranspose(values, 384) if transpose else values
    scales, bytes_ = scales.cpu(), values.cpu().view(torch.uint8)
    assert scales[0, 0, 0] == 1 and torch.all(bytes_[:, :128, 0] == 0)
    assert scales[0, 1, 0] == torch.finfo(torch.float32).tiny
    assert torch.all(values.cpu().float().isfinite())
    assert torch.all(bytes_[:, 256:, 0, 5] == 0x7E)  # +448
    assert torch.all(bytes_[:, 128:256, 1, 7] == 0xFE)  # -448


@pytest.mark.cuda
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_matches_cpu(rotate, transpose, dtype):
    x = make_x((2, 4133, 8, 128), dtype, seed=5)
    x[0, 1000:1100, 3] *= 1e4  # outliers
    cpu = ops.quantize_fp8(x, 128, rotate, transpose)
    gpu = ops.quantize_fp8(x.cuda(), 128, rotate, transpose)
    assert torch.equal(gpu[0].cpu().view(torch.uint8), cpu[0].view(torch.uint8))
    assert torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.parametrize("device", DEVICES)
def test_given_outputs(device):
    """Outputs passed in are written in place; scales may be any view."""
    x = make_x((2, 200, 3, 64), torch.float16, seed=6, device=device)
    values = torch.full((2, 3, 64, 208), 0x38, dtype=torch.uint8, device=device).view(E4M3)
    scales = torch.zeros(3, 2, 2, device=device).permute(1, 2, 0)  # [B, blocks, H], strided
    got = ops.quantize_fp8(x, 128, False, True, values=values, scales=scales)
    assert got[0] is values and got[1] is scales
    want_values, want_scales = fp8.quantize(x.cpu(), 128, False, True)
    assert torch.equal(values.cpu().view(torch.uint8), want_values.view(torch.uint8))
    assert torch.equal(scales.cpu(), want_scales)


def test_quantize_reference_layout():
    """fp8.quantize: the transposed values are the plain ones with the key index last."""
    x = make_x((2, 37, 3, 16), torch.float32, seed=7)
    plain, s1 = fp8.quantize(x, 8, rotate=True)
    t, s2 = fp8.quantize(x, 8, rotate=True, transpose=True)
    assert t.shape == (2, 3, 16, 48) and torch.equal(s1, s2)
    assert torch.equal(untranspose(t, 37).view(torch.uint8), plain.view(torch.uint8))
    assert torch.all(t.view(torch.uint8)[..., 37:] == 0)


def error_cases(device):
    x = make_x((1, 10, 2, 80), torch.bfloat16, seed=8, device=device)
    v = torch.empty(1, 10, 2, 80, dtype=E4M3, device=device)
    s = torch.empty(1, 1, 2, device=device)
    return [
        ((x[0], 128, False, False, v, s), ValueError, r"x must be \[B, L, H, D\]"),
        ((x, 0, False, False, v, s), ValueError, "block must be >= 1, got 0"),
        ((x, 128, True, False, v, s), ValueError, "power of two.*got 80"),
        ((x, 128, False, False, v.view(torch.uint8), s), TypeError, "float8_e4m3fn"),
        ((x, 128, False, True, v, s), ValueError, r"values must be \[B, H, D, ceil\(L / 16\) "
                                                  r"\* 16\] = \[1, 2, 80, 16\]"),
        ((x, 128, False, False, torch.empty_like(v).view(1, 2, 10, 80).transpose(1, 2), s),
         ValueError, "values must be contiguous"),
        ((x, 128, False, False, v, s.double()), TypeError, "scales must be fp32"),
        ((x, 5, False, False, v, s), ValueError, r"scales must be \[B, ceil\(L / block\), H\] = "
                                                 r"\[1, 2, 2\]"),
        ((x.int(), 128, False, False, v, s), TypeError, "x must be bf16, fp16 or fp32"),
        ((x.transpose(2, 3).contiguous().transpose(2, 3), 128, False, False, v, s), ValueError,
         "contiguous last dim"),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_errors(device):
    for args, error, match in error_cases(device):
        with pytest.raises(error, match="quantize_fp8.*" + match):
            torch.ops.spava.quantize_fp8(*args)
    with pytest.raises(ValueError, match=r"quantize_fp8: x must be \[B, L, H, D\]"):
        ops.quantize_fp8(torch.ones(3, 4, device=device))


@pytest.mark.cuda
def test_cuda_errors():
    x = make_x((1, 10, 2, 64), torch.bfloat16, seed=9, device="cuda")
    v, s = ops.quantize_fp8(x)
    with pytest.raises(ValueError, match="quantize_fp8: values and scales must be on x's device"):
        torch.ops.spava.quantize_fp8(x, 128, False, False, v.cpu(), s)
    with pytest.raises(TypeError, match="quantize_fp8: CUDA takes bf16 or fp16 x"):
        ops.quantize_fp8(x.float())
    with pytest.raises(ValueError, match="quantize_fp8: CUDA needs head dim D % 8 == 0"):
        ops.quantize_fp8(x[..., :60])
    with pytest.raises(NotImplementedError, match="quantize_fp8: CUDA rotates head dims up to"):
        ops.quantize_fp8(make_x((1, 10, 1, 512), torch.bfloat16, 9, "cuda"), rotate=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transpose", [False, True])
def test_opcheck(device, transpose):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    x = make_x((2, 150, 3, 64), dtype, seed=10, device=device)
    L_pad = math.ceil(150 / 16) * 16
    values = torch.empty((2, 3, 64, L_pad) if transpose else (2, 150, 3, 64), dtype=E4M3,
                         device=device)
    scales = torch.empty(2, 2, 3, device=device)
    # test_schema is left out: its SchemaCheckMode compares tensors with ops (mul) that torch
    # lacks for float8_e4m3fn; the mutations it would check are the schema's (a!) / (b!).
    torch.library.opcheck(torch.ops.spava.quantize_fp8.default,
                          (x, 128, True, transpose, values, scales),
                          test_utils=("test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))
