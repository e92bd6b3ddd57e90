"""``torch.ops.spava.attention``: the whole per-rank Spava attention as one torch op.

One opaque op is what a framework needs to put Spava inside its model: ``torch.compile``
(fullgraph, any backend) sees a single node with a fake kernel, CUDA-graph capture records the
launches it issues, and a serving framework can register or call it like its own custom ops.
Its arguments are plain values: the :class:`~spava_ext.layout.SpavaLayout` fields and the
process group by name (``group.group_name``, as torch's functional collectives pass it), then
``shard_anchor`` (default False: each rank holds the whole anchor), ``attn_dtype`` and
``hadamard`` (FP8 attention, as :func:`~spava_ext.spava_attention` takes them).

The op is inference-only: it has no autograd formula (a backward through it raises); run the
model under ``torch.no_grad()`` or ``torch.inference_mode()``.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.distributed as dist

from .attention import spava_attention_rank
from .comm import GroupComm
from .layout import SpavaLayout

__all__ = ["attention", "attention_comm", "group_name"]


@functools.lru_cache(maxsize=256)
def _layout(seq_len: int, anchor_len: int, query_len: int, world_size: int,
            passing_len: Optional[int], pool_kernel: int, shard_anchor: bool) -> SpavaLayout:
    """One layout object per configuration (a layout is immutable; building one per call would
    repeat its chunk arithmetic for every layer)."""
    return SpavaLayout(seq_len, anchor_len, query_len, world_size, passing_len, pool_kernel,
                       shard_anchor)


def _group(name: str) -> Optional[dist.ProcessGroup]:
    """The process group named ``name``; "" is the default group (none without
    torch.distributed, a single process)."""
    if not name:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"spava.attention: group_name {name!r} given but torch.distributed is "
                         "not initialised")
    return dist.distributed_c10d._resolve_process_group(name)


@torch.library.custom_op("spava::attention", mutates_args=())
def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_len: int,
               anchor_len: int, query_len: int, world_size: int, passing_len: Optional[int],
               pool_kernel: int, softmax_scale: Optional[float], group_name: str,
               shard_anchor: bool = False, attn_dtype: Optional[str] = None,
               hadamard: bool = False) -> torch.Tensor:
    layout = _layout(seq_len, anchor_len, query_len, world_size, passing_len, pool_kernel,
                     shard_anchor)
    return spava_attention_rank(q, k, v, layout, GroupComm.of(_group(group_name)), softmax_scale,
                                attn_dtype, hadamard)


@_attention.register_fake
def _attention_fake(q, k, v, seq_len, anchor_len, query_len, world_size, passing_len,
                    pool_kernel, softmax_scale, group_name, shard_anchor=False, attn_dtype=None,
                    hadamard=False):
    return torch.empty_like(q)


def group_name(group: Optional[dist.ProcessGroup]) -> str:
    """The ``group_name`` argument of the op for ``group`` ("" for the default group)."""
    return "" if group is None else group.group_name


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SpavaLayout,
              group: Optional[dist.ProcessGroup] = None,
              softmax_scale: Optional[float] = None, attn_dtype: Optional[str] = None,
              hadamard: bool = False) -> torch.Tensor:
    """:func:`~spava_ext.spava_attention` through ``torch.ops.spava.attention`` (same arguments
    and result, with the default collective timeout)."""
    return torch.ops.spava.attention(q, k, v, layout.seq_len, layout.anchor_len,
                                     layout.query_len, layout.world_size, layout.passing_len,
                                     layout.pool_kernel, softmax_scale, group_name(group),
                                     layout.shard_anchor, attn_dtype, hadamard)


def attention_comm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SpavaLayout,
                   comm, softmax_scale: Optional[float] = None, attn_dtype: Optional[str] = None,
                   hadamard: bool = False) -> torch.Tensor:
    """:func:`~spava_ext.attention.spava_attention_rank` on ``comm``, through the op when the op
    would run on this very communicator (the shared :class:`GroupComm` of its group, default
    timeout); directly otherwise (simulated or emulated ranks, a communicator of its own), which
    the op, taking a group name, cannot express."""
    if type(comm) is GroupComm and GroupComm.of(comm.group) is comm:
        return attention(q, k, v, layout, comm.group, softmax_scale, attn_dtype, hadamard)
    return spava_attention_rank(q, k, v, layout, comm, softmax_scale, attn_dtype, hadamard)
