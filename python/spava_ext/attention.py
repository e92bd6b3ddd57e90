"""spava_attention: the per-rank schedule of one Spava attention layer (DESIGN.md §1).

Rank r holds ``[anchor (a) | C_r (c1) | C_(2W-1-r) (c2) | question (nq)]`` of q, k, v::

    1  select P_r, P_(2W-1-r) from the local K/V           -> gather #1 (P_r), #2 (P_(2W-1-r))
    2  one attn_fwd_group launch, three problems in this order:
         question partial over [anchor slice r | C_r | C_(2W-1-r) (| question, causal, rank 0)]
         rows [anchor | C_r]   x [P_0..P_(r-1) | anchor | C_r]   (anchor rows skip P; waits #1)
         rows C_(2W-1-r)       x [P_0..P_(2W-2-r) | anchor | C_(2W-1-r)]           (waits #2)
       On CUDA the waits are ready flags that the communication stream writes (set_flag: a
       stream memory write, no kernel) when a gather has landed: the launch starts at once and
       each problem's tiles start as their keys arrive. With W > 1 the launch leaves
       ``comm.reserve_sms`` SMs (default 4) to the gathers' NCCL kernels (``nccl_options`` caps
       them at as many CTAs), so they run beside it. Tiles whose flag is still late after the
       poll (2 ms when SMs are left free, else 50 us) are given back, the launch then winds
       down (no new units), and a second, finishing launch queued after the gathers computes
       the rest (usually nothing), so the kernel never holds SMs the collectives need for long.
    3  gather the question partials (out, lse); LSE-merge the W partials into the question rows

Gather buffers hold one part per rank: ``recv1[j] = P_j`` and ``recv2[j] = P_(2W-1-j)``, each
``[cap, 2, B, Hkv, D]`` (K rows then V rows) with ``P_i`` valid in its first ``|P_i|`` rows.
Attention reads them in place as strided ``[B, n, Hkv, D]`` views.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from . import ops
from .comm import GroupComm
from .layout import SpavaLayout

__all__ = ["spava_attention", "spava_attention_rank", "KeySegments", "ExactRows",
           "question_keys", "host1_keys", "host2_keys", "rank_problems", "standalone_problems"]


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

    def add_passing(self, recv: torch.Tensor, parts: range, sizes: list[int], row_begin: int):
        """Add passing blocks ``recv[j]`` for j in ``parts`` (``sizes[j]`` valid rows each);
        consecutive full blocks become one segment."""
        cap = recv.shape[1]
        j = parts.start
        while j < parts.stop:
            if sizes[j] == cap:  # a run of full blocks, read as one [B, n*cap, Hkv, D] view
                e = j
                while e < parts.stop and sizes[e] == cap:
                    e += 1
                blk = recv[j:e].flatten(0, 1)  # [n*cap, 2, B, Hkv, D]
                j = e
            else:
                blk = recv[j, : sizes[j]]
                j += 1
            self.add(blk[:, 0].transpose(0, 1), blk[:, 1].transpose(0, 1), row_begin)
        return self

    def pairs(self, q_len: int) -> int:
        """Allowed (query row, key) pairs for ``q_len`` query rows (per query head)."""
        rows = torch.arange(q_len, dtype=torch.long)
        total = 0
        for kk, rb, d in zip(self.k, self.row_begin, self.diag):
            seen = (rows + min(d, kk.shape[1]) + 1).clamp(0, kk.shape[1])
            total += int(seen[rows >= rb].sum())
        return total


def question_keys(k, v, layout: SpavaLayout, rank: int) -> KeySegments:
    """Keys of the question partial of ``rank``: [anchor slice r | C_r | C_(2W-1-r)
    (| question, causal, rank 0 only)]."""
    seg = layout.local_segments(rank)
    a, c1, c2 = seg.anchor, seg.chunk1, seg.chunk2
    a0, a1 = layout.anchor_slice(rank)
    keys = KeySegments().add(k[:, a0:a1], v[:, a0:a1])
    keys.add(k[:, a : a + c1], v[:, a : a + c1])
    keys.add(k[:, a + c1 : a + c1 + c2], v[:, a + c1 : a + c1 + c2])
    if rank == 0:
        keys.add(k[:, seg.question_start :], v[:, seg.question_start :], diag=0)
    return keys


def host1_keys(k, v, layout: SpavaLayout, rank: int, recv1) -> KeySegments:
    """Keys of rows [anchor | C_r]: [P_0..P_(r-1) (not for anchor rows) | anchor | C_r]."""
    seg = layout.local_segments(rank)
    a, c1 = seg.anchor, seg.chunk1
    keys = KeySegments()
    if recv1 is not None:
        keys.add_passing(recv1, range(0, rank), layout.passing_sizes, row_begin=a)
    return keys.add(k[:, :a], v[:, :a], diag=0).add(k[:, a : a + c1], v[:, a : a + c1], diag=-a)


def host2_keys(k, v, layout: SpavaLayout, rank: int, recv1, recv2) -> KeySegments:
    """Keys of rows C_(2W-1-r): [P_0..P_(2W-2-r) | anchor | C_(2W-1-r)]."""
    seg = layout.local_segments(rank)
    a, c1, c2 = seg.anchor, seg.chunk1, seg.chunk2
    world = layout.world_size
    sizes2 = [layout.passing_sizes[layout.num_chunks - 1 - j] for j in range(world)]
    keys = KeySegments().add_passing(recv1, range(0, world), layout.passing_sizes, row_begin=0)
    keys.add_passing(recv2, range(rank + 1, world), sizes2, row_begin=0)
    return keys.add(k[:, :a], v[:, :a]).add(k[:, a + c1 : a + c1 + c2],
                                            v[:, a + c1 : a + c1 + c2], diag=0)


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
    def gather(cls, part: torch.Tensor, shape: tuple, comm, what: str,
               after: Optional[torch.Tensor] = None) -> "ExactRows":
        """Start the gather of a partial (``partial_buffer``) of rows of ``shape``: computed
        already, or (device collectives) by a later kernel that sets the flag ``after``."""
        parts = comm.buffer((comm.world, part.numel()), part.dtype, part.device, what)
        pending = (comm.all_gather(parts, part, what) if after is None
                   else comm.all_gather(parts, part, what, after=after))
        return cls(parts, pending, tuple(shape))

    @classmethod
    def start(cls, q_rows: torch.Tensor, keys: KeySegments, comm, softmax_scale,
              what: str) -> "ExactRows":
        """Compute this rank's partial for ``q_rows [B, n, Hq, D]`` and start its gather."""
        part, out, lse = cls.partial_buffer(q_rows)
        ops.attn_fwd(q_rows, keys.k, keys.v, keys.row_begin, keys.diag, softmax_scale, out=out,
                     lse=lse)
        return cls.gather(part, q_rows.shape, comm, what)

    def finish(self, out_rows: torch.Tensor) -> None:
        """Wait for the gather and merge the partials into ``out_rows [B, n, Hq, D]``."""
        self._pending.wait()
        B, n, Hq, D = self._shape
        W = self._parts.shape[0]
        outs = self._parts[:, : B * n * Hq * D].view(W, B, n, Hq, D)
        lses = self._parts[:, B * n * Hq * D :].view(W, B, Hq, n)
        ops.merge_states(outs, lses, out=out_rows)


