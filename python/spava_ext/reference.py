"""Pure-PyTorch references: every op and the whole Spava algorithm on the full sequence.

Readable, fp32 math, no performance ambitions. Every kernel and the distributed path are tested
against these. Conventions shared with the ops:

* ``q [B, Lq, Hq, D]``, ``k, v [B, Lk, Hkv, D]``; q head ``h*G + g`` uses kv head ``h`` (G = Hq/Hkv).
* ``lse [B, Hq, Lq]`` is the fp32 **natural-log** log-sum-exp of the scaled scores of a row;
  a row with no visible key has ``out = 0`` and ``lse = -inf``.
* Key segment ``s`` (``k[s], v[s] [B, Ls, Hkv, D]``) is visible to query row ``i`` at key ``j`` iff
  ``i >= row_begin[s] and j <= i + diag[s]`` (``diag >= Ls - 1`` and ``row_begin <= 0``: full).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .layout import SpavaLayout

__all__ = [
    "default_softmax_scale",
    "masked_attention",
    "dense_causal_attention",
    "attn_fwd",
    "merge_states",
    "passing_scores",
    "select_passing",
    "select_all_chunks",
    "allowed_mask",
    "spava_attention",
]


# ---------------------------------------------------------------------------------- attention
def default_softmax_scale(head_dim: int) -> float:
    """The softmax scale when none is given: ``head_dim ** -0.5`` (docs/design.md "Defaults")."""
    return head_dim ** -0.5


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale * q k^T over allowed keys) v, in fp32 (or in q's dtype if not ``upcast``:
    the low-precision baseline whose error sets test tolerances).

    q [B, Lq, Hq, D], k/v [B, Lk, Hkv, D], mask bool broadcastable to [B, Hkv, Lq, Lk]
    (per kv head; shared by the G query heads of the group).
    Returns out [B, Lq, Hq, D] and lse [B, Hq, Lq] (fp32 when upcast).
    """
    B, Lq, Hq, D = q.shape
    Hkv = k.shape[2]
    G = Hq // Hkv
    dt = torch.float32 if upcast else q.dtype
    qf = q.to(dt).view(B, Lq, Hkv, G, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, Lq, D]
    kf = k.to(dt).permute(0, 2, 1, 3)  # [B, Hkv, Lk, D]
    vf = v.to(dt).permute(0, 2, 1, 3)
    scores = torch.einsum("bhgqd,bhkd->bhgqk", qf, kf) * scale
    mask = mask.expand(B, Hkv, Lq, k.shape[1]).unsqueeze(2)  # [B, Hkv, 1, Lq, Lk]
    scores = scores.masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)  # [B, Hkv, G, Lq]; -inf for empty rows
    probs = torch.exp(scores - lse.unsqueeze(-1))
    probs = torch.where(mask, probs, torch.zeros_like(probs))  # empty rows: 0 instead of NaN
    out = torch.einsum("bhgqk,bhkd->bhgqd", probs, vf)
    out = out.permute(0, 3, 1, 2, 4).reshape(B, Lq, Hq, D)
    return out, lse.reshape(B, Hq, Lq)


def dense_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: Optional[float] = None
) -> torch.Tensor:
    """Plain causal attention over the full sequence (fp32 result)."""
    L = q.shape[1]
    scale = default_softmax_scale(q.shape[-1]) if softmax_scale is None else softmax_scale
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    return masked_attention(q, k, v, causal, scale)[0]


def segment_mask(
    lq: int, seg_lens: Sequence[int], row_begin: Sequence[int], diag: Sequence[int], device=None
) -> torch.Tensor:
    """bool [Lq, sum(seg_lens)]: the visibility rule of ``attn_fwd`` for concatenated segments."""
    rows = torch.arange(lq, device=device).unsqueeze(1)
    parts = []
    for n, rb, d in zip(seg_lens, row_begin, diag):
        d = min(max(d, -lq), n)  # the same mask for rows < lq, keys < n; rows + d cannot overflow
        cols = torch.arange(n, device=device).unsqueeze(0)
        parts.append((rows >= rb) & (cols <= rows + d))
    if not parts:
        return torch.zeros(lq, 0, dtype=torch.bool, device=device)
    return torch.cat(parts, dim=1)


