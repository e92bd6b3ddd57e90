"""Hugging Face transformers integration: Spava attention in every decoder layer's prefill and
exact distributed decode, through the library's attention-function registry (no modeling files
are copied).

The attention function ``"spava"`` (registered on import) reads what to do from the active
:class:`SpavaRun` context: during the prefill it runs the rank's Spava schedule on the layer's
post-RoPE q/k/v and keeps the rank's share of K/V in a :class:`SpavaKVCache`; during decode it
runs :func:`decode_attention` over that cache. The model itself is called on the rank's local
tokens (``layout.shard``: with ``layout.shard_anchor`` only its slice of the anchor) with global
position ids, without a transformers cache.

The model family (text, Qwen-VL, InternVL, LLaVA-OneVision) comes from ``config.model_type``
(:mod:`.families`); a multimodal family builds the full prompt's embeddings and position ids with
a frame-parallel vision encoder before the prompt is sharded (:mod:`.multimodal`).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
from transformers import AttentionInterface

from ..attention_fp8 import attn_mode
from ..attention_op import attention_comm
from ..comm import GroupComm, rank_and_world
from ..decode import SpavaKVCache, decode_attention_comm
from ..decode_graph import DecodeGraph, graph_decode_attention
from ..graphs import PrefillGraphs, shape_key
from ..layout import SpavaLayout

__all__ = ["SpavaRun", "spava_prefill", "spava_decode_step", "generate", "ATTN_IMPLEMENTATION"]

ATTN_IMPLEMENTATION = "spava"


@dataclass
class SpavaRun:
    """What the ``"spava"`` attention function does while this run is active.

    ``layer_attention``: optional override ``fn(q, k, v, layout, comm, scale, layer) -> out``
    (``[B, L, H, D]`` tensors) used by the simulator to time other methods in the same model.
    ``capture``: optional ``fn(layer, q, k, v, out)`` called after each prefill layer (tests).
    ``step``: in decode, the generated tokens before this one as an int64 scalar on the device:
    the step runs the capturable attention (:func:`~spava_ext.decode_graph.graph_decode_attention`).
    ``attn_dtype``, ``hadamard``: the prefill's attention (FP8: see
    :func:`~spava_ext.spava_attention`); decode attends in the cache's dtype.
    """

    layout: SpavaLayout
    comm: object
    cache: Optional[SpavaKVCache] = None
    mode: str = "prefill"
    layer_attention: Optional[Callable] = None
    capture: Optional[Callable] = None
    step: Optional[torch.Tensor] = None
    attn_dtype: Optional[str] = None
    hadamard: bool = False


_ACTIVE: contextvars.ContextVar[Optional[SpavaRun]] = contextvars.ContextVar("spava_run",
                                                                            default=None)


def _spava_attention_interface(module, query, key, value, attention_mask, scaling=None,
                               dropout=0.0, **kwargs):
    """transformers attention function: q [B, H, L, D], k/v [B, Hkv, L, D] (post-RoPE)."""
    run = _ACTIVE.get()
    if run is None:
        raise RuntimeError("spava attention ran outside a Spava run: use "
                           "spava_ext.generate(...) or spava_prefill(...)")
    if attention_mask is not None:
        raise ValueError("spava attention: padded batches (an attention mask) are not supported")
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    layer = module.layer_idx
    if run.mode == "prefill":
        if run.layer_attention is not None:
            out = run.layer_attention(q, k, v, run.layout, run.comm, scaling, layer)
        else:
            out = attention_comm(q, k, v, run.layout, run.comm, scaling, run.attn_dtype,
                                 run.hadamard)
        if run.cache is not None:
            run.cache.store_prefill(layer, k, v)
        if run.capture is not None:
            run.capture(layer, q, k, v, out)
    elif run.step is not None:
        out = graph_decode_attention(q, k, v, run.cache, layer, run.comm, scaling, run.step)
    else:
        out = decode_attention_comm(q, k, v, run.cache, layer, run.comm, scaling)
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, _spava_attention_interface)


def _decoder(model) -> torch.nn.Module:
    """The decoder stack (called with inputs_embeds / position_ids): a multimodal model's
    language model, else the causal LM's base model."""
    base = getattr(model, "model", model)
    return getattr(base, "language_model", base)


