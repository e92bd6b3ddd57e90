"""Prefill with Spava, then decode over the sharded KV cache: exact dense attention."""

import itertools

import pytest
import torch

import spava_ext
from spava_ext import SpavaKVCache, SpavaLayout, reference
from utils import assert_attn_close, grid_inputs, run_ranks

# (B, L prompt, a, nq, Hq, Hkv, D, p, new tokens per step, steps)
CASES = [
    (1, 97, 9, 3, 4, 2, 16, 5, 1, 4),
    (2, 60, 0, 1, 7, 1, 8, 3, 3, 2),  # multi-token steps, empty anchor, GQA 7
    (1, 23, 20, 2, 2, 2, 8, None, 1, 3),  # almost no context: some ranks hold nothing
    (1, 41, 2, 3, 4, 1, 8, 4, 2, 2),  # anchor shorter than W: empty anchor slices
]


def _rank_main(rank, world, cases):
    outs = []
    for (i, (B, L, a, nq, Hq, Hkv, D, p, T, steps)), shard_anchor in itertools.product(
            enumerate(cases), (False, True)):
        layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
        q, k, v = grid_inputs(B, L + T * steps, Hq, Hkv, D, seed=200 + i)
        cache = SpavaKVCache(layout, rank, 2, B, Hkv, D, q.dtype, "cpu", T * steps)
        shard = [layout.shard(t[:, :L], rank) for t in (q, k, v)]
        spava_ext.spava_attention(*shard, layout)  # the prefill of "layer 1"
        cache.store_prefill(1, shard[1], shard[2])
        steps_out = []
        for s in range(steps):
            sl = slice(L + s * T, L + (s + 1) * T)
            steps_out.append(spava_ext.decode_attention(q[:, sl], k[:, sl], v[:, sl], cache, 1))
        outs.append((torch.cat(steps_out, dim=1), cache.prefill_len))
    return outs


@pytest.mark.parametrize("world", [1, 2, 3])
def test_decode_after_prefill_is_dense_attention(world):
    """After a prefill with a replicated or a sharded anchor (the caches' prefill rows come
    from the shard either way)."""
    per_rank = run_ranks(_rank_main, world, CASES)
    for (i, (B, L, a, nq, Hq, Hkv, D, p, T, steps)), j in itertools.product(enumerate(CASES),
                                                                            range(2)):
        q, k, v = grid_inputs(B, L + T * steps, Hq, Hkv, D, seed=200 + i)
        dense = reference.dense_causal_attention(q, k, v)[:, L:]
        for r in range(world):
            assert_attn_close(f"W={world} case {i} rank {r} sharded={bool(j)}",
                              per_rank[r][2 * i + j][0], dense)
        # the caches are disjoint and cover the prompt exactly once
        assert sum(per_rank[r][2 * i + j][1] for r in range(world)) == L


def test_cache_errors():
    layout = SpavaLayout(40, 4, 2, 2, 3)
    cache = SpavaKVCache(layout, 1, 1, 1, 1, 8, torch.float32, "cpu", 4)
    with pytest.raises(ValueError, match="only rank 0"):
        cache.append(0, torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8))
    with pytest.raises(ValueError, match="rows, rank 1 holds"):
        cache.store_prefill(0, torch.zeros(1, 3, 1, 8), torch.zeros(1, 3, 1, 8))
    cache0 = SpavaKVCache(layout, 0, 1, 1, 1, 8, torch.float32, "cpu", 1)
    cache0.store_prefill(0, *(torch.zeros(1, layout.local_len(0), 1, 8),) * 2)
    cache0.append(0, torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8))
    with pytest.raises(ValueError, match="exceed the capacity"):
        cache0.append(0, torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8))
