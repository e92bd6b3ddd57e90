"""Typed wrappers over ``torch.ops.spava.*`` and a fake (meta) kernel for each op.

All validation lives in C++; the wrappers only allocate outputs that were not passed in (and
reject what the dispatcher could not name, such as an empty problem list).
LSE values are fp32 **natural-log** log-sum-exp of the scaled scores of a row.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import NamedTuple, Optional, Sequence

import torch

from . import _C, envs  # noqa: F401  (_C: loads the library and its schemas)

__all__ = ["attn_fwd", "attn_fwd_group", "AttnProblem", "SpanGroup", "select_passing",
           "merge_states", "quantize_fp8", "wait_flag", "set_flag", "build_info", "uses_sm90",
           "set_attn_fallback", "set_attn_decode", "FULL", "SCHED_INTS", "MAX_PROBLEMS",
           "FP8_BLOCK"]

#: ``diag`` value for a segment that every row at or after ``row_begin`` sees entirely.
FULL = 2**62


@lru_cache(maxsize=None)
def build_info() -> dict:
    """What the loaded binary was compiled with: ``{"cuda": bool, "cuda_archs": str,
    "cuda_ops": [...], "attn_fwd_head_dims": [...], "attn_fwd_trace": bool,
    "attn_sched_ints": int, "attn_max_problems": int}``."""
    return json.loads(torch.ops.spava.build_info())


#: int32 elements of the ``sched`` workspace of :func:`attn_fwd_group` (kAttnSchedInts in
#: csrc/include/spava/attn_params.h: a 4-int header and one deferred unit per CTA).
SCHED_INTS: int = build_info()["attn_sched_ints"]
#: The most problems of one :func:`attn_fwd_group` launch (kMaxAttnProblems).
MAX_PROBLEMS: int = build_info()["attn_max_problems"]
#: Rows per K / V scale block of the FP8 path (kFp8Block): a key tile of the FP8 attention.
FP8_BLOCK: int = build_info()["fp8_block"]


# ---------------------------------------------------------------------------------- fakes
# Every op mutates preallocated outputs and returns nothing: the fakes only accept the call.
@torch.library.register_fake("spava::select_passing")
def _select_passing_fake(q, k, v, chunk_starts, chunk_lens, passing_len, pool_kernel, indices,
                         kv) -> None:
    return None


@torch.library.register_fake("spava::attn_fwd")
def _attn_fwd_fake(q, k, v, row_begin, diag, softmax_scale, out, lse) -> None:
    return None


@torch.library.register_fake("spava::attn_fwd_group")
def _attn_fwd_group_fake(q, num_segments, k, v, row_begin, diag, softmax_scale, out, lse, *,
                         ready=None, wait_for=(), sched=None, done=None, finish=False,
                         sm_budget=0, spin_us, timeout_s, spans=(), q_scale=(), k_scale=(),
                         v_scale=()) -> None:
    return None


@torch.library.register_fake("spava::wait_flag")
def _wait_flag_fake(flag) -> None:
    return None


@torch.library.register_fake("spava::set_flag")
def _set_flag_fake(flag) -> None:
    return None


@torch.library.register_fake("spava::merge_states")
def _merge_states_fake(outs, lses, out, lse) -> None:
    return None


@torch.library.register_fake("spava::quantize_fp8")
def _quantize_fp8_fake(x, block, rotate, transpose, values, scales) -> None:
    return None


# ---------------------------------------------------------------------------------- wrappers
def attn_fwd(
    q: torch.Tensor,
    k: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    row_begin: Sequence[int],
    diag: Sequence[int],
    softmax_scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment-masked attention with LSE, keys read from several tensors in place.

    Args:
        q: ``[B, Lq, Hq, D]`` bf16/fp16 (fp32 on CPU), last dim contiguous (any other strides).
        k, v: one ``[B, Ls, Hkv, D]`` tensor per key segment (views are fine; never concatenated).
        row_begin, diag: per segment; key ``j`` of segment ``s`` is visible to query row ``i`` iff
            ``i >= row_begin[s] and j <= i + diag[s]``. Use ``diag=FULL`` for a full segment and
            ``diag=0`` for causal attention aligned at the segment's first key.
        softmax_scale: default ``D ** -0.5``.
        out: ``[B, Lq, Hq, D]`` destination (q's dtype or fp32), allocated when None.
        lse: ``[B, Hq, Lq]`` fp32 destination, allocated when None.
        out_dtype: dtype of an allocated ``out`` (default q's dtype).

    Returns ``(out, lse)``; rows with no visible key have ``out = 0`` and ``lse = -inf``.

    On CUDA: the sm_90a kernel (H100/H200, :func:`uses_sm90`); other GPUs (or every GPU after
    :func:`set_attn_fallback`) run the same computation with ATen ops, tile by tile in fp32
    (correct, several times slower).
    """
    if out is None:
        out = q.new_empty(q.shape, dtype=out_dtype or q.dtype)
    if lse is None:
        lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    torch.ops.spava.attn_fwd(q, list(k), list(v), list(row_begin), list(diag), softmax_scale, out,
                             lse)
    return out, lse


