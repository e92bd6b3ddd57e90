"""CUDA-graph replay of prefills whose shapes repeat (docs/design.md, "CUDA graphs").

The host work of one decoder layer's prefill (the transformers layer's Python and the Spava
schedule's enqueue) is about a millisecond. At 128K tokens per W = 8 rank the GPU's work per
layer is longer and hides it; at shorter contexts the GPU waits for the host. A
:class:`PrefillGraphs` captures a rank's whole prefill (all decoder layers, the Spava attention
with its collectives, the KV cache writes) once per shape key and replays it with one launch.

Key: whatever determines the launches (the layout, the rank, the input shapes and dtypes, the
device). A first call of a key runs the prefill eagerly once (it warms up libraries' lazy state
and runs the rank-agreement exchange, which cannot run during capture), captures it, and
replays the graph; later calls copy their inputs into the graph's static inputs and replay.
The captured prefill writes into a KV cache that the entry owns, so the cache handed back is
the same object on every call of a key: its prefill rows are rewritten by each replay and its
generated tokens are forgotten (:meth:`SpavaKVCache.rewind`).

Memory: an entry keeps its graph's private memory pool (the prefill's activations) and its KV
cache until it is evicted (``max_entries``, oldest first) or :meth:`PrefillGraphs.clear`.
Outputs are views of the pool, valid until the next call of the same key.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["PrefillGraphs", "capture", "shape_key"]


def shape_key(tree: Any) -> tuple:
    """Shapes, dtypes and devices of the tensors in ``tree``, and its other leaves: a hashable
    description of what a captured call depends on."""
    leaves, spec = tree_flatten(tree)
    desc = tuple((tuple(x.shape), x.dtype, str(x.device)) if isinstance(x, torch.Tensor) else x
                 for x in leaves)
    return desc, str(spec)


def capture(fn: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Run ``fn`` once eagerly on a side stream (lazy library state, the rank-agreement
    exchange, neither of which can run during capture), then capture one call of it: returns
    the graph and what the captured call returned (living in the graph's memory pool)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph, output


class _Entry:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: Any, output: torch.Tensor,
                 cache: Any) -> None:
        self.graph, self.inputs, self.output, self.cache = graph, inputs, output, cache


class PrefillGraphs:
    """Captured prefills by key, at most ``max_entries`` kept (each holds its memory pool).

    ``run(key, fn, inputs, make_cache)`` returns ``(output, cache)`` where ``output =
    fn(inputs, cache)`` as captured for ``key``; ``inputs`` is a tree (dict / list / tuple) of
    tensors and plain values, the tensors on one CUDA device.
    """

    def __init__(self, max_entries: int = 1) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"PrefillGraphs: max_entries must be an integer >= 1, got "
                             f"{max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.captures = 0  # graphs captured so far (a replay of a known key adds none)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every captured prefill and its memory."""
        self._entries.clear()

    @torch.no_grad()
    def run(self, key: Hashable, fn: Callable[[Any, Any], torch.Tensor], inputs: Any,
            make_cache: Callable[[], Any]) -> tuple[torch.Tensor, Any]:
        tensors = [x for x in tree_flatten(inputs)[0] if isinstance(x, torch.Tensor)]
        if not tensors or any(not t.is_cuda for t in tensors):
            raise ValueError("PrefillGraphs.run: CUDA graphs need the inputs on a CUDA device")
        entry = self._entries.get(key)
        if entry is None:
            entry = self._capture(fn, inputs, make_cache)
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
            for dst, src in zip(tree_flatten(entry.inputs)[0], tree_flatten(inputs)[0]):
                if isinstance(dst, torch.Tensor):
                    dst.copy_(src)
        if entry.cache is not None:
            entry.cache.rewind()
        entry.graph.replay()
        return entry.output, entry.cache

    def _capture(self, fn, inputs, make_cache) -> _Entry:
        static = tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, inputs)
        cache = make_cache()
        graph, output = capture(lambda: fn(static, cache))
        self.captures += 1
        return _Entry(graph, static, output, cache)
