"""Bad input to the layer calls and the op wrappers: a clear error that names the call and the
offending value (not a ZeroDivisionError, an IndexError or the inner op's message)."""

import pytest
import torch

import spava_ext
from spava_ext import SpavaKVCache, SpavaLayout, ops
from utils import grid_inputs

LAYOUT = SpavaLayout(40, 4, 2, 1, 3)


def _call(q, k, v):
    return spava_ext.spava_attention(q, k, v, LAYOUT)


def test_zero_kv_heads_is_named():
    q, k, v = grid_inputs(1, 40, 2, 1, 8)
    with pytest.raises(ValueError, match=r"spava_attention: needs Hq, Hkv .* Hkv = 0"):
        _call(q, k[:, :, :0], v[:, :, :0])


def test_zero_head_dim_is_named():
    q, k, v = grid_inputs(1, 40, 2, 1, 8)
    with pytest.raises(ValueError, match=r"spava_attention: needs .* head dim D >= 1.* D = 0"):
        _call(q[..., :0], k[..., :0], v[..., :0])


def test_float64_is_named_at_the_call():
    q, k, v = (t.double() for t in grid_inputs(1, 40, 2, 1, 8))
    with pytest.raises(TypeError, match=r"spava_attention: dtype torch.float64 is not supported "
                                        r"on cpu \(supported: float32, bfloat16, float16\)"):
        _call(q, k, v)


def _decode_setup(store=True):
    q, k, v = grid_inputs(1, 41, 2, 1, 8)
    cache = SpavaKVCache(LAYOUT, 0, 2, 1, 1, 8, torch.float32, "cpu", 4)
    if store:
        cache.store_prefill(0, k[:, :40], v[:, :40])
    return cache, (q[:, 40:], k[:, 40:], v[:, 40:])


@pytest.mark.parametrize("layer", [2, -1, 7])
def test_decode_layer_out_of_range_is_named(layer):
    cache, new = _decode_setup()
    with pytest.raises(IndexError, match=rf"decode_attention: layer {layer} is not a layer of "
                                         r"this cache \(0 \.\. 1\)"):
        spava_ext.decode_attention(*new, cache, layer)


def test_decode_before_the_prefill_is_an_error():
    cache, new = _decode_setup()
    with pytest.raises(RuntimeError, match="decode_attention: layer 1 has no prefill in the "
                                           "cache of rank 0"):
        spava_ext.decode_attention(*new, cache, 1)  # layer 0 was stored, layer 1 was not
    assert cache.lengths == [40, 0]  # nothing appended


def test_decode_tokens_that_do_not_fit_the_cache():
    cache, (q, k, v) = _decode_setup()
    with pytest.raises(ValueError, match=r"decode_attention: k_new .* does not fit the cache"):
        spava_ext.decode_attention(q[..., :4], k[..., :4], v[..., :4], cache, 0)


def test_attn_fwd_group_without_problems():
    with pytest.raises(ValueError, match="attn_fwd_group: no problems given"):
        ops.attn_fwd_group([])