def rank_problems(q, k, v, layout: SpavaLayout, rank: int, recv1, recv2, out, question_out,
                  question_lse) -> dict:
    """The attn_fwd problems of ``rank``'s layer by name: "question" (the partial, into
    ``question_out`` / ``question_lse``), "host1" (rows [anchor | C_r], waiting for ready flag 0
    when they read passing blocks), "host2" (rows C_(2W-1-r), waiting for flag 1); a host
    without rows is left out. ``recv1`` / ``recv2`` are the gather buffers (None when the layout
    has no passing blocks)."""
    seg = layout.local_segments(rank)
    a, c1, c2 = seg.anchor, seg.chunk1, seg.chunk2

    def problem(rows, keys: KeySegments, o, lse=None, wait_for=None):
        return ops.AttnProblem(rows, keys.k, keys.v, keys.row_begin, keys.diag, o, lse, wait_for)

    q_question = q[:, seg.question_start :]
    problems = {"question": problem(q_question, question_keys(k, v, layout, rank), question_out,
                                    question_lse)}
    if a + c1 > 0:
        passing = recv1 is not None and rank > 0  # rank 0's first host sees no passing block
        problems["host1"] = problem(q[:, : a + c1], host1_keys(k, v, layout, rank, recv1),
                                    out[:, : a + c1], wait_for=0 if passing else None)
    if c2 > 0:
        problems["host2"] = problem(q[:, a + c1 : a + c1 + c2],
                                    host2_keys(k, v, layout, rank, recv1, recv2),
                                    out[:, a + c1 : a + c1 + c2], wait_for=1)
    return problems


