"""spava_attention over W = 1..4 gloo processes equals the full-sequence reference."""

import itertools
import time
from datetime import timedelta

import pytest
import torch

import spava_ext
from spava_ext import SpavaLayout, reference
from utils import assert_attn_close, grid_inputs, run_ranks

# (B, L, a, nq, Hq, Hkv, D, p, dtype): irregular on purpose
CASES = [
    (1, 211, 13, 5, 7, 1, 16, 7, torch.float32),  # GQA 7, odd lengths
    (2, 150, 0, 1, 4, 2, 8, 5, torch.float32),  # empty anchor, nq = 1, B = 2, GQA 2
    (1, 97, 9, 3, 14, 2, 32, 40, torch.float32),  # chunks shorter than p (for W >= 2)
    (1, 123, 20, 4, 4, 4, 16, None, torch.float32),  # exact mode, GQA 1
    (2, 77, 5, 2, 6, 3, 16, 3, torch.bfloat16),  # bf16
    (1, 40, 30, 3, 2, 1, 8, 2, torch.float16),  # 7 context tokens: some chunks empty at W = 4
    (1, 64, 2, 3, 4, 2, 8, 3, torch.float32),  # anchor shorter than W (empty anchor slices)
    (1, 33, 29, 4, 2, 1, 8, None, torch.float32),  # no context: anchor and question only
]
ANCHOR = [False, True]  # replicated, sharded


def case_inputs(i, case):
    B, L, a, nq, Hq, Hkv, D, p, dtype = case
    q, k, v = grid_inputs(B, L, Hq, Hkv, D, dtype=dtype, seed=100 + i)
    return q, k, v


def _rank_main(rank, world, cases):
    outs = []
    for i, case in enumerate(cases):
        B, L, a, nq, Hq, Hkv, D, p, dtype = case
        q, k, v = case_inputs(i, case)
        for shard_anchor in ANCHOR:
            layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
            shard = [layout.shard(t, rank) for t in (q, k, v)]
            outs.append(spava_ext.spava_attention(*shard, layout))
    return outs


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_spava_attention_matches_reference(world):
    """Both anchor schedules (replicated, sharded) equal the reference and each other."""
    per_rank = run_ranks(_rank_main, world, CASES)
    for i, case in enumerate(CASES):
        B, L, a, nq, Hq, Hkv, D, p, dtype = case
        q, k, v = case_inputs(i, case)
        got = {}
        for j, shard_anchor in enumerate(ANCHOR):
            layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
            got[shard_anchor] = layout.unshard([per_rank[r][2 * i + j] for r in range(world)])
        ref = reference.spava_attention(q, k, v, layout)
        low = reference.spava_attention(q, k, v, layout, upcast=False)
        low = low if dtype != torch.float32 else None
        name = f"W={world} case {i} {layout}"
        for shard_anchor, out in got.items():
            assert_attn_close(f"{name} sharded={shard_anchor}", out, ref, low)
            if p is None:
                dense = reference.dense_causal_attention(q, k, v)
                assert_attn_close(f"{name} sharded={shard_anchor} vs dense", out, dense, low)
        assert_attn_close(name + " sharded vs replicated", got[True], got[False], low)


def _missing_peer(rank, world):
    layout = SpavaLayout(60, 4, 2, world, 3)
    q, k, v = grid_inputs(1, 60, 2, 1, 8)
    if rank == 1:
        time.sleep(6)  # alive, but never joins the collectives
        return "skipped"
    try:
        spava_ext.spava_attention(*[layout.shard(t, rank) for t in (q, k, v)], layout,
                                  timeout=timedelta(seconds=3))
    except RuntimeError as e:
        return str(e)
    return "no error"


def test_missing_rank_raises_instead_of_hanging():
    msg = run_ranks(_missing_peer, 2)[0]
    assert "rank agreement' did not finish within 3 s (the timeout argument)" in msg, msg
    assert "rank(s) 1 did not reach it" in msg, msg


def test_world_size_mismatch_is_an_error():
    layout = SpavaLayout(60, 4, 2, 2, 3)
    q, k, v = grid_inputs(1, 60, 2, 1, 8)
    with pytest.raises(ValueError, match="layout.world_size = 2"):
        spava_ext.spava_attention(*[layout.shard(t, 0) for t in (q, k, v)], layout)
    layout1 = SpavaLayout(60, 4, 2, 1, 3)
    with pytest.raises(ValueError, match="rows on rank 0"):
        spava_ext.spava_attention(q[:, 1:], k[:, 1:], v[:, 1:], layout1)


