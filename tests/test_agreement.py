"""Ranks that disagree on a layer's configuration raise the same clear error on every rank."""

import time

import pytest
import torch

import spava_ext
from spava_ext import SpavaLayout, agreement
from spava_ext.comm import GroupComm
from utils import grid_inputs, run_ranks

BASE = dict(L=90, a=6, nq=3, p=4, pk=5, B=1, Hq=4, Hkv=2, D=16, dtype=torch.float32)

# (what differs on rank 1, the field the error must name)
MISMATCHES = [
    (dict(pk=3), "pool_kernel"),
    (dict(a=10), "anchor_len"),
    (dict(p=5), "passing_len"),
    (dict(p=None), "passing_len"),  # exact mode on one rank only
    (dict(dtype=torch.bfloat16), "dtype"),
    (dict(B=2), "batch"),
    (dict(Hkv=4), "heads_kv"),
    (dict(D=8), "head_dim"),
    (dict(L=91), "seq_len"),
    (dict(shard=True), "shard_anchor"),  # different local rows, each valid for its own layout
    (dict(attn="fp8"), "attn_mode"),  # FP8 attention on one rank only: gathers of other sizes
]


def _call(rank, world, cfg):
    layout = SpavaLayout(cfg["L"], cfg["a"], cfg["nq"], world, cfg["p"], cfg["pk"],
                         shard_anchor=cfg.get("shard", False))
    q, k, v = grid_inputs(cfg["B"], cfg["L"], cfg["Hq"], cfg["Hkv"], cfg["D"], dtype=cfg["dtype"],
                          seed=3)
    shard = [layout.shard(t, rank) for t in (q, k, v)]
    return spava_ext.spava_attention(*shard, layout, attn_dtype=cfg.get("attn"))


def _mismatch_main(rank, world, change):
    cfg = dict(BASE, **(change if rank == 1 else {}))
    t0 = time.monotonic()
    try:
        _call(rank, world, cfg)
    except agreement.RankMismatchError as e:
        return str(e), time.monotonic() - t0
    return None, time.monotonic() - t0


@pytest.mark.parametrize("change,field", MISMATCHES, ids=[m[1] + str(i)
                                                          for i, m in enumerate(MISMATCHES)])
def test_disagreeing_ranks_raise_on_every_rank(change, field):
    results = run_ranks(_mismatch_main, 2, change)
    for rank, (msg, seconds) in enumerate(results):
        assert msg is not None, f"rank {rank} returned an output instead of raising"
        assert f"{field}: rank 0 = " in msg, msg
        assert "spava_attention" in msg
        assert seconds < 30
    assert results[0][0] == results[1][0]  # the same error on every rank


def _repeat_main(rank, world):
    outs = [_call(rank, world, BASE) for _ in range(3)]
    return outs, len(GroupComm.of()._agreed)


def test_agreeing_ranks_check_once_and_run():
    (outs0, n0), (outs1, n1) = run_ranks(_repeat_main, 2)
    assert n0 == n1 == 1
    for outs in (outs0, outs1):
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_decode_field_values_round_trip():
    cfg = (100, 8, 3, 2, None, 5, True, 1, 4, 2, 16, torch.bfloat16, "cuda", 0.125, None,
           "fp8+hadamard")
    for name, value in zip(agreement.FIELDS, cfg):
        code = agreement._encode(name, value)
        assert agreement._decode(name, code) == (repr(value) if name == "softmax_scale"
                                                 else str(value))