def standalone_problems(q, k, v, layout: SpavaLayout, rank: int, recv1, recv2,
                        order: tuple) -> list:
    """The rank's problems in ``order`` with outputs of their own and no ready flags (the
    received blocks are already in ``recv1`` / ``recv2``): the one launch, for timing it."""
    q_question = q[:, layout.local_segments(rank).question_start :]
    _, q_out, q_lse = ExactRows.partial_buffer(q_question)
    named = rank_problems(q, k, v, layout, rank, recv1, recv2, torch.empty_like(q), q_out, q_lse)
    return [named[n]._replace(wait_for=None) for n in order if n in named]


# Launch orders (the kernel schedules problems in this order, longest query tiles first in
# each). With data in flight the order follows its arrival; otherwise host 2 (long rows: every
# passing block) goes first and host 1's short causal tiles fill the end (measured best on the
# H100 for D = 128, see csrc/kernels/attn_fwd/NOTES.md).
ORDER_IN_FLIGHT = ("question", "host1", "host2")
ORDER_LOCAL = ("host2", "question", "host1")


def _sm90_kernels(device: torch.device) -> bool:
    """Whether attn_fwd runs its sm_90a kernel on ``device`` (not the ATen fallback)."""
    return (torch.cuda.get_device_capability(device)[0] == 9
            and os.environ.get("SPAVA_ATTN_FALLBACK") != "1")


def _check_inputs(q, k, v, layout: SpavaLayout, rank: int, world: int) -> None:
    if world != layout.world_size:
        raise ValueError(f"spava_attention: process group has {world} ranks, layout.world_size "
                         f"= {layout.world_size}")
    n = layout.local_len(rank)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"spava_attention: {name} must be [B, L_local, H, D], got "
                             f"{tuple(t.shape)}")
        if t.shape[1] != n:
            raise ValueError(f"spava_attention: {name} has {t.shape[1]} rows on rank {rank}, the "
                             f"layout gives this rank {n} (use layout.shard(x, rank))")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"spava_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not match")
    if q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"spava_attention: Hq = {q.shape[2]} is not a multiple of "
                         f"Hkv = {k.shape[2]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"spava_attention: dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")


def spava_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SpavaLayout,
    group: Optional[dist.ProcessGroup] = None,
    softmax_scale: Optional[float] = None,
    *,
    timeout: Optional[timedelta] = None,
) -> torch.Tensor:
    """Spava attention for this rank's shard; call it on every rank of ``group``.

    Args:
        q: ``[B, L_r, Hq, D]``, this rank's rows in local order (``layout.shard(q_full, rank)``).
        k, v: ``[B, L_r, Hkv, D]`` likewise (post-RoPE), ``Hq % Hkv == 0``.
        layout: the same :class:`SpavaLayout` on every rank; ``layout.world_size`` ranks.
        group: the process group (default: the global one; none needed when W = 1).
        softmax_scale: default ``D ** -0.5``.
        timeout: limit for each collective wait (default ``SPAVA_COLLECTIVE_TIMEOUT_S``, 600 s).

    Returns ``[B, L_r, Hq, D]`` in q's dtype: this rank's shard of the output.
    """
    return spava_attention_rank(q, k, v, layout, GroupComm(group, timeout), softmax_scale)


def _nvtx(name: str, on: bool):
    """An NVTX range around one step of the schedule (CUDA only; free without a profiler)."""
    return torch.cuda.nvtx.range(f"spava/{name}") if on else contextlib.nullcontext()


