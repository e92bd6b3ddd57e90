"""spava_attention: the per-rank schedule of one Spava attention layer
(docs/design.md, Per-rank schedule).

Rank r holds ``[anchor (a) | C_r (c1) | C_(2W-1-r) (c2) | question (nq)]`` of q, k, v, or with a
sharded anchor (``layout.shard_anchor``) ``[A_r | C_r | C_(2W-1-r) | question]``, A_r its anchor
slice (``layout.anchor_slice(r)``)::

    0  sharded anchor: A_r's K/V                            -> anchor gather (every slice)
    1  select P_r, P_(2W-1-r) from the local K/V           -> gather #1 (P_r), #2 (P_(2W-1-r))
    2  one attn_fwd_group launch, three problems (four: sharded anchor) in this order:
         question partial over [anchor slice r | C_r | C_(2W-1-r) (| question, causal, rank 0)]
         sharded: rows A_r     x [A_0..A_(r-1) | A_r causal]             (waits for the anchor)
         rows [anchor | C_r]   x [P_0..P_(r-1) | anchor | C_r]   (anchor rows skip P; waits #1)
           sharded: rows C_r   x [P_0..P_(r-1) | anchor | C_r]            (waits #1 or anchor)
         rows C_(2W-1-r)       x [P_0..P_(2W-2-r) | anchor | C_(2W-1-r)]           (waits #2)
       The waits are ready flags that the gathers set when their data has landed: on CUDA the
       launch starts at once and each problem's tiles start as their keys arrive, beside the
       gathers' kernels, and the question partials' gather starts as soon as they are written
       (spava_ext.overlap.LayerOverlap owns this protocol).
    3  gather the question partials (out, lse); LSE-merge the W partials into the question rows

Gather buffers hold one part per rank: ``recv1[j] = P_j`` and ``recv2[j] = P_(2W-1-j)``, each
``[cap, 2, B, Hkv, D]`` (K rows then V rows) with ``P_i`` valid in its first ``|P_i|`` rows, and
``recv_anchor[j] = A_j`` ``[anchor_cap, 2, B, Hkv, D]``: the slices fill their parts but the last
ones, so the flattened buffer's first ``a`` rows are the anchor. Attention reads them in place as
strided ``[B, n, Hkv, D]`` views (the whole anchor: one segment).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from functools import lru_cache
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from . import attention_fp8, ops
from .agreement import layer_config
from .comm import GroupComm
from .layout import SpavaLayout
from .overlap import LayerOverlap

__all__ = ["spava_attention", "spava_attention_rank", "check_call", "KeySegments", "ExactRows",
           "Span", "key_spans", "key_sources", "span_keys", "question_keys", "host1_keys",
           "host2_keys", "problem_specs", "rank_problems", "LayerPlan", "layer_plan",
           "standalone_problems"]


class KeySegments:
    """Key segments of one attn_fwd call: k/v views and their visibility (row_begin, diag)."""

    def __init__(self) -> None:
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.row_begin: list[int] = []
        self.diag: list[int] = []

    def add(self, k: torch.Tensor, v: torch.Tensor, row_begin: int = 0, diag: int = ops.FULL):
        if k.shape[1] > 0:
            self.k.append(k)
            self.v.append(v)
            self.row_begin.append(row_begin)
            self.diag.append(diag)
        return self

    def pairs(self, q_len: int) -> int:
        """Allowed (query row, key) pairs for ``q_len`` query rows (per query head)."""
        rows = torch.arange(q_len, dtype=torch.long)
        total = 0
        for kk, rb, d in zip(self.k, self.row_begin, self.diag):
            seen = (rows + min(d, kk.shape[1]) + 1).clamp(0, kk.shape[1])
            total += int(seen[rows >= rb].sum())
        return total


# Key sources of a layer, the tensors every key segment is cut from (``Span.source``): the
# local K/V ``[B, L_r, Hkv, D]``, and the gather buffers ``[W, cap, 2, B, Hkv, D]`` read as
# ``[B, W * cap, Hkv, D]`` K and V views (part j's rows start at ``j * cap``).
LOCAL, ANCHOR, PASSING1, PASSING2 = range(4)


class Span(NamedTuple):
    """One key segment: rows ``[first, first + rows)`` of source ``source``, seen by query rows
    ``i >= row_begin`` up to key ``j <= i + diag``."""

    source: int
    first: int
    rows: int
    row_begin: int = 0
    diag: int = ops.FULL


def _passing_spans(source: int, cap: int, parts: range, sizes: list[int],
                   row_begin: int) -> list[Span]:
    """Passing blocks ``j`` in ``parts`` (``sizes[j]`` valid rows of ``cap`` each); consecutive
    full blocks become one span."""
    spans, j = [], parts.start
    while j < parts.stop:
        e = j + 1
        if sizes[j] == cap:
            while e < parts.stop and sizes[e] == cap:
                e += 1
        spans.append(Span(source, j * cap, (e - j) * cap if sizes[j] == cap else sizes[j],
                          row_begin))
        j = e
    return spans


def _anchor_span(layout: SpavaLayout, diag: int) -> Span:
    """The whole anchor as one segment: local rows (replicated) or the gathered slices
    (sharded, contiguous once flattened: every slice but the last ones fills its part)."""
    return Span(ANCHOR if layout.shard_anchor else LOCAL, 0, layout.anchor_len, diag=diag)


@lru_cache(maxsize=1024)
def key_spans(layout: SpavaLayout, rank: int, problem: str) -> tuple[Span, ...]:
    """The key segments of ``rank``'s problem ``problem`` (see the module docstring), empty ones
    left out:

    * "question": [anchor slice r | C_r | C_(2W-1-r) (| question, causal, rank 0 only)];
    * "anchor" (a sharded anchor's rows A_r): [A_0..A_(r-1) | A_r causal];
    * "host1" (rows [anchor | C_r], or C_r with a sharded anchor): [P_0..P_(r-1) (not for
      anchor rows) | anchor (causal for anchor rows) | C_r];
    * "host2" (rows C_(2W-1-r)): [P_0..P_(2W-2-r) | anchor | C_(2W-1-r)].
    """
    seg = layout.local_segments(rank)
    c1, c2, qs = seg.chunk1_start, seg.chunk2_start, seg.question_start
    if problem == "question":
        a0, a1 = layout.local_anchor_slice(rank)
        spans = [Span(LOCAL, a0, a1 - a0), Span(LOCAL, c1, c2 - c1), Span(LOCAL, c2, qs - c2)]
        if rank == 0:
            spans.append(Span(LOCAL, qs, seg.length - qs, diag=0))
    elif problem == "anchor":
        spans = [Span(ANCHOR, 0, layout.anchor_slice(rank)[0]),
                 Span(LOCAL, 0, layout.anchor_sizes[rank], diag=0)]
    elif problem == "host1":
        lead = 0 if layout.shard_anchor else seg.anchor  # anchor rows among the problem's rows
        spans = _passing_spans(PASSING1, layout.passing_cap, range(0, rank),
                               layout.passing_sizes, lead) if layout.passing_cap > 0 else []
        spans += [_anchor_span(layout, ops.FULL if layout.shard_anchor else 0),
                  Span(LOCAL, c1, c2 - c1, diag=-lead)]
    elif problem == "host2":
        world, cap = layout.world_size, layout.passing_cap
        sizes2 = [layout.passing_sizes[layout.num_chunks - 1 - j] for j in range(world)]
        spans = (_passing_spans(PASSING1, cap, range(0, world), layout.passing_sizes, 0)
                 + _passing_spans(PASSING2, cap, range(rank + 1, world), sizes2, 0))
        spans += [_anchor_span(layout, ops.FULL), Span(LOCAL, c2, qs - c2, diag=0)]
    else:
        raise ValueError(f"key_spans: unknown problem {problem!r}")
    return tuple(sp for sp in spans if sp.rows > 0)


def _kv_views(recv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A gather buffer ``[W, cap, 2, B, Hkv, D]`` as K and V views ``[B, W * cap, Hkv, D]``."""
    kv = recv.flatten(0, 1).permute(1, 2, 0, 3, 4)  # [2, B, W * cap, Hkv, D]
    return kv[0], kv[1]


def key_sources(k, v, recv_anchor=None, recv1=None,
                recv2=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The K and V sources of a layer, indexed by :class:`Span`'s ``source`` (a missing gather
    buffer's place holds the local K/V, which no span of it reads)."""
    ks, vs = [k], [v]
    for recv in (recv_anchor, recv1, recv2):
        kr, vr = (k, v) if recv is None else _kv_views(recv)
        ks.append(kr)
        vs.append(vr)
    return ks, vs


def span_keys(spans, sources) -> KeySegments:
    """:class:`KeySegments` of ``spans`` cut from ``sources`` (:func:`key_sources`)."""
    ks, vs = sources
    keys = KeySegments()
    for sp in spans:
        keys.add(ks[sp.source][:, sp.first : sp.first + sp.rows],
                 vs[sp.source][:, sp.first : sp.first + sp.rows], sp.row_begin, sp.diag)
    return keys


def question_keys(k, v, layout: SpavaLayout, rank: int) -> KeySegments:
    """Keys of the question partial of ``rank`` (:func:`key_spans` "question")."""
    return span_keys(key_spans(layout, rank, "question"), key_sources(k, v))


def anchor_send(k, v, layout: SpavaLayout, rank: int) -> torch.Tensor:
    """The send buffer of the anchor gather: the rank's anchor slice of ``k``, ``v``
    ``[B, L_r, Hkv, D]`` (a sharded anchor) packed as ``[anchor_cap, 2, B, Hkv, D]``; rows past
    the slice (only on the last ranks) are zero, like a passing block's padding: gathered, they
    lie past the anchor, where no key is read."""
    B, _, Hkv, D = k.shape
    n = layout.anchor_sizes[rank]
    send = k.new_empty((layout.anchor_cap, 2, B, Hkv, D))
    send[:n, 0].copy_(k[:, :n].transpose(0, 1))
    send[:n, 1].copy_(v[:, :n].transpose(0, 1))
    if n < layout.anchor_cap:
        send[n:].zero_()
    return send


def host1_keys(k, v, layout: SpavaLayout, rank: int, recv1, recv_anchor=None) -> KeySegments:
    """Keys of rows [anchor | C_r] (a replicated anchor) or C_r (a sharded one)
    (:func:`key_spans` "host1")."""
    return span_keys(key_spans(layout, rank, "host1"), key_sources(k, v, recv_anchor, recv1))


def host2_keys(k, v, layout: SpavaLayout, rank: int, recv1, recv2,
               recv_anchor=None) -> KeySegments:
    """Keys of rows C_(2W-1-r) (:func:`key_spans` "host2")."""
    return span_keys(key_spans(layout, rank, "host2"),
                     key_sources(k, v, recv_anchor, recv1, recv2))


class ExactRows:
    """Rows that must be exact although each rank holds only part of their keys: every rank
    computes a partial state (fp32 out + lse) over its keys, the partials are gathered (one
    packed fp32 buffer per rank), and the LSE merge writes the exact rows. Used for the question
    rows of the prefill and for every decode step."""

    def __init__(self, parts: torch.Tensor, pending, shape: tuple) -> None:
        self._parts, self._pending, self._shape = parts, pending, shape

    @staticmethod
    def partial_buffer(q_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A packed fp32 buffer for the partial of ``q_rows [B, n, Hq, D]`` and its (out
        ``[B, n, Hq, D]``, lse ``[B, Hq, n]``) views."""
        B, n, Hq, D = q_rows.shape
        part = q_rows.new_empty(B * n * Hq * D + B * Hq * n, dtype=torch.float32)
        return (part, part[: B * n * Hq * D].view(B, n, Hq, D),
                part[B * n * Hq * D :].view(B, Hq, n))

    @classmethod
    def start(cls, q_rows: torch.Tensor, keys: KeySegments, comm, softmax_scale,
              what: str) -> "ExactRows":
        """Compute this rank's partial for ``q_rows [B, n, Hq, D]`` and start its gather."""
        part, out, lse = cls.partial_buffer(q_rows)
        ops.attn_fwd(q_rows, keys.k, keys.v, keys.row_begin, keys.diag, softmax_scale, out=out,
                     lse=lse)
        parts = comm.buffer((comm.world, part.numel()), part.dtype, part.device, what)
        return cls(parts, comm.all_gather(parts, part, what), tuple(q_rows.shape))

    def finish(self, out_rows: torch.Tensor) -> None:
        """Wait for the gather and merge the partials into ``out_rows [B, n, Hq, D]``."""
        self._pending.wait()
        B, n, Hq, D = self._shape
        W = self._parts.shape[0]
        outs = self._parts[:, : B * n * Hq * D].view(W, B, n, Hq, D)
        lses = self._parts[:, B * n * Hq * D :].view(W, B, Hq, n)
        ops.merge_states(outs, lses, out=out_rows)


def problem_specs(layout: SpavaLayout, rank: int, anchor_gather: bool,
                  passing: bool) -> dict[str, tuple[tuple[int, int], Optional[int]]]:
    """``rank``'s attn_fwd problems by name, each ``((first, end) local query rows, ready flag
    index or None)``: "question" (the partial), "anchor" (a sharded anchor's rows A_r), "host1"
    (rows [anchor | C_r], or C_r with a sharded anchor), "host2" (rows C_(2W-1-r)); a problem
    without rows is left out. ``anchor_gather`` / ``passing``: whether the layer gathers the
    anchor / passing blocks. Ready flags follow the order the gathers start in (anchor, passing
    #1, passing #2); a problem waits for the last of those it reads (a flag is raised only after
    every earlier one: they are written in order on one stream)."""
    seg = layout.local_segments(rank)
    a, c1, c2 = seg.anchor, seg.chunk1, seg.chunk2
    flags = [name for name, on in (("anchor", anchor_gather), ("passing #1", passing),
                                   ("passing #2", passing)) if on]

    def flag(name: Optional[str]) -> Optional[int]:
        return None if name is None else flags.index(name)

    specs = {"question": ((seg.question_start, seg.length), None)}
    if anchor_gather and a > 0:  # rank 0's slice sees only itself
        specs["anchor"] = ((0, a), flag("anchor" if layout.anchor_slice(rank)[0] > 0 else None))
    rows1 = (a if layout.shard_anchor else 0, a + c1)
    if rows1[1] > rows1[0]:
        # rank 0's first host sees no passing block
        wait = "passing #1" if passing and rank > 0 else ("anchor" if anchor_gather else None)
        specs["host1"] = (rows1, flag(wait))
    if c2 > 0:
        specs["host2"] = ((a + c1, a + c1 + c2), flag("passing #2"))
    return specs


def rank_problems(q, k, v, layout: SpavaLayout, rank: int, recv1, recv2, out, question_out,
                  question_lse, recv_anchor=None) -> dict:
    """The attn_fwd problems of ``rank``'s layer by name (:func:`problem_specs`): the question
    partial into ``question_out`` / ``question_lse``, the others into their rows of ``out``.
    ``recv_anchor``: the anchor gather's buffer (a sharded anchor with ``a > 0``); ``recv1`` /
    ``recv2``: the passing gathers' (None when the layout has no passing blocks)."""
    sources = key_sources(k, v, recv_anchor, recv1, recv2)
    problems = {}
    for name, ((r0, r1), flag) in problem_specs(layout, rank, recv_anchor is not None,
                                                recv1 is not None).items():
        keys = span_keys(key_spans(layout, rank, name), sources)
        o, lse = (question_out, question_lse) if name == "question" else (out[:, r0:r1], None)
        problems[name] = ops.AttnProblem(q[:, r0:r1], keys.k, keys.v, keys.row_begin, keys.diag,
                                         o, lse, flag)
    return problems


class LayerPlan(NamedTuple):
    """A rank's attention launch as far as the layout fixes it, in attn_fwd_group's flat form
    (:class:`ops.SpanGroup`): the problems in launch order, their local query rows, and their
    key segments as spans of :func:`key_sources`."""

    names: tuple[str, ...]
    rows: tuple[tuple[int, int], ...]
    num_segments: list[int]
    spans: list[int]  # (source, first row, rows) per segment
    row_begin: list[int]
    diag: list[int]
    wait_for: list[int]  # ready flag per problem, -1: none


@lru_cache(maxsize=1024)
def layer_plan(layout: SpavaLayout, rank: int, order: tuple) -> LayerPlan:
    """The :class:`LayerPlan` of ``rank`` with its problems in ``order`` (the gathers as
    :func:`spava_attention_rank` starts them)."""
    specs = problem_specs(layout, rank, layout.shard_anchor and layout.anchor_len > 0,
                          layout.passing_cap > 0)
    names = tuple(n for n in order if n in specs)
    nseg, spans, rbs, dgs = [], [], [], []
    for name in names:
        segs = key_spans(layout, rank, name)
        nseg.append(len(segs))
        for sp in segs:
            spans += [sp.source, sp.first, sp.rows]
            rbs.append(sp.row_begin)
            dgs.append(sp.diag)
    waits = [-1 if specs[n][1] is None else specs[n][1] for n in names]
    return LayerPlan(names, tuple(specs[n][0] for n in names), nseg, spans, rbs, dgs, waits)


def standalone_problems(q, k, v, layout: SpavaLayout, rank: int, recv1, recv2,
                        order: tuple, recv_anchor=None) -> list:
    """The rank's problems in ``order`` with outputs of their own and no ready flags (the
    received blocks are already in ``recv1`` / ``recv2`` / ``recv_anchor``): the one launch,
    for timing it."""
    q_question = q[:, layout.local_segments(rank).question_start :]
    _, q_out, q_lse = ExactRows.partial_buffer(q_question)
    named = rank_problems(q, k, v, layout, rank, recv1, recv2, torch.empty_like(q), q_out, q_lse,
                          recv_anchor)
    return [named[n]._replace(wait_for=None) for n in order if n in named]


# Launch orders (the kernel schedules problems in this order, longest query tiles first in
# each). With data in flight the order follows its arrival; otherwise host 2 (long rows: every
# passing block) goes first and host 1's short causal tiles fill the end (measured best on the
# H100 for D = 128, see docs/kernels/attn_fwd.md); a sharded anchor's rows (the gather that
# starts first, short causal tiles) come right after the question partial in flight, last
# otherwise.
ORDER_IN_FLIGHT = ("question", "anchor", "host1", "host2")
ORDER_LOCAL = ("host2", "question", "host1", "anchor")


_DTYPES = {"cpu": (torch.float32, torch.bfloat16, torch.float16),
           "cuda": (torch.bfloat16, torch.float16)}


def check_call(call: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """What a layer call (``spava_attention``, ``decode_attention``) needs of ``q [B, n, Hq, D]``,
    ``k``, ``v [B, n', Hkv, D]`` beyond their row counts: at least one head of each kind and a
    head dim, Hq a multiple of Hkv, one dtype the device's kernels take, and no autograd (the
    layer is inference only: it has no backward, docs/design.md "Policies")."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{call}: {name} must be [B, L, H, D], got {tuple(t.shape)}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"{call}: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not match")
    Hq, Hkv, D = q.shape[2], k.shape[2], q.shape[3]
    if Hq < 1 or Hkv < 1 or D < 1:
        raise ValueError(f"{call}: needs Hq, Hkv and head dim D >= 1, got Hq = {Hq}, "
                         f"Hkv = {Hkv}, D = {D}")
    if Hq % Hkv != 0:
        raise ValueError(f"{call}: Hq = {Hq} is not a multiple of Hkv = {Hkv}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{call}: dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    allowed = _DTYPES.get(q.device.type, _DTYPES["cuda"])
    if q.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise TypeError(f"{call}: dtype {q.dtype} is not supported on {q.device.type} "
                        f"(supported: {names})")
    if torch.is_grad_enabled():
        grads = [name for name, t in (("q", q), ("k", k), ("v", v)) if t.requires_grad]
        if grads:
            raise RuntimeError(
                f"{call}: inference only (no backward), but {', '.join(grads)} require(s) grad "
                "while grad mode is on; call it under torch.no_grad() or "
                "torch.inference_mode(), or pass detached tensors")


def _check_inputs(q, k, v, layout: SpavaLayout, rank: int, world: int) -> None:
    if world != layout.world_size:
        raise ValueError(f"spava_attention: process group has {world} ranks, layout.world_size "
                         f"= {layout.world_size}")
    check_call("spava_attention", q, k, v)
    n = layout.local_len(rank)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.shape[1] != n:
            raise ValueError(f"spava_attention: {name} has {t.shape[1]} rows on rank {rank}, the "
                             f"layout gives this rank {n} (use layout.shard(x, rank))")


def spava_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SpavaLayout,
    group: Optional[dist.ProcessGroup] = None,
    softmax_scale: Optional[float] = None,
    *,
    timeout: Optional[timedelta] = None,
    attn_dtype: Optional[str] = None,
    hadamard: bool = False,
) -> torch.Tensor:
    """Spava attention for this rank's shard; call it on every rank of ``group``.

    Args:
        q: ``[B, L_r, Hq, D]``, this rank's rows in local order (``layout.shard(q_full, rank)``).
        k, v: ``[B, L_r, Hkv, D]`` likewise (post-RoPE), ``Hq % Hkv == 0``.
        layout: the same :class:`SpavaLayout` on every rank; ``layout.world_size`` ranks.
        group: the process group (default: the global one; none needed when W = 1).
        softmax_scale: default ``D ** -0.5``.
        timeout: limit for each collective wait, and for the attention launch's wait for the
            keys it gathers (default ``SPAVA_COLLECTIVE_TIMEOUT_S``, 600 s).
        attn_dtype: None (attention in q's dtype) or ``"fp8"``: Q, K and V quantised to e4m3
            per block of 128 rows, the passing blocks and anchor slices sent as e4m3 (about half
            the bytes); faster on the FP8 kernel, less accurate (docs/kernels/attn_fp8.md, which
            says when to use it). The FP8 kernel is not written yet: FP8 runs on the CPU only.
        hadamard: with ``attn_dtype="fp8"``, rotate Q and K by a Hadamard matrix first (D a
            power of two): spreads outlier channels before quantisation.

    Returns ``[B, L_r, Hq, D]`` in q's dtype: this rank's shard of the output. Inference only:
    with grad mode on, inputs that require grad raise (see :func:`check_call`).
    """
    return spava_attention_rank(q, k, v, layout, GroupComm.of(group, timeout), softmax_scale,
                                attn_dtype, hadamard)


def _nvtx(name: str, on: bool):
    """An NVTX range around one step of the schedule (CUDA only; free without a profiler)."""
    return torch.cuda.nvtx.range(f"spava/{name}") if on else contextlib.nullcontext()


def spava_attention_rank(q, k, v, layout: SpavaLayout, comm, softmax_scale=None,
                         attn_dtype: Optional[str] = None, hadamard: bool = False) -> torch.Tensor:
    """The schedule of one rank with an explicit communicator
    (:class:`~spava_ext.comm.Communicator`): :class:`~spava_ext.comm.GroupComm` for real runs,
    :class:`~spava_ext.comm.SimulatedComm` to time one rank of a W-rank run on one device.
    ``attn_dtype`` / ``hadamard``: see :func:`spava_attention`."""
    rank, world = comm.rank, comm.world
    mode = attention_fp8.attn_mode("spava_attention", attn_dtype, hadamard)
    _check_inputs(q, k, v, layout, rank, world)
    if mode is not None:
        attention_fp8.check_inputs("spava_attention", q, mode)
    comm.ensure_agreement(layer_config(layout, q, k, softmax_scale, attn_mode=mode), q.device,
                          "spava_attention")
    rotate = mode == "fp8+hadamard"
    seg = layout.local_segments(rank)
    q_question = q[:, seg.question_start :]
    out = torch.empty_like(q)
    nv = q.is_cuda
    with LayerOverlap(comm, q.device) as overlap:  # on an error: abandons the started gathers
        # 0  a sharded anchor: gather every rank's anchor slice K/V (first, while it selects)
        recv_anchor = recv1 = recv2 = None
        if layout.shard_anchor and layout.anchor_len > 0:
            send = anchor_send(k, v, layout, rank)
            if mode is not None:
                send = attention_fp8.pack(send, rotate)
            (recv_anchor,) = overlap.start_gathers([send], ["anchor"])

        # 1  select the two passing blocks and start their gathers
        if layout.passing_cap > 0:
            p = layout.passing_cap if layout.passing_len is None else layout.passing_len
            with _nvtx("select", nv):
                _, send = ops.select_passing(q_question, k, v,
                                             [seg.chunk1_start, seg.chunk2_start],
                                             [seg.chunk1, seg.chunk2], p, layout.pool_kernel,
                                             capacity=layout.passing_cap)
            # recv1[j] = P_j, recv2[j] = P_(2W-1-j)
            parts = [send[0], send[1]] if mode is None else \
                [attention_fp8.pack(send[0], rotate), attention_fp8.pack(send[1], rotate)]
            recv1, recv2 = overlap.start_gathers(parts, ["passing #1", "passing #2"])

        # 2  one launch for the question partial, the anchor slice's rows (sharded) and both
        #    virtual hosts; the question partials' gather starts once they are written
        part, part_out, part_lse = ExactRows.partial_buffer(q_question)
        order = ORDER_IN_FLIGHT if overlap.in_flight else ORDER_LOCAL
        if mode is None:
            plan = layer_plan(layout, rank, order)
            ks, vs = key_sources(k, v, recv_anchor, recv1, recv2)
            q_src, q_scale, scales = q, None, ([], [])
        else:
            plan = attention_fp8.fp8_plan(layout, rank, order)
            q_src, q_scale, ks, vs, *scales = attention_fp8.operands(
                q, k, v, layout, mode, recv_anchor, recv1, recv2)
        rows = [slice(r0, r1) for r0, r1 in plan.rows]
        question = [name == "question" for name in plan.names]
        no_lse = part[:0]  # an empty tensor: no lse
        group = ops.SpanGroup([q_src[:, r] for r in rows],
                              [part_out if qn else out[:, r] for qn, r in zip(question, rows)],
                              [part_lse if qn else no_lse for qn in question], ks, vs,
                              plan.num_segments, plan.spans, plan.row_begin, plan.diag,
                              plan.wait_for, [] if q_scale is None else
                              [q_scale[:, r] for r in rows], *scales)
        with _nvtx("attention", nv):
            parts, pending = overlap.launch(group, softmax_scale, share=part,
                                            written_by=plan.names.index("question"),
                                            what="question partials")

        # 3  exact question rows: merge the W partials
        with _nvtx("merge", nv):
            ExactRows(parts, pending, tuple(q_question.shape)).finish(
                out[:, seg.question_start :])
    return out
