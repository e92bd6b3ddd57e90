"""The kernels routine's choice of calls that dense causal SDPA can run as the very same problem
(benchmarks/workload.py, CPU): rank 0's [anchor | C_0] call is one, no other call of the
benchmark is, and segments that do not continue each other in memory are refused; and the
wait for the card's temperature (benchmarks/bench_utils.py)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import workload

from spava_ext import SpavaLayout
from spava_ext.attention import KeySegments, host1_keys, host2_keys, question_keys


def rank_inputs(layout, rank, Hkv=2, D=8):
    n = layout.local_len(rank)
    k, v = torch.randn(1, n, Hkv, D), torch.randn(1, n, Hkv, D)
    shape = (layout.world_size, layout.passing_cap, 2, 1, Hkv, D)
    return k, v, torch.randn(shape), torch.randn(shape)


def test_rank0_host1_is_dense_causal():
    layout = SpavaLayout.auto(4096 + 64, 64, 4)
    k, v, recv1, _ = rank_inputs(layout, 0)
    s = layout.local_segments(0)
    L = s.anchor + s.chunk1
    keys = host1_keys(k, v, layout, 0, recv1)
    q = torch.randn(1, L, 4, 8)
    kk, vv = workload.dense_equivalent(q, keys)
    assert torch.equal(kk, k[:, :L]) and torch.equal(vv, v[:, :L])
    assert keys.pairs(L) == L * (L + 1) // 2  # the TF/s of both count the same pairs


def test_other_calls_are_not():
    layout = SpavaLayout.auto(4096 + 64, 64, 4)
    for rank in range(layout.world_size):
        k, v, recv1, recv2 = rank_inputs(layout, rank)
        s = layout.local_segments(rank)
        q = torch.randn(1, layout.local_len(rank), 4, 8)
        calls = [(q[:, s.chunk2_start: s.question_start],
                  host2_keys(k, v, layout, rank, recv1, recv2)),
                 (q[:, s.question_start:], question_keys(k, v, layout, rank))]
        if rank:  # passing blocks before the anchor
            calls.append((q[:, : s.anchor + s.chunk1], host1_keys(k, v, layout, rank, recv1)))
        for qr, keys in calls:
            assert workload.dense_equivalent(qr, keys) is None


def test_segments_must_continue_in_memory():
    k, v = torch.randn(1, 64, 2, 8), torch.randn(1, 64, 2, 8)
    q = torch.randn(1, 48, 4, 8)
    gap = KeySegments().add(k[:, :16], v[:, :16], diag=0).add(k[:, 32:64], v[:, 32:64], diag=-16)
    assert workload.dense_equivalent(q, gap) is None
    joined = KeySegments().add(k[:, :16], v[:, :16], diag=0).add(k[:, 16:48], v[:, 16:48],
                                                                  diag=-16)
    assert torch.equal(workload.dense_equivalent(q, joined)[0], k[:, :48])
    shifted = KeySegments().add(k[:, :16], v[:, :16], diag=0).add(k[:, 16:48], v[:, 16:48],
                                                                   diag=-15)
    assert workload.dense_equivalent(q, shifted) is None


def test_cool_to_waits_for_the_limit(monkeypatch):
    import bench_utils as bu

    temps = iter([68, 60, 52, 45, 44])
    monkeypatch.setattr(bu, "card_temperature_c", lambda: next(temps))
    monkeypatch.setattr("time.sleep", lambda s: None)
    c = bu.cool_to(45)
    assert (c["before_c"], c["after_c"], c["limit_c"]) == (68, 45, 45)
    assert next(temps) == 44  # stopped reading once at the limit


def test_cool_to_without_a_reading_or_limit(monkeypatch):
    import bench_utils as bu

    monkeypatch.setattr(bu, "card_temperature_c", lambda: None)
    assert bu.cool_to(45)["wait_s"] == 0.0
    monkeypatch.setattr(bu, "card_temperature_c", lambda: 70)
    assert bu.cool_to(0) == {"limit_c": 0, "before_c": 70, "after_c": 70, "wait_s": 0.0}