class AttnProblem(NamedTuple):
    """One problem of :func:`attn_fwd_group`: query rows ``q`` with their key segments (the
    arguments of :func:`attn_fwd`), ``out`` (q's dtype or fp32), an optional ``lse``, and the
    index of the ready flag the problem waits for (``None``: none)."""

    q: torch.Tensor
    k: Sequence[torch.Tensor]
    v: Sequence[torch.Tensor]
    row_begin: Sequence[int]
    diag: Sequence[int]
    out: torch.Tensor
    lse: Optional[torch.Tensor] = None
    wait_for: Optional[int] = None


class SpanGroup(NamedTuple):
    """The problems of one :func:`attn_fwd_group` launch in the op's own flat form, their key
    segments cut from shared sources (what a caller that launches the same structure again and
    again builds once): problem ``i`` has rows ``q[i]``, ``out[i]``, ``lse[i]`` (an empty 1-D
    tensor: none) and the next ``num_segments[i]`` segments; segment ``s`` is rows
    ``[spans[3s + 1], spans[3s + 1] + spans[3s + 2])`` of ``k[spans[3s]]`` / ``v[spans[3s]]``
    (sources ``[B, L, Hkv, D]``) with ``row_begin[s]``, ``diag[s]``; ``wait_for[i]``: the ready
    flag problem ``i`` waits for (-1: none).

    FP8 (docs/kernels/attn_fp8.md; ``q_scale`` given): ``q[i]`` float8_e4m3fn with per-row
    scales ``q_scale[i] [B, Lq, Hq]``; the sources ``k[s]`` float8_e4m3fn ``[B, L, Hkv, D]`` and
    ``v[s]`` float8_e4m3fn transposed ``[B, Hkv, D, L_pad]`` (:func:`quantize_fp8`), their block
    scales ``k_scale[s]``, ``v_scale[s] [B, ceil(L / FP8_BLOCK), Hkv]`` fp32; ``out[i]`` bf16,
    fp16 or fp32. CPU only until the FP8 kernel exists."""

    q: list
    out: list
    lse: list
    k: list
    v: list
    num_segments: list
    spans: list
    row_begin: list
    diag: list
    wait_for: list
    q_scale: list = []
    k_scale: list = []
    v_scale: list = []