@pytest.mark.parametrize("world", [1, 3, 5, 8])
def test_emulated_ranks_equal_the_reference(world):
    """All ranks in one process with the data they would exchange: the reference's output."""
    from spava_ext.attention import spava_attention_rank
    from spava_ext.comm import emulate_ranks

    for (i, case), shard_anchor in itertools.product(enumerate(CASES), ANCHOR):
        B, L, a, nq, Hq, Hkv, D, p, dtype = case
        layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard_anchor)
        q, k, v = case_inputs(i, case)
        outs = emulate_ranks(lambda r, comm: spava_attention_rank(
            *[layout.shard(t, r) for t in (q, k, v)], layout, comm), world)
        ref = reference.spava_attention(q, k, v, layout)
        low = reference.spava_attention(q, k, v, layout, upcast=False)
        assert_attn_close(f"emulated W={world} case {i} {layout}", layout.unshard(outs), ref,
                          low if dtype != torch.float32 else None)


def test_comm_options_for_sharing_sms(monkeypatch):
    """NCCL options cap the gathers' CTAs; a communicator's reserve_sms defaults to
    SPAVA_RESERVE_SMS (the SMs the attention launch leaves to the collectives); each
    GroupComm owns its communication streams."""
    from spava_ext.comm import GroupComm, SimulatedComm, nccl_options
    opts = nccl_options(max_ctas=3)
    if opts is not None:  # torch builds without NCCL have no options
        assert opts.is_high_priority_stream and opts.config.max_ctas == 3
    monkeypatch.delenv("SPAVA_RESERVE_SMS", raising=False)
    assert GroupComm().reserve_sms == 4 == SimulatedComm(0, 2).reserve_sms
    assert GroupComm(reserve_sms=0).reserve_sms == 0
    monkeypatch.setenv("SPAVA_RESERVE_SMS", "6")
    assert GroupComm().reserve_sms == 6 and SimulatedComm(0, 2).reserve_sms == 6
    opts = nccl_options()  # the CTA cap follows the reserve
    if opts is not None:
        assert opts.config.max_ctas == 6
    if torch.cuda.is_available():
        comm = GroupComm()
        assert comm.stream("cuda:0") is comm.stream("cuda:0")
        assert comm.stream("cuda:0").priority < 0


@pytest.mark.parametrize("world,rank", [(4, 0), (4, 2), (3, 2), (5, 4)])
def test_simulated_rank_synthesises_the_gathered_anchor(world, rank):
    """A simulated rank with a sharded anchor (SimulatedComm: the other ranks' parts are random
    data) computes what a replicated rank computes whose anchor K/V is the synthesised one (the
    same communicator, so the same passing blocks and question partials of the other ranks)."""
    from spava_ext.attention import spava_attention_rank
    from spava_ext.comm import SimulatedComm

    for i, case in enumerate(CASES[:3] + CASES[-2:]):
        B, L, a, nq, Hq, Hkv, D, p, dtype = case
        q, k, v = case_inputs(i, case)
        sharded = SpavaLayout(L, a, nq, world, p, shard_anchor=True)
        replicated = SpavaLayout(L, a, nq, world, p)
        comm = SimulatedComm(rank, world, seed=i)
        got = spava_attention_rank(*[sharded.shard(t, rank) for t in (q, k, v)], sharded, comm)
        a0, a1 = sharded.anchor_slice(rank)
        q_r, k_r, v_r = (replicated.shard(t, rank) for t in (q, k, v))
        if a > 0:  # the anchor the simulated rank saw: the synthesised slices and its own
            recv = comm.buffer((world, sharded.anchor_cap, 2, B, Hkv, D), k.dtype, k.device,
                               "anchor").flatten(0, 1)[:a]
            assert torch.equal(recv[a0:a1, 0], k[:, a0:a1].transpose(0, 1))
            k_r[:, :a], v_r[:, :a] = recv[:, 0].transpose(0, 1), recv[:, 1].transpose(0, 1)
        want = spava_attention_rank(q_r, k_r, v_r, replicated, comm)
        rows = torch.cat([torch.arange(a0, a1), torch.arange(a, replicated.local_len(rank))])
        assert_attn_close(f"simulated W={world} rank {rank} case {i}", got, want[:, rows])
