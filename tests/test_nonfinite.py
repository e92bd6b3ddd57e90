"""Non-finite inputs (docs/design.md "Non-finite inputs"): the ops and the reference follow one
policy. Selection: NaN scores pool to NaN and rank above every number, NaNs by position.
Attention: a row is NaN exactly where the reference's is; rows that see no NaN are unaffected."""

import pytest
import torch

import spava_ext
from spava_ext import SpavaLayout, ops, reference
from utils import grid_inputs

NAN, INF = float("nan"), float("inf")
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


def _dtype(device):
    return torch.float32 if device == "cpu" else torch.bfloat16


def _select_inputs(device, poison):
    """q [1, 5, 4, 16], k = v [1, 200, 2, 16] on a 0.5 grid, poisoned in place by poison(q, k)."""
    q, k, _ = grid_inputs(1, 200, 4, 2, 16, seed=5)
    poison(q, k)
    return q[:, -5:].to(device, _dtype(device)), k.to(device, _dtype(device))


POISONS = {
    "nan_key": lambda q, k: k[0, [30, 31, 90], 0, 3].fill_(NAN),
    "nan_key_every_head": lambda q, k: k[0, 150, :, :].fill_(NAN),
    "negative_nan_key": lambda q, k: k[0, 60, 1, 0].fill_(-NAN),
    "inf_keys": lambda q, k: (k[0, 10, 0, :].fill_(INF), k[0, 20, 1, :].fill_(-INF)),
    "nan_query": lambda q, k: q[0, -1, 2, 5].fill_(NAN),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pool_kernel", [1, 5])
@pytest.mark.parametrize("poison", sorted(POISONS))
def test_select_nonfinite_equals_reference(poison, pool_kernel, device):
    q, k = _select_inputs(device, POISONS[poison])
    starts, lens = [0, 60, 128], [60, 68, 72]
    idx, kv = ops.select_passing(q, k, k, starts, lens, 17, pool_kernel)
    idx_ref, kv_ref = reference.select_passing(q.cpu(), k.cpu(), k.cpu(), starts, lens, 17,
                                               pool_kernel)
    assert torch.equal(idx.cpu(), idx_ref)
    torch.testing.assert_close(kv.cpu(), kv_ref, rtol=0, atol=0, equal_nan=True)


def test_select_nan_ranks_first_by_position():
    """The rule itself, not only agreement: NaN above +inf, NaNs by position, then the rest."""
    q = torch.ones(1, 1, 1, 1)
    k = torch.tensor([1.0, NAN, 5.0, INF, NAN, 7.0, NAN]).view(1, 7, 1, 1)
    idx, _ = ops.select_passing(q, k, k, [0], [7], 3, 1)
    assert idx.flatten().tolist() == [1, 4, 6]
    idx, _ = ops.select_passing(q, k, k, [0], [7], 4, 1)
    assert idx.flatten().tolist() == [1, 3, 4, 6]
    idx, _ = ops.select_passing(q, k, k, [0], [7], 2, 3)  # pooled: NaN spreads to 0 .. 6
    assert idx.flatten().tolist() == [0, 1]


ATTN_POISONS = {
    "nan_key": lambda q, k, v: k[0, 23, 1, 4].fill_(NAN),
    "nan_query": lambda q, k, v: q[0, 7, 3, 0].fill_(NAN),
    "inf_key": lambda q, k, v: k[0, 12, 0, 2].fill_(INF),
    "neg_inf_key": lambda q, k, v: k[0, 30, 1, :].fill_(-INF),
}


@pytest.mark.parametrize("poison", sorted(ATTN_POISONS))
def test_attn_nonfinite_equals_reference(poison):
    """Causal + full + offset segments: NaN / inf patterns and finite values as the reference."""
    q, k, v = grid_inputs(2, 64, 4, 2, 16, seed=9)
    v = torch.randn_like(v)
    ATTN_POISONS[poison](q, k, v)
    ks, vs = [k[:, :20], k[:, 20:50], k[:, 50:]], [v[:, :20], v[:, 20:50], v[:, 50:]]
    rb, dg = [0, 10, 40], [ops.FULL, -5, 2]
    out, lse = ops.attn_fwd(q, ks, vs, rb, dg)
    out_ref, lse_ref = reference.attn_fwd(q, ks, vs, rb, dg)
    assert torch.equal(out.isnan(), out_ref.isnan()) and torch.equal(lse.isnan(), lse_ref.isnan())
    assert out.isnan().any() and not out.isnan().all()  # the poison reached some rows, not all
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5, equal_nan=True)
    torch.testing.assert_close(lse, lse_ref, atol=1e-5, rtol=1e-5, equal_nan=True)


def test_attn_nan_value_reaches_rows_that_see_it():
    """A NaN value row: every row that sees it is NaN (rows that do not see it are unspecified:
    a zero weight times NaN), in the op as in the reference."""
    q, k, v = grid_inputs(1, 64, 4, 2, 16, seed=9)
    v[0, 40, 0, 3] = NAN  # segment 1, local key 20: seen by rows i >= 25 (20 <= i - 5)
    ks, vs = [k[:, :20], k[:, 20:50], k[:, 50:]], [v[:, :20], v[:, 20:50], v[:, 50:]]
    rb, dg = [0, 10, 40], [ops.FULL, -5, 2]
    for out in (ops.attn_fwd(q, ks, vs, rb, dg)[0], reference.attn_fwd(q, ks, vs, rb, dg)[0]):
        assert out[0, 25:, :2, 3].isnan().all()  # kv head 0 = q heads 0, 1
        assert not out[0, :, 2:].isnan().any()  # kv head 1 never reads it


def test_layer_nan_key_selects_as_reference():
    """A NaN key in a chunk: the op selects the keys the reference selects, so the layer's NaN
    rows are the reference's (they differed: 14 vs 40 NaN rows)."""
    layout = SpavaLayout(300, 40, 12, 1, 16)
    q, k, v = grid_inputs(1, 300, 4, 2, 16, seed=2)
    k[0, 100, 0, 5] = NAN
    out = spava_ext.spava_attention(q, k, v, layout)
    ref = reference.spava_attention(q, k, v, layout)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), ref.isnan())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, equal_nan=True)
