"""spava_ext.overlap.LayerOverlap: gathers, ready flags, one launch and the gather of one
problem's output, over gloo ranks (CPU) against the reference."""

import pytest
import torch

from spava_ext import envs, ops, reference
from spava_ext.attention import ExactRows
from spava_ext.comm import GroupComm, SimulatedComm
from spava_ext.overlap import MAX_GATHERS, LayerOverlap, sm_budget
from utils import assert_attn_close, run_ranks

B, H, D, N, ROWS, QUESTION = 2, 3, 16, 7, 5, 4


def _data(world):
    """Every rank's keys / values [B, N, H, D] and rows [B, ROWS, H, D], and question rows
    shared by all ranks, identical on every rank."""
    g = torch.Generator().manual_seed(world)
    kv = torch.randn(world, 2, B, N, H, D, generator=g)
    rows = torch.randn(world, B, ROWS, H, D, generator=g)
    question = torch.randn(B, QUESTION, H, D, generator=g)
    return kv, rows, question


def _layer(rank, world, comm):
    """Rank ``rank``'s rows see every rank's keys (gathered; they wait for flag 0), and its
    partial of the question rows over its own keys is gathered and merged: both equal attention
    over all keys."""
    kv, rows, question = _data(world)
    overlap = LayerOverlap(comm, torch.device("cpu"))
    (recv,) = overlap.start_gathers([kv[rank]], ["keys"])  # [W, 2, B, N, H, D]
    out = torch.empty_like(rows[rank])
    part, part_out, part_lse = ExactRows.partial_buffer(question)
    problems = [
        ops.AttnProblem(question, [kv[rank, 0]], [kv[rank, 1]], [0], [ops.FULL], part_out,
                        part_lse),
        ops.AttnProblem(rows[rank], [recv[j, 0] for j in range(world)],
                        [recv[j, 1] for j in range(world)], [0] * world, [ops.FULL] * world,
                        out, None, 0),
    ]
    parts, pending = overlap.launch(problems, None, share=part, written_by=0, what="partials")
    merged = torch.empty_like(question)
    ExactRows(parts, pending, tuple(question.shape)).finish(merged)
    return out, merged


def _rank_main(rank, world):
    return _layer(rank, world, GroupComm())


def _check(world, results):
    kv, rows, question = _data(world)
    keys, values = kv[:, 0].unbind(0), kv[:, 1].unbind(0)
    everything = ([0] * world, [ops.FULL] * world)
    for r, (out, merged) in enumerate(results):
        assert_attn_close(f"W={world} rank {r} rows", out,
                          reference.attn_fwd(rows[r], keys, values, *everything)[0])
        assert_attn_close(f"W={world} rank {r} question", merged,
                          reference.attn_fwd(question, keys, values, *everything)[0])


@pytest.mark.parametrize("world", [1, 3])
def test_layer_overlap_over_gloo_ranks_equals_the_reference(world):
    _check(world, run_ranks(_rank_main, world))


def test_layer_overlap_with_emulated_ranks_equals_the_reference():
    from spava_ext.comm import emulate_ranks

    _check(4, emulate_ranks(lambda r, comm: _layer(r, 4, comm), 4))


def test_layer_overlap_options(monkeypatch):
    """On the CPU: no gathers in flight, every SM (0); the poll limit and the timeout come
    from the environment and the communicator."""
    from datetime import timedelta

    overlap = LayerOverlap(GroupComm(timeout=timedelta(seconds=9)), torch.device("cpu"))
    assert not overlap.in_flight and overlap.sm_budget == 0 and overlap.timeout_s == 9.0
    assert overlap.spin_us == envs.ready_spin_us(leaves_sms=False)
    monkeypatch.setenv("SPAVA_READY_SPIN_US", "7")
    monkeypatch.setenv("SPAVA_COLLECTIVE_TIMEOUT_S", "12")
    overlap = LayerOverlap(SimulatedComm(1, 4), torch.device("cpu"))
    assert overlap.spin_us == 7 and overlap.timeout_s == 12.0
    assert sm_budget(SimulatedComm(1, 4, reserve_sms=4), torch.device("cpu")) == 0
    assert not ops.uses_sm90("cpu")
    overlap.start_gathers([torch.zeros(3)], ["x"])  # flag 0
    overlap.start_gathers([torch.zeros(2), torch.zeros(1)], ["y", "z"])  # flags 1 and 2
    assert overlap.ready.shape == (MAX_GATHERS,) == (3,)
    with pytest.raises(RuntimeError, match="at most 3 gathers with ready flags, got 4"):
        overlap.start_gathers([torch.zeros(3)], ["w"])