def _run(model, run: SpavaRun, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
         **decoder_kwargs):
    decoder = _decoder(model)
    previous = decoder.config._attn_implementation
    decoder.set_attn_implementation(ATTN_IMPLEMENTATION)
    token = _ACTIVE.set(run)
    try:
        out = decoder(inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=False,
                      **decoder_kwargs)
    finally:
        _ACTIVE.reset(token)
        decoder.set_attn_implementation(previous)
    return out.last_hidden_state


@torch.no_grad()
def prefill_embeds(model, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
                   layout: SpavaLayout, comm, cache: Optional[SpavaKVCache] = None,
                   decoder_kwargs: Optional[dict] = None, **run_options) -> torch.Tensor:
    """Run the decoder on this rank's share of the full prompt's ``inputs_embeds [B, L, h]``
    with global ``position_ids`` (``[B, L]``, or ``[3, B, L]`` for M-RoPE), Spava attention in
    every layer. ``decoder_kwargs``: further decoder arguments, already for the rank's tokens
    (:meth:`Prompt.decoder_kwargs`). Returns the rank's last hidden states ``[B, L_r, h]`` in
    local order; the last row is the prompt's last token (exact on every rank)."""
    if inputs_embeds.shape[1] != layout.seq_len:
        raise ValueError(f"spava prefill: {inputs_embeds.shape[1]} tokens, layout expects "
                         f"{layout.seq_len}")
    rank = comm.rank
    local = layout.shard(inputs_embeds, rank, dim=1)
    positions = layout.shard(position_ids, rank, dim=position_ids.dim() - 1)
    return _run(model, SpavaRun(layout, comm, cache, "prefill", **run_options), local, positions,
                **(decoder_kwargs or {}))


def graphed_prefill(graphs: PrefillGraphs, model, prompt, layout: SpavaLayout, comm,
                    make_cache: Callable[[], SpavaKVCache], max_new_tokens: int,
                    **run_options):
    """:func:`prefill_embeds` of ``prompt`` (a :class:`~.multimodal.Prompt`) through
    ``graphs``: returns (last hidden states, the entry's KV cache). ``run_options``:
    :class:`SpavaRun` fields (``attn_dtype``, ``hadamard``)."""
    rank = comm.rank
    positions = prompt.positions
    inputs = {"embeds": layout.shard(prompt.embeds, rank, dim=1),
              "positions": layout.shard(positions, rank, dim=positions.dim() - 1),
              "kwargs": prompt.decoder_kwargs(layout, rank)}
    key = (id(model), id(comm), layout, max_new_tokens, shape_key(inputs),
           tuple(sorted(run_options.items())))

    def prefill(x: dict, cache: SpavaKVCache) -> torch.Tensor:
        run = SpavaRun(layout, comm, cache, "prefill", **run_options)
        return _run(model, run, x["embeds"], x["positions"], **x["kwargs"])

    return graphs.run(key, prefill, inputs, make_cache)


@torch.no_grad()
def spava_prefill(model, input_ids: torch.Tensor, layout: SpavaLayout, comm,
                  cache: Optional[SpavaKVCache] = None, **run_options) -> torch.Tensor:
    """:func:`prefill_embeds` for a text prompt ``input_ids [B, L]`` (1-D positions 0..L-1)."""
    B, L = input_ids.shape
    positions = torch.arange(L, device=input_ids.device).expand(B, L)
    return prefill_embeds(model, model.get_input_embeddings()(input_ids), positions, layout,
                          comm, cache, **run_options)


