"""SpavaLayout: how one sequence is cut into anchor, 2W zigzag chunks and the question.

Full sequence (length L)::

    [ anchor (a) | C0 | C1 | ... | C(2W-1) | question (nq) ]      n_ctx = L - a - nq >= 0

Chunk ``i`` holds ``n_ctx // 2W`` tokens plus one when ``i < n_ctx % 2W``. Rank ``r`` holds, in this
local order, ``[anchor | C_r | C_(2W-1-r) | question]`` (two "virtual hosts" per rank, zigzag).
The question is replicated on every rank; the anchor is replicated too, or, with
``shard_anchor``, each rank holds only its anchor slice ``A_r`` (:meth:`SpavaLayout.anchor_slice`):
``[A_r | C_r | C_(2W-1-r) | question]``, and the schedule gathers the anchor's K/V in each layer.

The anchor slices are ``anchor_cap = ceil(a / W)`` rows each, the last ones shorter or empty, so
that the gathered slices, padded to ``anchor_cap`` rows, are the anchor as one contiguous run.

Every passing block ``P_i`` (the keys selected from chunk ``i``) has ``min(p, |C_i|)`` rows; the
send/receive buffers are padded to ``passing_cap = max_i min(p, |C_i|)`` rows so that one
collective of equal-sized parts moves them.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

__all__ = ["SpavaLayout", "LocalSegments", "balanced_split", "check_heads", "MAX_WORLD_SIZE"]

#: The largest world size a layout accepts: a layout keeps lists of 2W chunk sizes, starts and
#: passing sizes, and no job runs anywhere near this many ranks.
MAX_WORLD_SIZE = 1 << 16
#: Lengths and offsets reach the ops as int64.
_INT64_MAX = (1 << 63) - 1


def balanced_split(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` contiguous pieces of ``n`` items; the first ``n % parts`` get one more."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_int(name: str, value, minimum: int, maximum: int = _INT64_MAX,
               call: str = "SpavaLayout") -> int:
    """``value`` as a Python int (Python, numpy or 0-d torch integers) in [minimum, maximum]."""
    tensor = isinstance(value, torch.Tensor)
    if isinstance(value, bool) or tensor and (value.dtype == torch.bool or value.dim() != 0):
        number = None  # operator.index would take True and one-element tensors
    else:
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None:
        raise ValueError(f"{call}: {name} must be an integer, got {value!r}")
    if number < minimum:
        raise ValueError(f"{call}: {name} must be >= {minimum}, got {number}")
    if number > maximum:
        limit = ("does not fit in int64 (the ops' index type)" if maximum == _INT64_MAX
                 else f"exceeds the supported maximum {maximum}")
        raise ValueError(f"{call}: {name} = {number} {limit}")
    return number


def check_heads(call: str, heads_q, heads_kv, head_dim=None) -> tuple[int, ...]:
    """``(Hq, Hkv)``, or ``(Hq, Hkv, D)`` with ``head_dim``, as ints; a ValueError naming ``call``
    and the value unless Hkv >= 1, Hq is a multiple of Hkv (grouped-query attention) and D >= 1."""
    hkv = _check_int("Hkv (kv heads)", heads_kv, 1, call=call)
    hq = _check_int("Hq (query heads)", heads_q, 1, call=call)
    if hq % hkv != 0:
        raise ValueError(f"{call}: Hq = {hq} query heads is not a multiple of Hkv = {hkv} kv heads")
    if head_dim is None:
        return hq, hkv
    return hq, hkv, _check_int("D (head dim)", head_dim, 1, call=call)


@dataclass(frozen=True)
class LocalSegments:
    """Offsets of one rank's local sequence ``[anchor | C_r | C_(2W-1-r) | question]`` (the
    anchor: the whole anchor, or the rank's slice of it when the layout shards the anchor).

    All values are token counts or local offsets (along the sequence dim of the rank's shard).
    """

    anchor: int  # a, or |A_r| when the anchor is sharded
    chunk1: int  # |C_r|          (first virtual host)
    chunk2: int  # |C_(2W-1-r)|   (second virtual host)
    question: int  # nq

    @property
    def chunk1_start(self) -> int:
        return self.anchor

    @property
    def chunk2_start(self) -> int:
        return self.anchor + self.chunk1

    @property
    def question_start(self) -> int:
        return self.anchor + self.chunk1 + self.chunk2

    @property
    def length(self) -> int:
        return self.question_start + self.question


class SpavaLayout:
    """The plan of docs/design.md (Layout) for one sequence on ``world_size`` ranks.

    Args:
        seq_len: L, the full sequence length (anchor + context chunks + question).
        anchor_len: a >= 0, tokens at the start replicated on every rank.
        query_len: nq >= 1, the question tokens at the end (replicated, attended exactly).
        world_size: W >= 1 ranks; the context is cut into 2W chunks.
        passing_len: p >= 1 keys selected per chunk and kv head, or ``None`` for exact mode
            (every chunk passes all of its keys, so every row equals dense causal attention).
        pool_kernel: pk, odd >= 1, the max-pool window that smooths selection scores.
        shard_anchor: each rank holds (and runs the model on) only its anchor slice
            (:meth:`anchor_slice`) instead of the whole anchor; the attention schedule gathers
            the anchor's K/V. The outputs are the same; the anchor's linear work is split W ways.
    """

    def __init__(
        self,
        seq_len: int,
        anchor_len: int,
        query_len: int,
        world_size: int,
        passing_len: Optional[int],
        pool_kernel: int = 5,
        shard_anchor: bool = False,
    ) -> None:
        seq_len = self.seq_len = _check_int("seq_len", seq_len, 1)
        anchor_len = self.anchor_len = _check_int("anchor_len", anchor_len, 0)
        query_len = self.query_len = _check_int("query_len", query_len, 1)
        world_size = self.world_size = _check_int("world_size", world_size, 1, MAX_WORLD_SIZE)
        if passing_len is not None:
            passing_len = _check_int("passing_len", passing_len, 1)
        self.passing_len = passing_len
        pool_kernel = _check_int("pool_kernel", pool_kernel, 1)
        if pool_kernel % 2 != 1:
            raise ValueError(f"SpavaLayout: pool_kernel must be odd, got {pool_kernel}")
        self.pool_kernel = pool_kernel
        if not isinstance(shard_anchor, bool):
            raise ValueError(f"SpavaLayout: shard_anchor must be a bool, got {shard_anchor!r}")
        self.shard_anchor = shard_anchor
        if anchor_len + query_len > seq_len:
            raise ValueError(
                f"SpavaLayout: anchor_len + query_len = {anchor_len} + {query_len} exceeds "
                f"seq_len = {seq_len}"
            )
        self.num_chunks = 2 * world_size
        self.context_len = seq_len - anchor_len - query_len  # n_ctx
        self.chunk_sizes: list[int] = balanced_split(self.context_len, self.num_chunks)
        starts = [anchor_len]
        for size in self.chunk_sizes[:-1]:
            starts.append(starts[-1] + size)
        self.chunk_starts: list[int] = starts
        max_chunk = max(self.chunk_sizes)
        p = max_chunk if passing_len is None else passing_len
        # P_i has min(p, |C_i|) rows; buffers are padded to the largest of them.
        self.passing_sizes: list[int] = [min(p, c) for c in self.chunk_sizes]
        self.passing_cap: int = max(self.passing_sizes)
        # anchor slices: anchor_cap rows each from the start, the last ones shorter or empty
        self.anchor_cap: int = -(-anchor_len // world_size)
        cap = self.anchor_cap
        self.anchor_sizes: list[int] = [max(0, min(cap, anchor_len - r * cap))
                                        for r in range(world_size)]

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def auto(
        cls, seq_len: int, query_len: int, world_size: int, pool_kernel: int = 5,
        shard_anchor: bool = False,
    ) -> "SpavaLayout":
        """The paper's defaults for n = seq_len - query_len context tokens (anchor included):
        ``a = 128 * ceil((n // 64) / 128)`` (at most n) and ``p = 128 * ceil((n // 128) / 128)``
        (at least 128)."""
        seq_len = _check_int("seq_len", seq_len, 1, call="SpavaLayout.auto")
        query_len = _check_int("query_len", query_len, 1, call="SpavaLayout.auto")
        n = seq_len - query_len
        if n < 0:
            raise ValueError(
                f"SpavaLayout.auto: query_len = {query_len} exceeds seq_len = {seq_len}"
            )
        anchor = min(n, 128 * math.ceil((n // 64) / 128))
        passing = max(128, 128 * math.ceil((n // 128) / 128))
        return cls(seq_len, anchor, query_len, world_size, passing, pool_kernel, shard_anchor)

    # ------------------------------------------------------------------ queries
    @property
    def exact(self) -> bool:
        """True when every chunk passes all of its keys (every row is dense causal attention)."""
        return all(s == c for s, c in zip(self.passing_sizes, self.chunk_sizes))

    @property
    def question_start(self) -> int:
        return self.seq_len - self.query_len

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Global ``[start, end)`` of chunk ``C_i``."""
        i = _check_int("chunk", i, 0, self.num_chunks - 1, call="SpavaLayout.chunk_bounds")
        return self.chunk_starts[i], self.chunk_starts[i] + self.chunk_sizes[i]

    def rank_chunks(self, rank: int) -> tuple[int, int]:
        """The two chunk indices held by ``rank``: ``(r, 2W-1-r)``."""
        rank = self._check_rank(rank)
        return rank, self.num_chunks - 1 - rank

    def anchor_slice(self, rank: int) -> tuple[int, int]:
        """Global ``[start, end)`` of anchor slice ``A_rank``: the anchor keys ``rank`` counts in
        the question partial and keeps in its decode cache, and with ``shard_anchor`` the anchor
        rows it holds. The W slices partition the anchor: ``anchor_cap = ceil(a / W)`` rows
        each from the start, the last ones shorter or empty (so the slices gathered into
        ``anchor_cap``-row parts read as one contiguous anchor)."""
        rank = self._check_rank(rank)
        start = min(self.anchor_len, rank * self.anchor_cap)
        return start, start + self.anchor_sizes[rank]

    def local_anchor_slice(self, rank: int) -> tuple[int, int]:
        """Local ``[start, end)`` of anchor slice ``A_rank`` in ``rank``'s shard: the whole shard
        anchor with ``shard_anchor``, else the slice's place in the replicated anchor."""
        start, end = self.anchor_slice(rank)
        return (0, end - start) if self.shard_anchor else (start, end)

    def local_segments(self, rank: int) -> LocalSegments:
        c1, c2 = self.rank_chunks(rank)
        anchor = self.anchor_sizes[rank] if self.shard_anchor else self.anchor_len
        return LocalSegments(anchor, self.chunk_sizes[c1], self.chunk_sizes[c2], self.query_len)

    def local_len(self, rank: int) -> int:
        return self.local_segments(rank).length

    def local_indices(self, rank: int) -> torch.Tensor:
        """LongTensor of the global positions held by ``rank``, in local order
        anchor (or anchor slice) | C_r | C_(2W-1-r) | question."""
        c1, c2 = self.rank_chunks(rank)
        parts = [
            torch.arange(*(self.anchor_slice(rank) if self.shard_anchor
                           else (0, self.anchor_len))),
            torch.arange(*self.chunk_bounds(c1)),
            torch.arange(*self.chunk_bounds(c2)),
            torch.arange(self.question_start, self.seq_len),
        ]
        return torch.cat(parts).to(torch.long)

    # ------------------------------------------------------------------ data movement
    def shard(self, x: torch.Tensor, rank: int, dim: int = 1) -> torch.Tensor:
        """The rows of ``x`` (full sequence along ``dim``) that ``rank`` holds, as a new tensor."""
        if x.size(dim) != self.seq_len:
            raise ValueError(
                f"SpavaLayout.shard: x.size({dim}) = {x.size(dim)} != seq_len = {self.seq_len}"
            )
        return x.index_select(dim, self.local_indices(rank).to(x.device))

    def unshard(self, parts: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
        """Inverse of :meth:`shard`: the full sequence from every rank's shard (in rank order).
        The replicated question (and anchor, unless sharded) is taken from rank 0."""
        if len(parts) != self.world_size:
            raise ValueError(
                f"SpavaLayout.unshard: got {len(parts)} parts for world_size = {self.world_size}"
            )
        for r, part in enumerate(parts):
            if part.size(dim) != self.local_len(r):
                raise ValueError(
                    f"SpavaLayout.unshard: part {r} has {part.size(dim)} rows along dim {dim}, "
                    f"expected {self.local_len(r)}"
                )
        if self.shard_anchor:
            pieces = [part.narrow(dim, 0, n) for part, n in zip(parts, self.anchor_sizes)]
        else:
            pieces = [parts[0].narrow(dim, 0, self.anchor_len)]
        for i in range(self.num_chunks):
            r = i if i < self.world_size else self.num_chunks - 1 - i
            seg = self.local_segments(r)
            start = seg.chunk1_start if i < self.world_size else seg.chunk2_start
            pieces.append(parts[r].narrow(dim, start, self.chunk_sizes[i]))
        seg0 = self.local_segments(0)
        pieces.append(parts[0].narrow(dim, seg0.question_start, self.query_len))
        return torch.cat(pieces, dim)

    # ------------------------------------------------------------------ misc
    def _check_rank(self, rank: int) -> int:
        try:
            return _check_int("rank", rank, 0, self.world_size - 1)
        except ValueError:
            raise ValueError(f"SpavaLayout: rank {rank!r} not in [0, {self.world_size})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpavaLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (
            self.seq_len,
            self.anchor_len,
            self.query_len,
            self.world_size,
            self.passing_len,
            self.pool_kernel,
            self.shard_anchor,
        )

    def __repr__(self) -> str:
        p = "exact" if self.passing_len is None else self.passing_len
        return (
            f"SpavaLayout(seq_len={self.seq_len}, anchor_len={self.anchor_len}, "
            f"query_len={self.query_len}, world_size={self.world_size}, passing_len={p}, "
            f"pool_kernel={self.pool_kernel}; chunks={min(self.chunk_sizes)}..{max(self.chunk_sizes)}"
            f", passing_cap={self.passing_cap}"
            + (f"; anchor sharded, slices of {self.anchor_cap})" if self.shard_anchor else ")")
        )

    def describe(self) -> str:
        """A multi-line human-readable plan (printed by the demo)."""
        lines = [repr(self)]
        for r in range(self.world_size):
            c1, c2 = self.rank_chunks(r)
            s = self.local_segments(r)
            anchor = (f"anchor {self.anchor_slice(r)}" if self.shard_anchor
                      else f"anchor {s.anchor}")
            lines.append(
                f"  rank {r}: {anchor} | C{c1} {self.chunk_bounds(c1)} | "
                f"C{c2} {self.chunk_bounds(c2)} | question {s.question}  -> {s.length} local tokens"
            )
        return "\n".join(lines)
