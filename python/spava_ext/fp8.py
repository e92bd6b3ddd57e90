"""The FP8 (e4m3) attention scheme, as a reference: what the FP8 ``attn_fwd`` computes,
emulated with torch's float8_e4m3fn, so that its accuracy is measured against fp64 before (and
besides) the kernel, and the kernel is tested against it (docs/kernels/attn_fp8.md).

* Quantisation (FlashAttention-3's, per block): Q, K and V in blocks of ``block`` rows and per
  head, ``x8 = e4m3(x * (1 / s))`` with ``s = amax(|x|) / 448`` over the block (fp32; 448 is
  e4m3's largest finite value; at least 2^-126 so that ``1 / s`` is finite; 1 for an all-zero
  block), rounded to nearest even and saturated to +-448. :func:`quantize` is what the op
  ``spava_ext.ops.quantize_fp8`` computes, byte for byte. Each rank quantises the rows it owns
  once, and its passing blocks and anchor slice as it sends them (:func:`quantize_source`:
  blocks restart at every part).
* Attention (:func:`attn_fwd`): key tiles follow the quantisation blocks, so each tile has one K
  and one V scale; scores ``q8 k8^T`` are exact products accumulated in fp32, scaled by the
  row's Q scale, the tile's K scale and the softmax scale; softmax online in fp32; the
  probabilities, with the tile's V scale folded in relative to the largest V scale so far, are
  rounded to e4m3 for the second product; row sums from the unrounded probabilities.
* Optionally Q and K are rotated first by one orthonormal Hadamard matrix (incoherent
  processing): ``(q H)(k H)^T = q k^T`` exactly, while the rotation spreads an outlier
  coordinate over all D, so one large entry no longer sets a whole block's scale.
  :func:`rotate_hadamard` applies it as the kernels do: fp32 Walsh-Hadamard butterflies, then
  ``* fp32(1 / sqrt(D))``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

__all__ = ["E4M3_MAX", "quantize_blocks", "dequantize_blocks", "hadamard", "rotate_hadamard",
           "quantize", "Source", "quantize_source", "Segment", "attn_fwd", "quantize_rows",
           "fp8_attention", "bf16_attention", "rmse"]

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


# ------------------------------------------------------------- the FP8 kernel's arithmetic
class Source(NamedTuple):
    """Quantised rows of one key source as the FP8 kernel reads them: e4m3 values (held in
    fp32) ``k, v [B, R, Hkv, D]``, each row's block scales ``ks, vs [B, R, Hkv]`` and block id
    ``block [R]`` (rows of one block share its scales; a key tile never spans two blocks)."""

    k: torch.Tensor
    v: torch.Tensor
    ks: torch.Tensor
    vs: torch.Tensor
    block: torch.Tensor


def quantize_source(k: torch.Tensor, v: torch.Tensor, block: int = 128, rotate: bool = False,
                    parts: Sequence[int] | None = None) -> Source:
    """``k, v [B, R, Hkv, D]`` quantised as the rank that owns them does: each part (``parts``:
    row counts summing to R, e.g. the W passing blocks of a gather buffer; default one part)
    in blocks of ``block`` rows from its own first row; ``rotate``: K rotated first."""
    parts = [k.shape[1]] if parts is None else list(parts)
    if sum(parts) != k.shape[1]:
        raise ValueError(f"quantize_source: parts {parts} do not sum to {k.shape[1]} rows")
    cols: list[list[torch.Tensor]] = [[], [], [], [], []]
    r0 = first_block = 0
    for n in parts:
        kp = k[:, r0 : r0 + n].float()
        kq, ksc = quantize_blocks(rotate_hadamard(kp) if rotate else kp, block)
        vq, vsc = quantize_blocks(v[:, r0 : r0 + n].float(), block)
        ids = torch.arange(n, device=k.device) // block
        for col, x in zip(cols, (kq.float(), vq.float(), ksc[:, ids], vsc[:, ids],
                                 first_block + ids)):
            col.append(x)
        r0, first_block = r0 + n, first_block + math.ceil(n / block)
    return Source(*(torch.cat(c, dim=1 if i < 4 else 0) for i, c in enumerate(cols)))


class Segment(NamedTuple):
    """Rows ``[first, first + rows)`` of ``source``, visible to query rows ``i >= row_begin``
    up to segment key ``j <= i + diag`` (``attn_fwd``'s segment rule)."""

    source: Source
    first: int
    rows: int
    row_begin: int = 0
    diag: int = 2**62


def attn_fwd(q8: torch.Tensor, q_scale: torch.Tensor, segments: Sequence[Segment],
             softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What the FP8 ``attn_fwd`` computes (docs/kernels/attn_fp8.md), in fp32: ``q8 [B, Lq,
    Hq, D]`` e4m3 values (held in any float dtype) with per-row scales ``q_scale [B, Lq, Hq]``,
    the keys of ``segments`` in order, one key tile per run of rows of one quantisation block.
    Per tile t (K scale ``ks_t``, V scale ``vs_t``; ``M_t``: the running max of the V scales)
    and query row i (scale ``qs_i``), ``c = softmax_scale * log2(e)``:

    * ``x = (q8 k8^T) * (c * qs_i * ks_t)``, hidden keys ``-inf``; running max ``m`` of x;
    * ``p = exp2(x - m + log2(vs_t / M_t))`` (at most 1: the V scale is folded in, so that
      e4m3's range serves the largest V block), ``l += rowsum(p) * M_t / vs_t`` (fp32, p
      unrounded);
    * ``o = o * exp2(m_old - m) * M_old / M_t + e4m3(p) v8``;

    ``out = o * M / l`` and ``lse = (m + log2 l) * ln 2``; rows without a visible key get
    ``out = 0`` and ``lse = -inf``. Returns ``(out [B, Lq, Hq, D], lse [B, Hq, Lq])``."""
    B, Lq, Hq, D = q8.shape
    Hkv = segments[0].source.k.shape[2] if segments else 1
    G = Hq // Hkv
    c = softmax_scale * math.log2(math.e)
    dev = q8.device
    qg = q8.float().view(B, Lq, Hkv, G, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, Lq, D]
    qs = (q_scale.float() * c).view(B, Lq, Hkv, G).permute(0, 2, 3, 1)  # [B, Hkv, G, Lq]
    m = torch.full((B, Hkv, G, Lq), -math.inf, device=dev)
    l = torch.zeros(B, Hkv, G, Lq, device=dev)
    o = torch.zeros(B, Hkv, G, Lq, D, device=dev)
    vmax = torch.zeros(B, Hkv, 1, 1, device=dev)
    rows = torch.arange(Lq, device=dev)
    for seg in segments:
        ids = seg.source.block[seg.first : seg.first + seg.rows]
        cuts = [0] + (torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1).tolist() + [seg.rows]
        for a, b in zip(cuts[:-1], cuts[1:]):
            if a == b:
                continue
            r0, r1 = seg.first + a, seg.first + b
            keys = torch.arange(a, b, device=dev)
            seen = (rows[:, None] >= seg.row_begin) & (keys[None, :] <= rows[:, None] + seg.diag)
            if not bool(seen.any()):
                continue  # the kernel visits no tile that every row hides
            src = seg.source
            ks = src.ks[:, r0, :, None, None]  # [B, Hkv, 1, 1]: one block, one scale
            vs = src.vs[:, r0, :, None, None]
            kt = src.k[:, r0:r1].permute(0, 2, 1, 3)  # [B, Hkv, n, D]
            vt = src.v[:, r0:r1].permute(0, 2, 1, 3)
            x = torch.einsum("bhgqd,bhkd->bhgqk", qg, kt) * (qs * ks)[..., None]
            x = x.masked_fill(~seen, -math.inf)
            m_new = torch.maximum(m, x.amax(dim=-1))
            base = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
            vmax_new = torch.maximum(vmax, vs)
            ratio = vs / vmax_new
            p = torch.exp2(x - base[..., None] + torch.log2(ratio)[..., None])
            alpha = torch.exp2(m - base)
            l = l * alpha + p.sum(dim=-1) / ratio
            o = (o * (alpha * vmax / vmax_new)[..., None]
                 + torch.einsum("bhgqk,bhkd->bhgqd", p.to(torch.float8_e4m3fn).float(), vt))
            m, vmax = m_new, vmax_new
    empty = l == 0
    out = torch.where(empty[..., None], torch.zeros_like(o), o * vmax[..., None] / l[..., None])
    lse = torch.where(empty, torch.full_like(l, -math.inf), (m + torch.log2(l)) * math.log(2))
    return (out.permute(0, 3, 1, 2, 4).reshape(B, Lq, Hq, D),
            lse.reshape(B, Hq, Lq))


def quantize_rows(x: torch.Tensor, block: int = 128, rotate: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Query rows ``x [B, L, Hq, D]`` as the FP8 kernel takes them: e4m3 values (fp32) of
    :func:`quantize_blocks` (of the rotated rows with ``rotate``) and each row's scale
    ``[B, L, Hq]``."""
    xf = x.float()
    values, scale = quantize_blocks(rotate_hadamard(xf) if rotate else xf, block)
    ids = torch.arange(x.shape[1], device=x.device) // block
    return values.float(), scale[:, ids]


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                  softmax_scale: float | None = None, rotate: bool = False,
                  block: int = 128) -> torch.Tensor:
    """Attention through the FP8 kernel's arithmetic (:func:`attn_fwd`; fp32 result
    ``[B, Lq, Hq, D]``): Q, K and V quantised in blocks of ``block`` rows, causal aligned at
    the end (``Lq <= Lk``); ``rotate``: incoherent processing of Q and K (D a power of two)."""
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    q8, qs = quantize_rows(q, block, rotate)
    src = quantize_source(k, v, block, rotate)
    Lq, Lk = q.shape[1], k.shape[1]
    seg = Segment(src, 0, Lk, diag=Lk - Lq if causal else 2**62)
    return attn_fwd(q8, qs, [seg], scale)[0]


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                   softmax_scale: float | None = None) -> torch.Tensor:
    """The bf16 path's numerics: inputs and probabilities rounded to bf16, fp32 accumulation."""
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    q, k, v = (x.to(torch.bfloat16).float() for x in (q, k, v))
    return _attention(q, k, v, causal, scale, torch.bfloat16)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square of ``a - b`` (in fp64)."""
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def spava_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout,
                    softmax_scale: float | None = None, rotate: bool = False,
                    block: int = 128) -> torch.Tensor:
    """Spava attention of the whole sequence (``q, k, v [B, L, H, D]``; every rank emulated in
    this process) with the FP8 attention's arithmetic (:func:`attn_fwd`), as the FP8 schedule
    runs it: the passing blocks are selected from the unquantised rows; each rank quantises
    its own rows once (Q, K, V in blocks of ``block`` local rows) and its passing blocks and
    anchor slice as it sends them; every problem's keys are the spans of
    :func:`spava_ext.attention.key_spans`; the question rows' partials merge in fp32. Returns
    fp32 ``[B, L, Hq, D]``."""
    from . import ops, reference
    from .attention import ANCHOR, LOCAL, PASSING1, PASSING2, anchor_send, key_spans, \
        problem_specs

    W, scale = layout.world_size, q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    shards = [[layout.shard(t, r) for t in (q, k, v)] for r in range(W)]
    anchor_gather, passing = layout.shard_anchor and layout.anchor_len > 0, layout.passing_cap > 0
    sent: dict[int, list[torch.Tensor]] = {ANCHOR: [], PASSING1: [], PASSING2: []}
    for r, (qr, kr, vr) in enumerate(shards):  # what each rank sends: [cap, 2, B, Hkv, D]
        seg = layout.local_segments(r)
        if passing:
            p = layout.passing_cap if layout.passing_len is None else layout.passing_len
            _, send = ops.select_passing(qr[:, seg.question_start :], kr, vr,
                                         [seg.chunk1_start, seg.chunk2_start],
                                         [seg.chunk1, seg.chunk2], p, layout.pool_kernel,
                                         capacity=layout.passing_cap)
            sent[PASSING1].append(send[0])
            sent[PASSING2].append(send[1])
        if anchor_gather:
            sent[ANCHOR].append(anchor_send(kr, vr, layout, r))
    gathered = {}
    for src, parts in sent.items():  # the gather buffers, each part quantised by its sender
        if parts:
            buf = torch.stack(parts).flatten(0, 1)  # [W * cap, 2, B, Hkv, D]
            gathered[src] = quantize_source(buf[:, 0].transpose(0, 1), buf[:, 1].transpose(0, 1),
                                            block, rotate, [parts[0].shape[0]] * W)
    outs, partials = [], []
    for r, (qr, kr, vr) in enumerate(shards):
        sources = {LOCAL: quantize_source(kr, vr, block, rotate), **gathered}
        q8, qs = quantize_rows(qr, block, rotate)
        out = torch.zeros(qr.shape, dtype=torch.float32, device=q.device)
        for name, ((r0, r1), _) in problem_specs(layout, r, anchor_gather, passing).items():
            segs = [Segment(sources[sp.source], sp.first, sp.rows, sp.row_begin, sp.diag)
                    for sp in key_spans(layout, r, name)]
            o, lse = attn_fwd(q8[:, r0:r1], qs[:, r0:r1], segs, scale)
            if name == "question":
                partials.append((o, lse))
            else:
                out[:, r0:r1] = o
        outs.append(out)
    merged, _ = reference.merge_states(torch.stack([o for o, _ in partials]),
                                       torch.stack([lse for _, lse in partials]))
    for out in outs:
        out[:, layout.question_start - layout.seq_len :] = merged
    return layout.unshard(outs)
