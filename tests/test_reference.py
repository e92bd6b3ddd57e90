"""The reference itself, checked against a brute-force reading of docs/design.md (float64 loops)."""

import math
from fractions import Fraction

import pytest
import torch

from spava_ext import SpavaLayout, reference
from utils import grid_inputs, randn_inputs


def brute_selection(q, k, layout):
    """set of (b, h, position) selected, straight from the definition (mean form, computed
    exactly with rationals so that ties are real ties)."""
    B, L, Hq, D = q.shape
    Hkv = k.shape[2]
    G = Hq // Hkv
    nq = layout.query_len
    qs = [[[[Fraction(float(x)) for x in q[b, layout.question_start + t, hq]] for hq in range(Hq)]
           for t in range(nq)] for b in range(B)]
    chosen = set()
    for i in range(layout.num_chunks):
        s, e = layout.chunk_bounds(i)
        m = layout.passing_sizes[i]
        for b in range(B):
            for h in range(Hkv):
                qbar = [[sum(qs[b][t][h * G + g][d] for g in range(G)) / G for d in range(D)]
                        for t in range(nq)]
                kf = [[Fraction(float(x)) for x in k[b, j, h]] for j in range(s, e)]
                score = [sum(sum(kj[d] * qb[d] for d in range(D)) for qb in qbar) / nq
                         for kj in kf]
                half = layout.pool_kernel // 2
                smooth = [max(score[max(0, j - half): j + half + 1]) for j in range(e - s)]
                order = sorted(range(e - s), key=lambda j: (-smooth[j], j))[:m]
                chosen.update((b, h, s + j) for j in order)
    return chosen


def brute_spava(q, k, v, layout):
    B, L, Hq, D = q.shape
    Hkv = k.shape[2]
    G = Hq // Hkv
    chosen = brute_selection(q, k, layout)

    def region(x):
        if x < layout.anchor_len:
            return "anchor", None
        if x >= layout.question_start:
            return "question", None
        return "chunk", max(i for i in range(layout.num_chunks) if layout.chunk_starts[i] <= x)

    out = torch.zeros(B, L, Hq, D, dtype=torch.float64)
    for b in range(B):
        for hq in range(Hq):
            h = hq // G
            for x in range(L):
                kind, ci = region(x)
                keys = []
                for y in range(x + 1):
                    ky, cy = region(y)
                    if kind in ("anchor", "question"):
                        ok = kind == "question" or ky == "anchor"
                    else:
                        ok = ky == "anchor" or cy == ci or (cy is not None and cy < ci
                                                            and (b, h, y) in chosen)
                    if ok:
                        keys.append(y)
                s = torch.stack([q[b, x, hq].double() @ k[b, y, h].double() for y in keys])
                p = torch.softmax(s / math.sqrt(D), 0)
                out[b, x, hq] = sum(p[i] * v[b, y, h].double() for i, y in enumerate(keys))
    return out


@pytest.mark.parametrize("L,a,nq,W,p,Hq,Hkv", [
    (23, 3, 2, 2, 2, 2, 1),
    (30, 0, 1, 3, 1, 3, 3),
    (19, 5, 3, 1, 3, 4, 2),
])
def test_reference_matches_brute_force(L, a, nq, W, p, Hq, Hkv):
    q, k, v = grid_inputs(2, L, Hq, Hkv, 4, seed=L)
    layout = SpavaLayout(L, a, nq, W, p, pool_kernel=3)
    got = reference.spava_attention(q.double(), k.double(), v.double(), layout)
    want = brute_spava(q, k, v, layout)
    assert (got.double() - want).abs().max().item() < 1e-5  # fp32 math vs float64 loops