def spava_attention_rank(q, k, v, layout: SpavaLayout, comm, softmax_scale=None) -> torch.Tensor:
    """The schedule of one rank with an explicit communicator (``comm.rank``, ``comm.world``,
    ``comm.buffer``, ``comm.all_gather``): :class:`~spava_ext.comm.GroupComm` for real runs,
    :class:`~spava_ext.comm.SimulatedComm` to time one rank of a W-rank run on one device."""
    rank, world = comm.rank, comm.world
    _check_inputs(q, k, v, layout, rank, world)
    seg = layout.local_segments(rank)
    a, c1, c2 = seg.anchor, seg.chunk1, seg.chunk2
    out = torch.empty_like(q)
    q_question = q[:, seg.question_start :]

    nv = q.is_cuda
    # 1  select the two passing blocks and start their gathers
    cap = layout.passing_cap
    recv1 = recv2 = None
    gathers = []
    if cap > 0:
        p = cap if layout.passing_len is None else layout.passing_len
        with _nvtx("select", nv):
            _, send = ops.select_passing(q_question, k, v, [seg.chunk1_start, seg.chunk2_start],
                                         [c1, c2], p, layout.pool_kernel, capacity=cap)
        shape = (world,) + send.shape[1:]
        recv1 = comm.buffer(shape, send.dtype, send.device, "passing #1")  # recv1[j] = P_j
        recv2 = comm.buffer(shape, send.dtype, send.device, "passing #2")  # P_(2W-1-j)
        gathers = [comm.all_gather(recv1, send[0], "passing #1"),
                   comm.all_gather(recv2, send[1], "passing #2")]

    # 2  one launch for the question partial and both virtual hosts
    part, part_out, part_lse = ExactRows.partial_buffer(q_question)
    named = rank_problems(q, k, v, layout, rank, recv1, recv2, out, part_out, part_lse)
    if len(gathers) < 2:  # no passing blocks: nothing to wait for
        named = {n: pr._replace(wait_for=None) for n, pr in named.items()}
    # In flight (the question gather waits on the device for the kernel's done flag) only with
    # the sm_90a kernel: the ATen fallback of other GPUs would load kernels lazily while that
    # stream waits, which can wait for the whole context (attn_fwd.h, prepare_attn_fwd).
    in_flight = nv and getattr(comm, "device_collectives", False) and _sm90_kernels(q.device)
    problems = [named[n] for n in (ORDER_IN_FLIGHT if in_flight else ORDER_LOCAL) if n in named]
    ready = sched = done = None
    if gathers:
        if not nv:  # CPU collectives complete on the host
            for g in gathers:
                g.wait()
        ready = torch.zeros(2, dtype=torch.int32, device=q.device)
        for i, g in enumerate(gathers):  # flag i: gather i (and, in stream order, those before)
            g.signal(ready[i : i + 1])
    question = None
    if in_flight:
        # units handed out dynamically, late ones given back; the question partial (problem 0)
        # raises done[1] when written, and its gather, issued now, starts then
        sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device=q.device)
        done = torch.zeros(2 * len(problems), dtype=torch.int32, device=q.device)
        question = ExactRows.gather(part, q_question.shape, comm, "question partials",
                                    after=done[1:2])
    max_ctas = 0  # W > 1 (real or simulated): leave SMs to the gathers' kernels
    reserve = getattr(comm, "reserve_sms", 0)
    if nv and world > 1 and reserve > 0:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        max_ctas = max(1, sms - reserve)
    with _nvtx("attention", nv):
        ops.attn_fwd_group(problems, softmax_scale, ready, max_ctas=max_ctas, sched=sched,
                           done=done)
        if in_flight:  # the tiles given back because their keys were late (usually none)
            for g in gathers:
                g.wait()
            ops.attn_fwd_group(problems, softmax_scale, ready, max_ctas=max_ctas, sched=sched,
                               finish=True, done=done)

    # 3  exact question rows: gather the W partials and merge them
    if question is None:
        question = ExactRows.gather(part, q_question.shape, comm, "question partials")
    for g in gathers:  # every started gather is awaited
        g.wait()
    with _nvtx("merge", nv):
        question.finish(out[:, seg.question_start :])
    return out
