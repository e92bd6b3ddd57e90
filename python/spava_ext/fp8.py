"""The FP8 (e4m3) attention scheme, as a reference: what an FP8 ``attn_fwd`` computes, emulated
with torch's float8_e4m3fn, so its accuracy can be measured against fp64 before (and besides)
the kernel.

Scheme (FlashAttention-3's, per block):

* Q, K and V are quantised per block of ``block`` rows and per head: ``x8 = e4m3(x * (1 / s))``
  with ``s = amax(|x|) / 448`` over the block (fp32; 448 is e4m3's largest finite value; at least
  2^-126 so that ``1 / s`` is finite; 1 for an all-zero block), rounded to nearest even and
  saturated to +-448. The scales fold into the softmax scale (Q, K) and the output (V).
  :func:`quantize` is what the op ``spava_ext.ops.quantize_fp8`` computes, byte for byte.
* Scores ``q k^T`` are exact products of e4m3 values accumulated in fp32; softmax in fp32; the
  unnormalised probabilities ``exp(s - rowmax)`` (in [0, 1]) are cast to e4m3 for the second
  product, the row sums are kept in fp32 from the unrounded probabilities.
* Optionally Q and K are rotated first by one orthonormal Hadamard matrix (incoherent
  processing): ``(q H)(k H)^T = q k^T`` exactly, while the rotation spreads an outlier
  coordinate over all D, so one large entry no longer sets a whole block's scale.
  :func:`rotate_hadamard` applies it as the kernels do: fp32 Walsh-Hadamard butterflies, then
  ``* fp32(1 / sqrt(D))``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["E4M3_MAX", "quantize_blocks", "dequantize_blocks", "hadamard", "rotate_hadamard",
           "quantize", "fp8_attention", "bf16_attention", "rmse"]

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
_MIN_SCALE = torch.finfo(torch.float32).tiny  # 2^-126: 1 / scale stays finite


def quantize_blocks(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B, L, H, D]`` -> (e4m3 values ``[B, L, H, D]``, fp32 scales ``[B, ceil(L / block),
    H]``): per block of ``block`` rows and head, ``x ~= values * scale``. An all-zero block gets
    scale 1. Computed in fp32 on x's device (the bytes of the CUDA and CPU ops: on CPU)."""
    if x.dim() != 4 or block < 1:
        raise ValueError(f"quantize_blocks: x must be [B, L, H, D] and block >= 1, got "
                         f"{tuple(x.shape)}, block = {block}")
    B, L, H, D = x.shape
    nb = math.ceil(L / block)
    padded = torch.zeros(B, nb * block, H, D, dtype=torch.float32, device=x.device)
    padded[:, :L] = x.float()
    amax = padded.view(B, nb, block, H, D).abs().amax(dim=(2, 4))  # [B, nb, H]
    scale = torch.where(amax > 0, (amax / E4M3_MAX).clamp_min(_MIN_SCALE), torch.ones_like(amax))
    inv = (1 / scale).repeat_interleave(block, dim=1)[:, :L, :, None]  # [B, L, H, 1]
    values = (x.float() * inv).clamp(-E4M3_MAX, E4M3_MAX)  # torch's cast saturates only lately
    return values.to(torch.float8_e4m3fn), scale


def dequantize_blocks(values: torch.Tensor, scale: torch.Tensor, block: int = 128
                      ) -> torch.Tensor:
    """fp32 ``values * scale`` (the inverse of :func:`quantize_blocks`, up to e4m3 rounding)."""
    L = values.shape[1]
    return values.float() * scale.repeat_interleave(block, dim=1)[:, :L, :, None]