@pytest.mark.parametrize("L,a,nq,W", [(64, 7, 3, 2), (101, 0, 1, 4), (40, 40 - 5, 5, 3)])
def test_exact_mode_is_dense_causal(L, a, nq, W):
    q, k, v = randn_inputs(2, L, 6, 2, 8, seed=1)
    layout = SpavaLayout(L, a, nq, W, None)
    dense = reference.dense_causal_attention(q, k, v)
    assert (reference.spava_attention(q, k, v, layout) - dense).abs().max().item() < 1e-5
    # p >= every chunk is exact as well
    layout = SpavaLayout(L, a, nq, W, max(layout.chunk_sizes) or 1)
    assert (reference.spava_attention(q, k, v, layout) - dense).abs().max().item() < 1e-5


def test_approximate_mode_differs_only_where_allowed():
    """Anchor, C0 and question rows are exact; later chunk rows are not (here)."""
    L, a, nq, W = 200, 16, 4, 2
    q, k, v = randn_inputs(1, L, 4, 2, 16, seed=3)
    layout = SpavaLayout(L, a, nq, W, 5)
    dense = reference.dense_causal_attention(q, k, v)
    got = reference.spava_attention(q, k, v, layout)
    err = (got - dense).abs().amax(dim=(0, 2, 3))
    exact_rows = torch.cat([torch.arange(0, layout.chunk_bounds(0)[1]),
                            torch.arange(layout.question_start, L)])
    assert err[exact_rows].max() < 1e-5
    assert err[layout.chunk_bounds(3)[0]: layout.question_start].max() > 1e-3


def test_tie_rule_prefers_lower_positions():
    # constant keys: every score ties, so the first positions of the chunk must be selected
    q = torch.ones(1, 2, 2, 4)
    k = torch.ones(1, 12, 1, 4)
    idx, kv = reference.select_passing(q, k, k, [2], [9], 4, 5)
    assert idx[0, 0, 0].tolist() == [2, 3, 4, 5]
    # a single peak smoothed by pool 5 makes a plateau of 5 equal values: lowest 3 of it win
    k = torch.zeros(1, 12, 1, 4)
    k[0, 7] = 1.0
    idx, _ = reference.select_passing(q, k, k, [0], [12], 3, 5)
    assert idx[0, 0, 0].tolist() == [5, 6, 7]


def test_merge_states_of_split_keys_equals_whole():
    q, k, v = randn_inputs(2, 30, 4, 2, 8, seed=5)
    qq = q[:, -3:]
    full, full_lse = reference.attn_fwd(qq, [k], [v], [0], [10**9])
    parts = [reference.attn_fwd(qq, [k[:, s:e]], [v[:, s:e]], [0], [10**9])
             for s, e in [(0, 10), (10, 10), (10, 30)]]  # includes an empty part
    out, lse = reference.merge_states(torch.stack([p[0] for p in parts]),
                                      torch.stack([p[1] for p in parts]))
    assert (out - full).abs().max() < 1e-5 and (lse - full_lse).abs().max() < 1e-5
    assert torch.isneginf(parts[1][1]).all() and (parts[1][0] == 0).all()


def test_schedule_pair_count_matches_the_reference_mask():
    """The per-rank key segments cover exactly the allowed pairs of docs/design.md (Visibility)."""
    from spava_ext.attention import host1_keys, host2_keys, question_keys

    L, a, nq, W, p = 230, 21, 5, 3, 4
    layout = SpavaLayout(L, a, nq, W, p)
    q, k, v = grid_inputs(1, L, 2, 1, 8)
    want = int(reference.allowed_mask(q, k, layout)[0, 0].sum())
    recv = torch.zeros(W, layout.passing_cap, 2, 1, 1, 8)
    got = a * (a + 1) // 2  # anchor rows, counted once (every rank recomputes them)
    for r in range(W):
        s = layout.local_segments(r)
        kr, vr = layout.shard(k, r), layout.shard(v, r)
        got += host1_keys(kr, vr, layout, r, recv).pairs(a + s.chunk1) - a * (a + 1) // 2
        got += host2_keys(kr, vr, layout, r, recv, recv).pairs(s.chunk2)
        got += question_keys(kr, vr, layout, r).pairs(nq)
    assert got == want