def attn_fwd(
    q: torch.Tensor,
    k: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    row_begin: Sequence[int],
    diag: Sequence[int],
    softmax_scale: Optional[float] = None,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``spava::attn_fwd``: out fp32 [B, Lq, Hq, D], lse fp32 [B, Hq, Lq]."""
    scale = default_softmax_scale(q.shape[-1]) if softmax_scale is None else softmax_scale
    B, Lq, _, D = q.shape
    Hkv = k[0].shape[2] if k else 1
    kk = torch.cat(list(k), dim=1) if k else q.new_zeros(B, 0, Hkv, D)
    vv = torch.cat(list(v), dim=1) if v else q.new_zeros(B, 0, Hkv, D)
    mask = segment_mask(Lq, [t.shape[1] for t in k], row_begin, diag, q.device)
    return masked_attention(q, kk, vv, mask, scale, upcast)


def merge_states(outs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``spava::merge_states``: LSE merge of n partial attention states.

    outs [n, B, R, H, D] (normalised partial outputs), lses [n, B, H, R] natural-log LSE.
    Returns out fp32 [B, R, H, D] and lse fp32 [B, H, R]; parts with lse = -inf weigh 0.
    """
    lses = lses.float()
    lse = torch.logsumexp(lses, dim=0)  # [B, H, R]
    w = torch.exp(lses - lse)  # NaN where every part is empty
    w = torch.where(torch.isneginf(lses), torch.zeros_like(w), w)
    out = (w.permute(0, 1, 3, 2).unsqueeze(-1) * outs.float()).sum(dim=0)
    return out, lse


# ---------------------------------------------------------------------------------- selection
def passing_scores(
    q_question: torch.Tensor, k_chunk: torch.Tensor, pool_kernel: int
) -> torch.Tensor:
    """Smoothed selection scores of one chunk: fp32 [B, Hkv, Lc].

    ``qsum[h] = sum over question rows t and group heads g of q[t, h*G+g]`` (fp32), then
    ``score[j, h] = k[j, h] . qsum[h]`` (no scale, no softmax), then a max-pool of width
    ``pool_kernel`` whose window is clipped to the chunk. docs/design.md (Selection) scores with the mean
    (``mean_t k . qbar[t]``); the sum is ``nq * G`` times it, so the selection is the same, and
    with small-integer inputs every implementation computes bit-identical scores.
    """
    B, nq, Hq, D = q_question.shape
    Hkv = k_chunk.shape[2]
    qsum = q_question.float().view(B, nq, Hkv, Hq // Hkv, D).sum(dim=(1, 3))  # [B, Hkv, D]
    score = torch.einsum("bjhd,bhd->bhj", k_chunk.float(), qsum)
    if k_chunk.shape[1] == 0:
        return score
    return F.max_pool1d(score, pool_kernel, stride=1, padding=pool_kernel // 2)


def select_passing(
    q_question: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_starts: Sequence[int],
    chunk_lens: Sequence[int],
    passing_len: int,
    pool_kernel: int,
    capacity: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``spava::select_passing``.

    For chunk c (``k[:, chunk_starts[c] : + chunk_lens[c]]``), batch b and kv head h, keep the
    ``m_c = min(passing_len, chunk_lens[c])`` positions with the largest smoothed score; ties go to
    the lower position. NaN (docs/design.md "Non-finite inputs"): a pooling window holding a NaN
    score is NaN (``max_pool1d`` propagates it) and NaN ranks above every number, NaNs among
    themselves by position (``torch.sort`` orders NaN above +inf, stably). Returns

    * indices int64 [C, B, Hkv, cap]: kept positions along k's dim 1, ascending; -1 past m_c;
    * kv [C, cap, 2, B, Hkv, D] in k's dtype: kv[c, i, 0] = k rows, kv[c, i, 1] = v rows; 0 past m_c.

    ``cap`` defaults to ``max_c m_c``.
    """
    B, _, Hkv, D = k.shape
    sizes = [min(passing_len, n) for n in chunk_lens]
    cap = max(sizes, default=0) if capacity is None else capacity
    indices = torch.full((len(sizes), B, Hkv, cap), -1, dtype=torch.long, device=k.device)
    kv = torch.zeros(len(sizes), cap, 2, B, Hkv, D, dtype=k.dtype, device=k.device)
    for c, (start, n, m) in enumerate(zip(chunk_starts, chunk_lens, sizes)):
        if m == 0:
            continue
        smooth = passing_scores(q_question, k[:, start : start + n], pool_kernel)
        # Stable descending sort: equal scores keep position order, so the lower position wins.
        order = torch.sort(smooth, dim=-1, descending=True, stable=True).indices[..., :m]
        pos = torch.sort(order, dim=-1).values + start  # [B, Hkv, m]
        indices[c, :, :, :m] = pos
        for b in range(B):
            for h in range(Hkv):
                kv[c, :m, 0, b, h] = k[b, pos[b, h], h]
                kv[c, :m, 1, b, h] = v[b, pos[b, h], h]
    return indices, kv


def select_all_chunks(q: torch.Tensor, k: torch.Tensor, layout: SpavaLayout) -> torch.Tensor:
    """bool [B, Hkv, L]: True at the key positions that some passing block selects."""
    B, L, Hkv, _ = k.shape
    selected = torch.zeros(B, Hkv, L, dtype=torch.bool, device=k.device)
    q_question = q[:, layout.question_start :]
    p = max(layout.chunk_sizes) if layout.passing_len is None else layout.passing_len
    idx, _ = select_passing(q_question, k, k, layout.chunk_starts, layout.chunk_sizes, p,
                            layout.pool_kernel)
    for c in range(layout.num_chunks):
        m = layout.passing_sizes[c]
        if m:
            selected.scatter_(2, idx[c, :, :, :m], True)
    return selected


# ---------------------------------------------------------------------------------- Spava
def allowed_mask(q: torch.Tensor, k: torch.Tensor, layout: SpavaLayout) -> torch.Tensor:
    """bool [B, Hkv, L, L]: which key y each query row x may attend (docs/design.md, Visibility).

    anchor rows: anchor keys y <= x;  rows of chunk C_i: all anchor keys, the selected keys of
    every C_j with j < i, keys y <= x of C_i;  question rows: every key y <= x.
    """
    L = layout.seq_len
    pos = torch.arange(L, device=k.device)
    # chunk id of each position: -1 anchor, i for C_i, 2W for the question
    cid = torch.full((L,), -1, dtype=torch.long, device=k.device)
    for i in range(layout.num_chunks):
        s, e = layout.chunk_bounds(i)
        cid[s:e] = i
    cid[layout.question_start :] = layout.num_chunks
    causal = pos.unsqueeze(1) >= pos.unsqueeze(0)  # [x, y]
    cq, ck = cid.unsqueeze(1), cid.unsqueeze(0)
    always = (cq == ck) | (ck == -1) | (cq == layout.num_chunks)  # same block, anchor, question
    earlier = ck < cq  # key in an earlier chunk: visible only if selected
    selected = select_all_chunks(q, k, layout).unsqueeze(2)  # [B, Hkv, 1, y]
    return causal & (always | (earlier & selected))


def spava_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SpavaLayout,
    softmax_scale: Optional[float] = None,
    upcast: bool = True,
) -> torch.Tensor:
    """Spava attention on the full sequence: q [B, L, Hq, D], k/v [B, L, Hkv, D] -> [B, L, Hq, D]
    in q's dtype (fp32 math unless ``upcast=False``)."""
    if q.shape[1] != layout.seq_len:
        raise ValueError(f"reference.spava_attention: q has {q.shape[1]} rows, layout expects "
                         f"{layout.seq_len}")
    scale = default_softmax_scale(q.shape[-1]) if softmax_scale is None else softmax_scale
    out, _ = masked_attention(q, k, v, allowed_mask(q, k, layout), scale, upcast)
    return out.to(q.dtype)
