"""spava: sequence-parallel approximate attention (Spava) for long-video LMMs.

Public API::

    SpavaLayout(seq_len, anchor_len, query_len, world_size, passing_len, pool_kernel=5)
    spava_attention(q, k, v, layout, group=None, softmax_scale=None)   # per-rank shard in, out
    reference.spava_attention(q, k, v, layout, softmax_scale=None)     # full sequence, fp32 math
    SpavaKVCache, decode_attention(q, k_new, v_new, cache, layer, group=None)  # exact decode
    ops.attn_fwd / ops.select_passing / ops.merge_states               # torch.ops.spava.*
"""

import torch  # noqa: F401  (loads libtorch before our extension)

from . import _load  # noqa: F401  (loads _C; a clear ImportError when it is missing or mismatched)
from . import ops, reference, trace  # noqa: F401  (trace: applies SPAVA_TRACE_FILE)
from . import attention_op  # noqa: F401  (registers torch.ops.spava.attention)
from ._version import __version__
from .attention import spava_attention
from .decode import SpavaKVCache, decode_attention
from .layout import SpavaLayout

__all__ = ["SpavaLayout", "spava_attention", "SpavaKVCache", "decode_attention", "reference",
           "ops", "generate", "__version__"]


def generate(model, inputs, **kwargs):
    """Spava prefill + distributed decode with a transformers model (see
    :func:`spava_ext.integrations.transformers.generate`; needs ``transformers``)."""
    from .integrations.transformers import generate as _generate

    return _generate(model, inputs, **kwargs)
