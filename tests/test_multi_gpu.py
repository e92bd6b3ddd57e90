"""The schedule over NCCL, one GPU per rank (W = every GPU, at most 4): the comm stream, the
ready flags, the in-flight launch and its finishing launch, the question gather on its done
flag, with the anchor replicated and sharded; prefill against the reference, decode against
dense attention. Skipped without two GPUs."""

import pytest
import torch

import spava_ext
from spava_ext import SpavaKVCache, SpavaLayout, reference
from utils import assert_attn_close, grid_inputs, run_ranks

pytestmark = [pytest.mark.cuda, pytest.mark.multigpu]

# (L, a, nq, Hq, Hkv, D, p, dtype): the anchor not a multiple of W, shorter than W, none
CASES = [
    (3001, 129, 17, 28, 4, 128, 100, torch.bfloat16),
    (2050, 3, 1, 16, 2, 128, 37, torch.float16),
    (999, 0, 9, 8, 8, 64, None, torch.bfloat16),
]
T = 3  # decoded tokens


def _inputs(i, case):
    L, a, nq, Hq, Hkv, D, p, dtype = case
    return grid_inputs(1, L + T, Hq, Hkv, D, dtype=dtype, seed=700 + i)


def _rank_main(rank, world):
    results = []
    for i, case in enumerate(CASES):
        L, a, nq, Hq, Hkv, D, p, dtype = case
        q, k, v = (t.cuda() for t in _inputs(i, case))
        for shard_anchor in (False, True):
            layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
            shard = [layout.shard(t[:, :L], rank) for t in (q, k, v)]
            out = spava_ext.spava_attention(*shard, layout)
            cache = SpavaKVCache(layout, rank, 1, 1, Hkv, D, dtype, "cuda", T)
            cache.store_prefill(0, shard[1], shard[2])
            dec = spava_ext.decode_attention(q[:, L:], k[:, L:], v[:, L:], cache, 0)
            results.append((out.cpu(), dec.cpu()))
    torch.cuda.synchronize()
    return results


def test_nccl_ranks_equal_the_reference():
    world = min(torch.cuda.device_count(), 4)
    per_rank = run_ranks(_rank_main, world, backend="nccl")
    for i, case in enumerate(CASES):
        L, a, nq, Hq, Hkv, D, p, dtype = case
        q, k, v = _inputs(i, case)
        dense = reference.dense_causal_attention(q, k, v)[:, L:]
        causal = torch.ones(L + T, L + T, dtype=torch.bool).tril()
        low_dense = reference.masked_attention(q, k, v, causal, D ** -0.5, upcast=False)[0]
        for j, shard_anchor in enumerate((False, True)):
            layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
            name = f"W={world} case {i} {layout}"
            got = layout.unshard([per_rank[r][2 * i + j][0] for r in range(world)])
            qL, kL, vL = (t[:, :L] for t in (q, k, v))
            ref = reference.spava_attention(qL, kL, vL, layout)
            low = reference.spava_attention(qL, kL, vL, layout, upcast=False)
            assert_attn_close(name, got, ref, low)
            for r in range(world):
                assert_attn_close(f"{name} decode rank {r}", per_rank[r][2 * i + j][1], dense,
                                  low_dense[:, L:])
