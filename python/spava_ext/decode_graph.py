"""Decode steps as CUDA graphs (docs/design.md, "CUDA graphs").

An eager decode step enqueues every decoder layer's kernels from Python (several milliseconds
of host time for a 7B model), longer than the GPU needs for one token. :class:`DecodeGraph`
captures one rank's whole step (all layers, the exact distributed attention with its gather,
the LM head) once and replays it for every later token.

What changes between tokens lives on the device: the token ids, the position ids, and ``step``,
the number of tokens generated before this one. The only rank whose keys grow is rank 0 (it
keeps the generated tokens): in a replay it writes the new K/V at row ``prefill_len + step`` of
its cache (an index on the device) and attends in two parts, the prefill rows with ``attn_fwd``
(fixed length) and a window over every generated row with a mask ``row <= step`` computed on
the device; the two partial states are LSE-merged before the ranks' partials are gathered.
Every other rank's keys are its fixed prefill rows. The result equals the eager step up to the
fp32 rounding of the extra merge.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import ops
from .attention import ExactRows, check_call
from .decode import SpavaKVCache
from .graphs import capture
from .reference import default_softmax_scale

__all__ = ["DecodeGraph", "graph_decode_attention"]


def _window_partial(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial state (fp32 out ``[B, 1, Hq, D]``, lse ``[B, Hq, 1]``) of one query row ``q [B, 1,
    Hq, D]`` over ``k, v [B, G, Hkv, D]`` where ``visible [G]`` (bool, at least one true)."""
    B, _, Hq, D = q.shape
    Hkv = k.shape[2]
    qf = q[:, 0].float().view(B, Hkv, Hq // Hkv, D)
    kf, vf = k.float().transpose(1, 2), v.float().transpose(1, 2)  # [B, Hkv, G, D]
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale  # [B, Hkv, g, G]
    s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    vf = vf.masked_fill(~visible[:, None], 0.0)
    out = torch.matmul(torch.exp(s - lse), vf)  # [B, Hkv, g, D]
    return out.reshape(B, 1, Hq, D), lse.reshape(B, Hq, 1)


def graph_decode_attention(q, k_new, v_new, cache: SpavaKVCache, layer: int, comm,
                           softmax_scale: Optional[float], step: torch.Tensor) -> torch.Tensor:
    """Exact attention of one new token per sequence (``q [B, 1, Hq, D]``, ``k_new``, ``v_new
    [B, 1, Hkv, D]``) over the rank's cache, with the number of earlier generated tokens in
    ``step`` (int64 scalar on the device): the capturable form of
    :func:`~spava_ext.decode.decode_attention_comm`. Returns ``[B, 1, Hq, D]``, the same on
    every rank."""
    check_call("decode_attention", q, k_new, v_new)
    if q.shape[1] != 1:
        raise ValueError(f"decode_attention: a graphed step takes one token, got {q.shape[1]}")
    scale = default_softmax_scale(q.shape[-1]) if softmax_scale is None else softmax_scale
    n = cache.prefill_len
    prefill_k, prefill_v = cache.k[layer, :, :n], cache.v[layer, :, :n]
    part, part_out, part_lse = ExactRows.partial_buffer(q)
    if cache.rank == 0:
        rows = (n + step).view(1)
        cache.k[layer].index_copy_(1, rows, k_new)
        cache.v[layer].index_copy_(1, rows, v_new)
        pre_out = torch.empty(2, *q.shape, dtype=torch.float32, device=q.device)
        pre_lse = torch.empty(2, q.shape[0], q.shape[2], 1, dtype=torch.float32, device=q.device)
        ops.attn_fwd(q, [prefill_k], [prefill_v], [0], [ops.FULL], scale, out=pre_out[0],
                     lse=pre_lse[0])
        # rows past the step may hold anything (never written, or an earlier generation's):
        # their scores are masked and their values zeroed, so 0 * NaN never reaches the output
        window = torch.arange(cache.capacity - n, device=q.device) <= step
        pre_out[1], pre_lse[1] = _window_partial(q, cache.k[layer, :, n:], cache.v[layer, :, n:],
                                                 window, scale)
        ops.merge_states(pre_out, pre_lse, out=part_out, lse=part_lse)
    else:
        ops.attn_fwd(q, [prefill_k], [prefill_v], [0], [ops.FULL], scale, out=part_out,
                     lse=part_lse)
    parts = comm.buffer((comm.world, part.numel()), part.dtype, part.device, "decode partials")
    out = torch.empty_like(q)
    ExactRows(parts, comm.all_gather(parts, part, "decode partials"), tuple(q.shape)).finish(out)
    return out


class DecodeGraph:
    """One rank's decode step of ``model`` as a CUDA graph: ``__call__(token_ids [B, 1],
    position)`` returns the logits ``[B, vocab]`` (fp32) of the token at global ``position``
    (``layout.seq_len + step``), like :func:`~spava_ext.integrations.transformers.
    spava_decode_step`. ``step_fn(token_ids, positions, step)`` runs the eager step with the
    capturable attention (:func:`graph_decode_attention`); the first call runs it once eagerly
    (lazy library state, the rank-agreement exchange), captures it, and replays; later calls
    only replay. The logits are a view of the graph's memory, valid until the next call."""

    def __init__(self, step_fn, batch: int, prompt_len: int, device: torch.device,
                 rope_deltas: Optional[torch.Tensor] = None) -> None:
        self.step_fn, self.prompt_len = step_fn, prompt_len
        self.rope_deltas = rope_deltas
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.logits: Optional[torch.Tensor] = None

    def _positions(self) -> torch.Tensor:
        if self.rope_deltas is None:
            return self.position
        # text tokens after the vision part: the same id on all 3 M-RoPE axes
        shifted = self.position + self.rope_deltas.to(self.position.device)
        return shifted.unsqueeze(0).expand(3, *shifted.shape)

    @torch.no_grad()
    def __call__(self, token_ids: torch.Tensor, position: int) -> torch.Tensor:
        step = position - self.prompt_len
        if step < 0:
            raise ValueError(f"DecodeGraph: position {position} is inside the prompt "
                             f"({self.prompt_len} tokens)")
        self.token.copy_(token_ids)
        self.position.fill_(position)
        self.step.fill_(step)
        if self.graph is None:
            self.graph, self.logits = capture(
                lambda: self.step_fn(self.token, self._positions(), self.step))
        self.graph.replay()
        return self.logits