def hadamard(d: int, device=None) -> torch.Tensor:
    """The orthonormal Hadamard matrix of order ``d`` (a power of two), fp32 ``[d, d]``."""
    if d < 1 or d & (d - 1):
        raise ValueError(f"hadamard: the order must be a power of two, got {d}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(d)).to(dtype=torch.float32, device=device)


def rotate_hadamard(x: torch.Tensor) -> torch.Tensor:
    """``x @ hadamard(D)`` over the last dim (D a power of two) in fp32, computed as the kernels
    do: butterfly stages h = 1, 2, ..., D / 2 taking elements ``i`` (bit h clear) and ``i + h``
    to ``(a + b, a - b)``, then ``* fp32(1 / sqrt(D))``."""
    D = x.shape[-1]
    if D < 1 or D & (D - 1):
        raise ValueError(f"rotate_hadamard: the head dim must be a power of two, got {D}")
    y = x.float()
    h = 1
    while h < D:
        pairs = y.reshape(*y.shape[:-1], D // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack([a + b, a - b], dim=-2).reshape(y.shape)
        h *= 2
    return y * torch.tensor(1 / math.sqrt(D), dtype=torch.float32)


def quantize(x: torch.Tensor, block: int = 128, rotate: bool = False, transpose: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``spava_ext.ops.quantize_fp8`` returns (the same bytes; compute it on CPU): the
    values of :func:`quantize_blocks` of ``x`` (of ``rotate_hadamard(x)`` with ``rotate``),
    with ``transpose`` as ``[B, H, D, ceil(L / 16) * 16]`` (columns >= L zero), and the
    scales."""
    values, scale = quantize_blocks(rotate_hadamard(x) if rotate else x, block)
    if transpose:
        B, L, H, D = x.shape
        padded = torch.zeros(B, H, D, math.ceil(L / 16) * 16, dtype=torch.uint8, device=x.device)
        padded[..., :L] = values.view(torch.uint8).permute(0, 2, 3, 1)
        values = padded.view(torch.float8_e4m3fn)
    return values, scale


def _attention(q, k, v, causal: bool, scale: float, p_dtype: torch.dtype) -> torch.Tensor:
    """fp32 attention of fp32 ``q [B, Lq, Hq, D]``, ``k, v [B, Lk, Hkv, D]`` (GQA), the
    unnormalised probabilities rounded to ``p_dtype`` before the product with V."""
    B, Lq, Hq, D = q.shape
    Hkv = k.shape[2]
    qg = q.view(B, Lq, Hkv, Hq // Hkv, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, Lq, D]
    s = torch.einsum("bhgqd,bkhd->bhgqk", qg, k) * scale
    if causal:
        Lk = k.shape[1]
        keep = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
        s = s.masked_fill(~keep, -math.inf)
    p = torch.exp(s - s.amax(dim=-1, keepdim=True))
    out = torch.einsum("bhgqk,bkhd->bhgqd", p.to(p_dtype).to(s.dtype), v) / p.sum(-1, True)
    return out.permute(0, 3, 1, 2, 4).reshape(B, Lq, Hq, D)


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                  softmax_scale: float | None = None, rotate: bool = False,
                  block: int = 128) -> torch.Tensor:
    """Attention under the FP8 scheme of this module (fp32 result ``[B, Lq, Hq, D]``);
    ``rotate``: incoherent processing of Q and K (D a power of two)."""
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    q, k = q.float(), k.float()
    if rotate:
        q, k = rotate_hadamard(q), rotate_hadamard(k)
    qd, kd, vd = (dequantize_blocks(*quantize_blocks(x, block), block) for x in (q, k, v))
    return _attention(qd, kd, vd, causal, scale, torch.float8_e4m3fn)


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                   softmax_scale: float | None = None) -> torch.Tensor:
    """The bf16 path's numerics: inputs and probabilities rounded to bf16, fp32 accumulation."""
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    q, k, v = (x.to(torch.bfloat16).float() for x in (q, k, v))
    return _attention(q, k, v, causal, scale, torch.bfloat16)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square of ``a - b`` (in fp64)."""
    return float((a.double() - b.double()).pow(2).mean().sqrt())