def attn_fwd_group(
    problems: Sequence[AttnProblem] | SpanGroup,
    softmax_scale: Optional[float] = None,
    ready: Optional[torch.Tensor] = None,
    *,
    sched: Optional[torch.Tensor] = None,
    done: Optional[torch.Tensor] = None,
    finish: bool = False,
    sm_budget: int = 0,
    spin_us: Optional[int] = None,
    timeout_s: Optional[float] = None,
) -> None:
    """Several :func:`attn_fwd` problems (same batch, heads, head dim and dtype) in one launch.

    On CUDA one persistent kernel schedules the query tiles of every problem (problems in the
    given order, longest tiles first inside each), so short and long rows share the GPU and the
    epilogue of one tile overlaps the loads of the next. A problem with ``wait_for = j`` reads
    none of its keys before ``ready[j] != 0`` (``ready``: int32 flags on q's device that another
    stream sets, e.g. after a gather). :class:`~spava_ext.overlap.LayerOverlap` drives these
    arguments for a rank's layer.

    Without ``sched`` a CTA waits for a flag as long as it takes (and traps after ``timeout_s``
    seconds, default ``SPAVA_COLLECTIVE_TIMEOUT_S``): use it when the flags are set by work that
    needs no SM (:func:`set_flag`), or leave SMs to the flags' producers with ``sm_budget`` (the
    CTAs the grid may use; 0: one per SM). With ``sched`` (int32 ``[SCHED_INTS]``, zeroed) a CTA
    that finds a flag unset for ``spin_us`` microseconds gives its unit back and stops, so the
    launch never starves the kernels that set the flags; a second call with ``finish=True`` and
    the same arguments, queued after those kernels, computes what was given back (usually
    nothing). Split-KV is off with ``sched``. ``spin_us`` defaults to
    :func:`spava_ext.envs.ready_spin_us` (``SPAVA_READY_SPIN_US``, else 2000 with
    ``sm_budget > 0``, else 50).

    On the sm_90a kernel a launch with an even number of query heads and D = 64 or 128 runs as
    CTA pairs (clusters of 2 sharing K / V tiles): its grid is then even, ``sm_budget`` rounded
    down (``sm_budget=1`` runs unpaired on one CTA).

    ``done`` (int32 ``[2 * len(problems)]``, zeroed): ``done[2 * i + 1]`` becomes 1 once every
    row of problem ``i`` is written, while the launch goes on; :func:`wait_flag` on another
    stream then starts work on those rows early (e.g. their gather). Split-KV is off with it.

    On CPU the problems run one after another (``finish=True`` does nothing) and a problem whose
    flag is 0 raises. Writes each problem's ``out`` (and ``lse`` when given) in place.
    ``problems`` may also be a :class:`SpanGroup`.
    """
    if spin_us is None:
        spin_us = envs.ready_spin_us(leaves_sms=sm_budget > 0)
    if timeout_s is None:
        timeout_s = envs.collective_timeout_s()
    if isinstance(problems, SpanGroup):
        g = problems
        torch.ops.spava.attn_fwd_group(g.q, g.num_segments, g.k, g.v, g.row_begin, g.diag,
                                       softmax_scale, g.out, g.lse, ready=ready,
                                       wait_for=g.wait_for, sched=sched, done=done, finish=finish,
                                       sm_budget=sm_budget, spin_us=spin_us, timeout_s=timeout_s,
                                       spans=g.spans, q_scale=g.q_scale, k_scale=g.k_scale,
                                       v_scale=g.v_scale)
        return
    if len(problems) == 0:
        raise ValueError("attn_fwd_group: no problems given (need at least one AttnProblem)")
    qs, nseg, ks, vs, rbs, dgs, outs, lses, waits = [], [], [], [], [], [], [], [], []
    for pr in problems:
        qs.append(pr.q)
        nseg.append(len(pr.k))
        ks += list(pr.k)
        vs += list(pr.v)
        rbs += list(pr.row_begin)
        dgs += list(pr.diag)
        outs.append(pr.out)
        lses.append(pr.lse if pr.lse is not None else pr.q.new_empty(0, dtype=torch.float32))
        waits.append(-1 if pr.wait_for is None else pr.wait_for)
    if all(w == -1 for w in waits):
        waits = []
    torch.ops.spava.attn_fwd_group(qs, nseg, ks, vs, rbs, dgs, softmax_scale, outs, lses,
                                   ready=ready, wait_for=waits, sched=sched, done=done,
                                   finish=finish, sm_budget=sm_budget, spin_us=spin_us,
                                   timeout_s=timeout_s)


def wait_flag(flag: torch.Tensor) -> None:
    """Work queued on the current stream after this call starts once ``flag[0]`` (int32) is not
    0, without a host synchronisation (CUDA: ``cuStreamWaitValue32``, captured in CUDA graphs).
    On CPU a flag that is 0 raises (nothing could set it later)."""
    torch.ops.spava.wait_flag(flag)


def set_flag(flag: torch.Tensor) -> None:
    """``flag[0]`` (int32) := 1 once the work queued before this call on the current stream has
    finished, its writes visible first (CUDA: ``cuStreamWriteValue32``, captured in CUDA graphs).
    It needs no SM, unlike ``flag.fill_(1)``, whose kernel cannot start while a persistent
    launch polling that flag holds every SM. On CPU it sets the flag now."""
    torch.ops.spava.set_flag(flag)


