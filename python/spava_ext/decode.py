"""Exact decode attention over the sharded KV cache of a Spava prefill (docs/design.md, Decode).

After the prefill, rank r keeps per layer ``[anchor slice r | C_r | C_(2W-1-r)]`` (disjoint across
ranks: their union is the prompt's context exactly once; with a sharded anchor the slice is all of
the anchor the rank holds, with a replicated one the rank keeps only that slice of it) and rank 0 also keeps the question and
every generated token. Passing blocks are not cached. For each new token every rank computes a
partial state over its cache, the partials are gathered and LSE-merged: exact attention, the same
result on every rank. All ranks run the model on the same token; only rank 0 appends its K/V.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from .agreement import layer_config
from .attention import ExactRows, KeySegments, check_call
from .comm import GroupComm
from .layout import SpavaLayout

__all__ = ["SpavaKVCache", "decode_attention", "decode_attention_comm"]


class SpavaKVCache:
    """The KV cache of one rank, all layers: ``k, v [layers, B, capacity, Hkv, D]``.

    Args:
        layout: the prefill's layout.
        rank: this rank.
        num_layers, batch, heads_kv, head_dim, dtype, device: cache geometry.
        max_new_tokens: room for generated tokens (kept on rank 0 only).
    """

    def __init__(self, layout: SpavaLayout, rank: int, num_layers: int, batch: int,
                 heads_kv: int, head_dim: int, dtype: torch.dtype, device: torch.device | str,
                 max_new_tokens: int) -> None:
        if max_new_tokens < 0:
            raise ValueError(f"SpavaKVCache: max_new_tokens must be >= 0, got {max_new_tokens}")
        self.layout, self.rank, self.num_layers = layout, rank, num_layers
        seg = layout.local_segments(rank)
        # local prefill rows kept: (start, end) ranges of the rank's shard, in order; the anchor
        # slice is where the shard holds it (its first rows when the layout shards the anchor)
        self._keep = [layout.local_anchor_slice(rank),
                      (seg.chunk1_start, seg.chunk2_start + seg.chunk2)]
        if rank == 0:
            self._keep.append((seg.question_start, seg.length))
        self.prefill_len = sum(e - s for s, e in self._keep)
        self.capacity = self.prefill_len + (max_new_tokens if rank == 0 else 0)
        shape = (num_layers, batch, self.capacity, heads_kv, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.lengths = [0] * num_layers  # valid rows per layer
        self.stored = [False] * num_layers  # whether the layer's prefill is in

    def check_layer(self, call: str, layer: int) -> None:
        """Raise unless ``layer`` is a layer of this cache (0 <= layer < num_layers)."""
        if not (isinstance(layer, int) and 0 <= layer < self.num_layers):
            raise IndexError(f"{call}: layer {layer!r} is not a layer of this cache "
                             f"(0 .. {self.num_layers - 1})")

    @torch.no_grad()  # the cache keeps values, never an autograd graph
    def store_prefill(self, layer: int, k_local: torch.Tensor, v_local: torch.Tensor) -> None:
        """Keep this rank's share of a layer's prefill K/V (``[B, L_r, Hkv, D]``, local order)."""
        self.check_layer("SpavaKVCache.store_prefill", layer)
        if k_local.shape[1] != self.layout.local_len(self.rank):
            raise ValueError(f"SpavaKVCache.store_prefill: k has {k_local.shape[1]} rows, rank "
                             f"{self.rank} holds {self.layout.local_len(self.rank)}")
        n = 0
        for s, e in self._keep:
            self.k[layer, :, n : n + e - s].copy_(k_local[:, s:e])
            self.v[layer, :, n : n + e - s].copy_(v_local[:, s:e])
            n += e - s
        self.lengths[layer] = n
        self.stored[layer] = True

    @torch.no_grad()
    def append(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Append new tokens' K/V ``[B, T, Hkv, D]`` (rank 0 only)."""
        self.check_layer("SpavaKVCache.append", layer)
        if self.rank != 0:
            raise ValueError("SpavaKVCache.append: only rank 0 keeps generated tokens")
        n, t = self.lengths[layer], k_new.shape[1]
        if n + t > self.capacity:
            raise ValueError(f"SpavaKVCache.append: {n} + {t} tokens exceed the capacity "
                             f"{self.capacity} (max_new_tokens too small)")
        self.k[layer, :, n : n + t].copy_(k_new)
        self.v[layer, :, n : n + t].copy_(v_new)
        self.lengths[layer] = n + t

    def rewind(self) -> None:
        """Forget the generated tokens: every stored layer keeps its prefill rows only (a
        replayed prefill rewrites those rows in place, spava_ext.graphs)."""
        self.lengths = [self.prefill_len if stored else 0 for stored in self.stored]

    def layer_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the valid rows of a layer: ``[B, n, Hkv, D]`` each."""
        self.check_layer("SpavaKVCache.layer_kv", layer)
        n = self.lengths[layer]
        return self.k[layer, :, :n], self.v[layer, :, :n]


def decode_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    cache: SpavaKVCache,
    layer: int,
    group: Optional[dist.ProcessGroup] = None,
    softmax_scale: Optional[float] = None,
    *,
    timeout: Optional[timedelta] = None,
) -> torch.Tensor:
    """Exact attention of new tokens over the whole sharded cache; call on every rank.

    Args:
        q: ``[B, T, Hq, D]`` the new tokens' queries (the same on every rank).
        k_new, v_new: ``[B, T, Hkv, D]`` their keys/values (appended to rank 0's cache here).
        cache: this rank's :class:`SpavaKVCache`; layer: which layer.
        group, softmax_scale, timeout: as for :func:`spava_attention`.

    Returns ``[B, T, Hq, D]`` in q's dtype, identical on every rank: new token t attends to the
    whole prompt, the earlier generated tokens and new tokens up to itself. Inference only, as
    :func:`~spava_ext.spava_attention`.
    """
    return decode_attention_comm(q, k_new, v_new, cache, layer, GroupComm.of(group, timeout),
                                 softmax_scale)


def decode_attention_comm(q, k_new, v_new, cache: SpavaKVCache, layer: int, comm,
                          softmax_scale: Optional[float] = None) -> torch.Tensor:
    """:func:`decode_attention` with an explicit communicator (``GroupComm`` or a simulator)."""
    if comm.rank != cache.rank or comm.world != cache.layout.world_size:
        raise ValueError(f"decode_attention: group rank/size {comm.rank}/{comm.world} does not "
                         f"match the cache (rank {cache.rank}, W = {cache.layout.world_size})")
    check_call("decode_attention", q, k_new, v_new)
    if k_new.shape[:2] != q.shape[:2]:
        raise ValueError(f"decode_attention: shapes q {tuple(q.shape)}, k_new "
                         f"{tuple(k_new.shape)} do not match")
    cached = (cache.k.shape[1],) + tuple(cache.k.shape[3:])  # B, Hkv, D
    new = (k_new.shape[0],) + tuple(k_new.shape[2:])
    if new != cached or k_new.dtype != cache.k.dtype or k_new.device != cache.k.device:
        raise ValueError(f"decode_attention: k_new [B, T, Hkv, D] = {tuple(k_new.shape)} "
                         f"{k_new.dtype} on {k_new.device} does not fit the cache (B, Hkv, D) = "
                         f"{cached} {cache.k.dtype} on {cache.k.device}")
    cache.check_layer("decode_attention", layer)
    if not cache.stored[layer]:
        raise RuntimeError(f"decode_attention: layer {layer} has no prefill in the cache of rank "
                           f"{cache.rank}; store it first (SpavaKVCache.store_prefill)")
    comm.ensure_agreement(layer_config(cache.layout, q, k_new, softmax_scale, decode=True),
                          q.device, "decode_attention")
    keys = KeySegments()
    if cache.rank == 0:
        before = cache.lengths[layer]
        cache.append(layer, k_new, v_new)
        k, v = cache.layer_kv(layer)
        keys.add(k[:, :before], v[:, :before]).add(k[:, before:], v[:, before:], diag=0)
    else:
        keys.add(*cache.layer_kv(layer))
    out = torch.empty_like(q)
    ExactRows.start(q, keys, comm, softmax_scale, "decode partials").finish(out)
    return out
