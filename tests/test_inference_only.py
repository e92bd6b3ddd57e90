"""Inference only (docs/design.md "Policies"): with grad mode on, inputs that require grad
raise a clear error before any work (no hidden autograd graph); under no_grad the same inputs
give the reference's output with no graph; the KV cache never keeps a graph."""

import pytest
import torch

import spava_ext
from spava_ext import SpavaKVCache, SpavaLayout, reference
from utils import assert_attn_close, grid_inputs


def _inputs(L, requires_grad):
    return [t.requires_grad_(requires_grad) for t in grid_inputs(1, L, 2, 1, 16)]


def test_prefill_with_grad_raises_before_building_a_graph():
    """The L = 4096 case that built a +315 MB hidden graph: now an error naming the call."""
    layout = SpavaLayout(4096, 64, 16, 1, 32)
    q, k, v = _inputs(4096, True)
    with pytest.raises(RuntimeError, match=r"spava_attention: inference only \(no backward\), "
                                           r"but q, k, v require\(s\) grad"):
        spava_ext.spava_attention(q, k, v, layout)


def test_prefill_under_no_grad_keeps_no_graph():
    layout = SpavaLayout(300, 16, 8, 1, 16)
    q, k, v = _inputs(300, True)
    with torch.no_grad():
        out = spava_ext.spava_attention(q, k, v, layout)
    assert out.grad_fn is None and not out.requires_grad
    assert_attn_close("no_grad", out, reference.spava_attention(q.detach(), k.detach(),
                                                                v.detach(), layout))
    # grad mode on, inputs without grad: no graph either
    out2 = spava_ext.spava_attention(q.detach(), k.detach(), v.detach(), layout)
    assert out2.grad_fn is None and torch.equal(out2, out)


def test_decode_with_grad_raises_and_the_cache_keeps_no_graph():
    layout = SpavaLayout(40, 4, 2, 1, 3)
    q, k, v = _inputs(41, True)
    cache = SpavaKVCache(layout, 0, 1, 1, 1, 16, torch.float32, "cpu", 2)
    cache.store_prefill(0, k[:, :40], v[:, :40])  # grad mode on: stored as values
    assert cache.k.grad_fn is None and not cache.k.requires_grad
    new = (q[:, 40:], k[:, 40:], v[:, 40:])
    with pytest.raises(RuntimeError, match=r"decode_attention: inference only"):
        spava_ext.decode_attention(*new, cache, 0)
    assert cache.lengths == [40]  # nothing appended
    with torch.no_grad():
        out = spava_ext.decode_attention(*new, cache, 0)
    assert out.grad_fn is None and not cache.k.requires_grad
    dense = reference.dense_causal_attention(q.detach(), k.detach(), v.detach())[:, 40:]
    assert_attn_close("decode", out, dense)