@torch.no_grad()
def spava_decode_step(model, token_ids: torch.Tensor, position: int, layout: SpavaLayout, comm,
                      cache: SpavaKVCache, rope_deltas: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """One decode step for ``token_ids [B, T]`` at global positions ``position ...`` (every rank,
    the same tokens; M-RoPE models add ``rope_deltas [B, 1]``); returns the logits of the last new
    token ``[B, vocab]`` (fp32)."""
    B, T = token_ids.shape
    positions = torch.arange(position, position + T, device=token_ids.device).expand(B, T)
    if rope_deltas is not None:  # text tokens after the vision part: the same id on all 3 axes
        positions = (positions + rope_deltas.to(positions.device)).unsqueeze(0).expand(3, B, T)
    run = SpavaRun(layout, comm, cache, "decode")
    hidden = _run(model, run, model.get_input_embeddings()(token_ids), positions)
    return model.lm_head(hidden[:, -1]).float()


def _next_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    inputs: dict,
    *,
    max_new_tokens: int,
    passing_len: Union[int, None, str] = "auto",
    anchor_len: Union[int, str] = "auto",
    query_len: Optional[int] = None,
    shard_anchor: Optional[bool] = None,
    group: Optional[dist.ProcessGroup] = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_token_ids: Optional[list[int]] = None,
    seed: int = 0,
    timings: Optional[dict] = None,
    on_token: Optional[Callable[[int, torch.Tensor], None]] = None,
    on_layer: Optional[Callable[[int], None]] = None,
    prefill_graphs: Optional[PrefillGraphs] = None,
    decode_graphs: bool = False,
    attn_dtype: Optional[str] = None,
    hadamard: bool = False,
) -> torch.Tensor:
    """Spava prefill of the whole prompt over the ranks of ``group``, then distributed decode.

    Args:
        model: a transformers model of a supported family (:mod:`.families`: Qwen2 / Qwen3 /
            Llama text, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, InternVL3,
            LLaVA-OneVision), the same weights on every rank.
        inputs: what the tokenizer / processor returns for the full prompt (``input_ids [B, L]``
            and, for a multimodal model, ``pixel_values_videos``, ``video_grid_thw`` ...); an
            ``attention_mask`` must be all ones (no padding).
        max_new_tokens: tokens to generate at most.
        passing_len: p, ``"auto"`` for the paper's default, ``None`` for exact mode.
        anchor_len: a, or ``"auto"``.
        query_len: question tokens at the end of the prompt (attended exactly). Default for VL
            models: everything after the last vision token; required for text models.
        shard_anchor: True: each rank runs the decoder on its slice of the anchor only (the
            layers' anchor K/V are gathered); False: the anchor is replicated on every rank
            (the same tokens, the anchor's linear work done W times); None (default): sharded
            when there are several ranks (with one, sharding would only add a copy).
        group: process group (default: the global one; none needed for a single process).
        do_sample, temperature, top_p, seed: sampling (rank 0 samples and broadcasts).
        stop_token_ids: default the model's ``eos_token_id``.
        timings: if a dict is given, it receives seconds for "vision+embed", "prefill",
            "first_token" and "decode" and the count "decode_tokens" (with device syncs).
        on_token: called as ``on_token(step, token_ids [B])`` after each generated token.
        on_layer: called as ``on_layer(layer)`` after each decoder layer of the prefill.
        prefill_graphs: a :class:`~spava_ext.graphs.PrefillGraphs` (CUDA only): the prefill
            runs as a CUDA graph, captured on the first prompt of a shape and replayed for later
            prompts of the same shape (no per-layer host work). Not with ``on_layer``.
        decode_graphs: (CUDA only) run every decode step after the first as one CUDA graph
            (:class:`~spava_ext.decode_graph.DecodeGraph`): no per-layer host work per token.
        attn_dtype, hadamard: the prefill's attention, ``"fp8"`` for FP8 (see
            :func:`~spava_ext.spava_attention`; CPU only until the FP8 kernel exists). Decode
            attends over the KV cache in the model's dtype.

    Returns the generated token ids ``[B, n <= max_new_tokens]`` on every rank.
    """
    import time

    from .families import family_for
    from .multimodal import Prompt, default_query_len

    def tick():
        if input_ids.is_cuda:
            torch.cuda.synchronize(input_ids.device)
        return time.perf_counter()

    attn_mode("spava_ext.generate", attn_dtype, hadamard)  # bad values fail before any work
    fp8 = {"attn_dtype": attn_dtype, "hadamard": hadamard}
    input_ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        raise ValueError("spava_ext.generate: padded prompts are not supported (attention_mask "
                         "has zeros)")
    family = family_for(model.config)
    if query_len is None and family.prepare is not None:
        query_len = default_query_len(model.config, input_ids)
    if query_len is None:
        raise ValueError("spava_ext.generate: query_len (question tokens at the end of the "
                         "prompt) is required for text models")
    rank, world = rank_and_world(group)
    comm = GroupComm.of(group)
    t0 = tick()
    if family.prepare is not None:
        prompt = family.prepare(model, inputs, comm)
    else:
        prompt = Prompt(model.get_input_embeddings()(input_ids),
                        torch.arange(input_ids.shape[1], device=input_ids.device
                                     ).expand_as(input_ids))
    L = input_ids.shape[1]
    auto = SpavaLayout.auto(L, query_len, world)
    layout = SpavaLayout(L, auto.anchor_len if anchor_len == "auto" else anchor_len, query_len,
                         world, auto.passing_len if passing_len == "auto" else passing_len,
                         shard_anchor=world > 1 if shard_anchor is None else shard_anchor)
    cfg = _decoder(model).config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def make_cache() -> SpavaKVCache:
        return SpavaKVCache(layout, rank, cfg.num_hidden_layers, input_ids.shape[0],
                            cfg.num_key_value_heads, head_dim, prompt.embeds.dtype,
                            input_ids.device, max_new_tokens)

    if prefill_graphs is not None and on_layer is not None:
        raise ValueError("spava_ext.generate: on_layer is not called from a replayed prefill "
                         "graph; pass prefill_graphs or on_layer, not both")
    if stop_token_ids is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop_token_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    generator = torch.Generator(device=input_ids.device).manual_seed(seed) if do_sample else None

    t1 = tick()
    if prefill_graphs is None:
        cache = make_cache()
        capture = (lambda layer, *tensors: on_layer(layer)) if on_layer is not None else None
        hidden = prefill_embeds(model, prompt.embeds, prompt.positions, layout, comm, cache,
                                prompt.decoder_kwargs(layout, rank), capture=capture, **fp8)
    else:
        hidden, cache = graphed_prefill(prefill_graphs, model, prompt, layout, comm,
                                        make_cache, max_new_tokens, **fp8)
    t2 = tick()
    logits = model.lm_head(hidden[:, -1]).float()
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    generated = []
    t3 = None
    step_graph = None
    if decode_graphs:
        if not input_ids.is_cuda:
            raise ValueError("spava_ext.generate: decode_graphs needs a CUDA device")

        def graph_step(token, positions, step):
            run = SpavaRun(layout, comm, cache, "decode", step=step)
            hidden = _run(model, run, model.get_input_embeddings()(token), positions)
            return model.lm_head(hidden[:, -1]).float()

        step_graph = DecodeGraph(graph_step, input_ids.shape[0], L, input_ids.device,
                                 prompt.rope_deltas)
    for step in range(max_new_tokens):
        token = _next_token(logits, do_sample, temperature, top_p, generator)
        if world > 1:  # rank 0 decides (sampling RNG, or bit differences) and tells the others
            dist.broadcast(token, src=dist.get_global_rank(group, 0) if group else 0, group=group)
        generated.append(token)
        t3 = t3 or tick()
        if on_token is not None:
            on_token(step, token)
        if stop_token_ids:
            done |= torch.isin(token, torch.tensor(stop_token_ids, device=token.device))
            if bool(done.all()):
                break
        if step + 1 < max_new_tokens and step_graph is not None:
            logits = step_graph(token[:, None], L + step)
        elif step + 1 < max_new_tokens:
            logits = spava_decode_step(model, token[:, None], L + step, layout, comm, cache,
                                       prompt.rope_deltas)
    if world > 1 and dist.get_backend(group) == "gloo":
        # gloo's worker thread drops its reference to the last broadcast (its tensor has a Python
        # object) just after reporting it done; a process that exits in that instant aborts in
        # interpreter finalization ("terminate called without an active exception": the work is
        # destroyed without the GIL; seen in a core dump on the 2-core CI machine). A barrier,
        # a round trip between the ranks, lets the worker finish first.
        dist.barrier(group=group)
    t4 = tick()
    if timings is not None:
        timings.update({"vision+embed": t1 - t0, "prefill": t2 - t1,
                        "first_token": (t3 or t4) - t0, "decode": t4 - (t3 or t4),
                        "decode_tokens": max(0, len(generated) - 1), "layout": repr(layout)})
    return torch.stack(generated, dim=1) if generated else input_ids.new_zeros(
        (input_ids.shape[0], 0))