def select_passing(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_starts: Sequence[int],
    chunk_lens: Sequence[int],
    passing_len: int,
    pool_kernel: int = 5,
    capacity: Optional[int] = None,
    indices: Optional[torch.Tensor] = None,
    kv: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query-aware selection of the passing block of each chunk, gathered into a send buffer.

    Args:
        q: ``[B, nq, Hq, D]`` question rows.
        k, v: ``[B, Lk, Hkv, D]``; chunk ``c`` is ``k[:, chunk_starts[c] : chunk_starts[c] + chunk_lens[c]]``.
        passing_len: p; chunk c keeps ``m_c = min(p, chunk_lens[c])`` keys per (batch, kv head).
        pool_kernel: odd max-pool width applied to the scores, clipped to the chunk.
        capacity: rows of the buffers (default ``max_c m_c``); must be >= ``max_c m_c``.

    Returns ``indices`` int64 ``[C, B, Hkv, cap]`` (kept positions along k's dim 1, ascending,
    -1 past ``m_c``) and ``kv`` ``[C, cap, 2, B, Hkv, D]`` in k's dtype (``kv[c, i, 0]`` is a K row,
    ``kv[c, i, 1]`` the V row; zeros past ``m_c``). Ties in the smoothed score keep the lower
    position. Same input, same bytes.
    """
    C = len(chunk_starts)
    B, _, Hkv, D = k.shape
    if capacity is None:
        capacity = max((min(passing_len, n) for n in chunk_lens), default=0)
    if indices is None:
        indices = torch.empty((C, B, Hkv, capacity), dtype=torch.long, device=k.device)
    if kv is None:
        kv = k.new_empty((C, capacity, 2, B, Hkv, D))
    torch.ops.spava.select_passing(q, k, v, list(chunk_starts), list(chunk_lens), passing_len,
                                   pool_kernel, indices, kv)
    return indices, kv


def merge_states(
    outs: torch.Tensor,
    lses: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """LSE merge of n partial attention states (fp32 math).

    ``outs [n, B, R, H, D]`` and ``lses [n, B, H, R]`` (fp32, natural log) -> ``out [B, R, H, D]``
    (allocated in ``out_dtype`` or outs' dtype when None; any strides with a contiguous last dim)
    and ``lse [B, H, R]`` (only written when passed). Parts with ``lse = -inf`` weigh 0.
    """
    if out is None:
        out = outs.new_empty(outs.shape[1:], dtype=out_dtype or outs.dtype)
    torch.ops.spava.merge_states(outs, lses, out, lse)
    return out, lse


def quantize_fp8(
    x: torch.Tensor,
    block: int = 128,
    rotate: bool = False,
    transpose: bool = False,
    values: Optional[torch.Tensor] = None,
    scales: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block e4m3 quantisation of Q, K or V for the FP8 attention path (the scheme of
    :mod:`spava_ext.fp8`; :func:`spava_ext.fp8.quantize` gives the same bytes).

    Args:
        x: ``[B, L, H, D]`` bf16/fp16 (fp32 on CPU), last dim contiguous (any other strides).
        block: rows per block; block ``j`` of head ``h`` is rows ``[j * block, (j + 1) * block)``.
        rotate: quantise ``x @ hadamard(D)`` (D a power of two; CUDA: D <= 256), for Q and K.
        transpose: values as ``[B, H, D, ceil(L / 16) * 16]`` (the key index contiguous, as FP8
            wgmma reads V; columns >= L zero) instead of ``[B, L, H, D]``.
        values, scales: destinations (float8_e4m3fn, contiguous; fp32 ``[B, ceil(L / block),
            H]``), allocated when None.

    Returns ``(values, scales)`` with ``y ~= values * scales`` per block (``y``: x, or x rotated):
    ``scales = max(amax(|y|) / 448, 2^-126)`` (1 for an all-zero block), ``values =
    e4m3(y * (1 / scales))`` rounded to nearest even, saturated to +-448. CPU and CUDA give the
    same bytes.
    """
    if x.dim() != 4:
        raise ValueError(f"quantize_fp8: x must be [B, L, H, D], got shape {tuple(x.shape)}")
    B, L, H, D = x.shape
    if values is None:
        shape = (B, H, D, -(-L // 16) * 16) if transpose else (B, L, H, D)
        values = torch.empty(shape, dtype=torch.float8_e4m3fn, device=x.device)
    if scales is None:
        scales = torch.empty((B, -(-L // block) if block >= 1 else 0, H), dtype=torch.float32,
                             device=x.device)
    torch.ops.spava.quantize_fp8(x, block, rotate, transpose, values, scales)
    return values, scales


def uses_sm90(device: torch.device | str) -> bool:
    """Whether :func:`attn_fwd` and :func:`attn_fwd_group` run the sm_90a kernels on ``device``
    (a CUDA device of compute capability 9.x, fallback off); otherwise they take the ATen path."""
    return torch.ops.spava.uses_sm90(torch.device(device))


def set_attn_decode(on: bool) -> None:
    """Let :func:`attn_fwd` calls of at most 16 query rows per kv head (``q_len * Hq / Hkv``: a
    decode step) run the split-KV decode kernel (docs/kernels/attn_decode.md) on the sm_90a
    path (``True``), or the prefill kernel as every other call (``False``, the default): a
    process-wide switch. ``SPAVA_ATTN_DECODE=1`` turns it on at import."""
    torch.ops.spava.set_attn_decode(bool(on))


def set_attn_fallback(on: bool) -> None:
    """Send :func:`attn_fwd` and :func:`attn_fwd_group` on every GPU to the ATen path (``True``)
    or back to the sm_90a kernels where a GPU has them (``False``): a process-wide switch for
    testing the fallback on an H100. ``SPAVA_ATTN_FALLBACK=1`` turns it on at import."""
    torch.ops.spava.set_attn_fallback(bool(on))


set_attn_fallback(envs.attn_fallback())
set_attn_decode(envs.attn_decode())
