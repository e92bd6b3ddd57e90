"""Decode cost (routine ``decode``): tokens/s of a video LMM's language model (random bf16
weights, all layers, MLPs and LM head included) generating after a long prompt, Spava at W ranks
against dense decode on one GPU with the same KV length.

* Spava, per rank (simulated, :class:`SimulatedComm`): the rank's :class:`SpavaKVCache` holds its
  share of the prompt as after a Spava prefill (``[anchor slice r | C_r | C_(2W-1-r)]``, rank 0
  also the question), filled with random K/V of those shapes through ``store_prefill``; one step
  is the step ``generate(decode_graphs=True)`` captures (spava_ext.decode_graph: every layer the
  rank's partial over its cache, rank 0's also over a window of generated rows, the gather of
  the W partials, the LSE merge). The gather's latency cannot be measured on one device: it is
  **modelled** as ``--collective-us`` per layer, added to the step's device time.
* Dense: the same model with a static K/V buffer of L + 1 rows per layer (the prompt's L rows
  random, the new token's K/V written at row L) and the fastest of several attention kernels
  over it (SDPA flash / cuDNN / efficient, spava's ``attn_fwd``); the one used is recorded.

Each step (and each breakdown part: the 28 partials, the 28 merges) is captured in a CUDA graph
and replayed: the time is the device's per token, without host launch overhead, as in a decode
loop that keeps the token on the device. Where capture fails, the eager time is recorded with
the error.

    python benchmarks/bench.py --routine decode [--context 131072] [--world 8] [--collective-us 20]
    SPAVA_ATTN_DECODE=1 python benchmarks/bench.py --routine decode   # with the decode kernel

``--tiny --device cpu`` runs the same code on a tiny model (the CPU smoke test; no graphs).
"""

from __future__ import annotations

import argparse
import contextvars
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface

from bench_e2e import LANGUAGE_MODELS, add_common_arguments, language_model, time_ms
from bench_utils import capture_graph, graph_time, int_list, write_result
from spava_ext import SpavaLayout, envs, ops
from spava_ext.attention import ExactRows, KeySegments
from spava_ext.comm import SimulatedComm
from spava_ext.decode import SpavaKVCache
from spava_ext.integrations.transformers import SpavaRun, _run

# The per-layer all-gather of the decode partials (28 x 128 fp32 outputs + 28 lse per rank, 14 KB)
# has not been measured on this project's machines (benchmarks/results has only the 36 MB
# passing-block gathers, bandwidth-bound). Published nccl-tests runs on 8-GPU NVLink-4 / NVSwitch
# Hopper nodes put a small-message collective at 12.5-16.7 us without CUDA graphs
# (all_reduce_perf, 4 B - 4 KB, 8 x H20: github.com/deepseek-ai/DeepEP/issues/303) and about 6 us
# at 2 GPUs with CUDA graphs (8 x H100 HGX, NCCL 2.20: github.com/NVIDIA/nccl/issues/1259);
# 20 us is the conservative end for an 8-rank all-gather of 14 KB parts.
DEFAULT_COLLECTIVE_US = 20.0
COLLECTIVE_SOURCE = (
    "modelled, not measured: nccl-tests small-message latency on 8-GPU NVLink-4/NVSwitch Hopper "
    "nodes, 12.5-16.7 us (github.com/deepseek-ai/DeepEP/issues/303, 8 x H20 all_reduce_perf "
    "4 B-4 KB) and ~6 us at 2 GPUs with CUDA graphs (github.com/NVIDIA/nccl/issues/1259, "
    "8 x H100 HGX); 20 us taken as the conservative end for W = 8, 14 KB parts")
SWEEP_US = (0.0, 10.0, 20.0, 40.0)
# room for generated tokens in the caches: rank 0's graphed step attends over a window this long
GENERATED = 128
BAR = 0.10  # issue bar: W = 8 decode at most 10 % slower than one-GPU decode

DENSE_ATTENTION = "spava_bench_dense_decode"
# dense attention kernels over the static K/V: name -> SDPA backend (None: spava's attn_fwd)
DENSE_KERNELS = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
                 "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION, "attn_fwd": None}
CPU_KERNELS = {"sdpa-math": SDPBackend.MATH, "attn_fwd": None}


class DenseKV:
    """The one-GPU decode's static K/V: per layer ``[B, Hkv, L + 1, D]`` (transformers' layout),
    rows 0..L-1 the prompt's (random), row L the new token's. ``backend``: an SDPA backend, or
    None for ``ops.attn_fwd``."""

    def __init__(self, layers: int, heads_kv: int, head_dim: int, prompt: int, dtype, device):
        g = torch.Generator(device=device).manual_seed(0)
        self.k = torch.randn((layers, 1, heads_kv, prompt + 1, head_dim), generator=g,
                             device=device, dtype=dtype)
        self.v = torch.randn_like(self.k)
        self.prompt, self.backend = prompt, None

    def attend(self, layer: int, q, k_new, v_new, scale):
        """q ``[B, H, 1, D]``; writes the new K/V at row L; returns ``[B, 1, H, D]``."""
        k, v = self.k[layer], self.v[layer]
        k[:, :, self.prompt:].copy_(k_new)
        v[:, :, self.prompt:].copy_(v_new)
        if self.backend is None:
            out, _ = ops.attn_fwd(q.transpose(1, 2), [k.transpose(1, 2)], [v.transpose(1, 2)],
                                  [0], [ops.FULL], scale)
            return out
        with sdpa_kernel(self.backend):
            out = F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)
        return out.transpose(1, 2)


_DENSE: contextvars.ContextVar = contextvars.ContextVar("spava_bench_dense_kv", default=None)


def _dense_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers attention function of the dense baseline: q ``[B, H, 1, D]``, k/v
    ``[B, Hkv, 1, D]``."""
    return _DENSE.get().attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(DENSE_ATTENTION, _dense_attention)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=list(LANGUAGE_MODELS), default="qwen2.5-vl-7b")
    parser.add_argument("--context", type=int, default=131072, help="prompt context tokens")
    parser.add_argument("--ranks", type=int_list, default=None,
                        help="ranks to time (default: every rank)")
    parser.add_argument("--collective-us", type=float, default=DEFAULT_COLLECTIVE_US,
                        help="modelled latency of one all-gather of the decode partials, us "
                             "(not measurable on one GPU)")
    add_common_arguments(parser, repeats=30)


def timed(fn, device: str, repeats: int) -> dict:
    """Per-call ms of ``fn``: a CUDA graph of one call replayed (``mode`` "cuda graph", plus the
    host's ``launch_ms`` of a replay), else eager (the CPU; or a failed capture, its error in
    ``mode``). ``enqueue_ms``: the host's time to issue one eager call."""
    enqueue = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        enqueue.append((time.perf_counter() - t0) * 1e3)
    out = {"enqueue_ms": statistics.median(enqueue)}
    if device == "cuda":
        torch.cuda.synchronize()
        try:
            graph = capture_graph([fn])
        except Exception as e:  # a step that cannot be captured is still timed eagerly
            torch.cuda.synchronize()
            out["mode"] = f"eager (capture failed: {type(e).__name__}: {e})"[:300]
        else:
            t = graph_time(graph, repeats=repeats)
            launch = []
            for _ in range(5):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                graph.replay()
                launch.append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize()
            del graph
            return {**out, "mode": "cuda graph", "ms": t["ms"], "min_ms": t["min_ms"],
                    "launch_ms": statistics.median(launch)}
    else:
        out["mode"] = "eager"
    out["ms"] = time_ms(fn, device, warmup=1, repeats=repeats)
    return out


def model_dims(model) -> tuple[int, int, int, int]:
    cfg = model.config
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, D


@torch.no_grad()
def spava_rank(model, layout: SpavaLayout, rank: int, args) -> dict:
    """One rank's decode step and its parts (ms per token)."""
    layers, Hq, Hkv, D = model_dims(model)
    dtype, dev = model.dtype, model.device
    cache = SpavaKVCache(layout, rank, layers, 1, Hkv, D, dtype, dev,
                         max_new_tokens=GENERATED)
    g = torch.Generator(device=dev).manual_seed(rank)
    n = layout.local_len(rank)
    k = torch.randn((1, n, Hkv, D), generator=g, device=dev, dtype=dtype)
    for layer in range(layers):  # what a Spava prefill leaves: this rank's rows of every layer
        cache.store_prefill(layer, k, torch.randn_like(k))
    del k
    comm = SimulatedComm(rank, layout.world_size)
    token = torch.zeros((1, 1), dtype=torch.long, device=dev)
    positions = torch.full((1, 1), layout.seq_len, dtype=torch.long, device=dev)
    generated = torch.zeros((), dtype=torch.long, device=dev)  # tokens before this one

    def decode_step():  # the step that generate(decode_graphs=True) captures
        run = SpavaRun(layout, comm, cache, "decode", step=generated)
        hidden = _run(model, run, model.get_input_embeddings()(token), positions)
        return model.lm_head(hidden[:, -1]).float()

    step = timed(decode_step, dev.type, args.repeats)

    q = torch.randn((1, 1, Hq, D), generator=g, device=dev, dtype=dtype)
    keys = [KeySegments().add(*cache.layer_kv(layer)) for layer in range(layers)]
    parts = [ExactRows.partial_buffer(q) for _ in range(layers)]

    def partials():  # each layer's partial over the rank's cache
        for ks, (_, out, lse) in zip(keys, parts):
            ops.attn_fwd(q, ks.k, ks.v, ks.row_begin, ks.diag, out=out, lse=lse)

    W = layout.world_size
    outs = torch.randn((W, 1, 1, Hq, D), generator=g, device=dev)
    lses = torch.randn((W, 1, Hq, 1), generator=g, device=dev)
    merged = torch.empty_like(q)

    def merges():
        for _ in range(layers):
            ops.merge_states(outs, lses, out=merged)

    attention = timed(partials, dev.type, args.repeats)
    merge = timed(merges, dev.type, args.repeats)
    collectives = layers * args.collective_us * 1e-3
    kv_rows = cache.prefill_len + (1 if rank == 0 else 0)  # rank 0 also the new token
    return {"rank": rank, "kv_rows": kv_rows, "step": step, "attention": attention,
            "merge": merge, "attention_ms": attention["ms"], "merge_ms": merge["ms"],
            "linear_other_ms": step["ms"] - attention["ms"] - merge["ms"],
            "collectives_ms": collectives, "token_ms": step["ms"] + collectives}


@torch.no_grad()
def dense(model, prompt: int, args) -> dict:
    """The one-GPU decode step over ``prompt`` cached rows with each kernel; the fastest wins."""
    layers, Hq, Hkv, D = model_dims(model)
    dev = model.device
    kv = DenseKV(layers, Hkv, D, prompt, model.dtype, dev)
    decoder = model.model
    token = torch.zeros((1, 1), dtype=torch.long, device=dev)
    positions = torch.full((1, 1), prompt, dtype=torch.long, device=dev)
    q = torch.randn((1, Hq, 1, D), device=dev, dtype=model.dtype)
    k_new = torch.randn((1, Hkv, 1, D), device=dev, dtype=model.dtype)

    def step():
        hidden = decoder(input_ids=token, position_ids=positions, use_cache=False)
        return model.lm_head(hidden.last_hidden_state[:, -1]).float()

    def attention():
        for layer in range(layers):
            kv.attend(layer, q, k_new, k_new, None)

    kernels = {}
    previous = decoder.config._attn_implementation
    decoder.set_attn_implementation(DENSE_ATTENTION)
    handle = _DENSE.set(kv)
    try:
        for name, backend in (DENSE_KERNELS if dev.type == "cuda" else CPU_KERNELS).items():
            kv.backend = backend
            try:
                s, a = timed(step, dev.type, args.repeats), timed(attention, dev.type, args.repeats)
            except (RuntimeError, ValueError, TypeError) as e:  # no kernel for these inputs
                kernels[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                continue
            kernels[name] = {"step": s, "attention": a, "token_ms": s["ms"],
                             "attention_ms": a["ms"], "linear_other_ms": s["ms"] - a["ms"]}
    finally:
        _DENSE.reset(handle)
        decoder.set_attn_implementation(previous)
    timed_ok = {n: r for n, r in kernels.items() if "token_ms" in r}
    if not timed_ok:
        raise RuntimeError(f"decode: no dense kernel ran: {kernels}")
    best = min(timed_ok, key=lambda n: timed_ok[n]["token_ms"])
    return {"kv_rows": prompt + 1, "kernels": kernels, "best": best, **{
        key: timed_ok[best][key] for key in ("token_ms", "attention_ms", "linear_other_ms")}}


def slowdown(spava_step_ms: float, layers: int, collective_us: float, dense_ms: float) -> float:
    """Spava's per-token time over dense's, minus 1, with ``collective_us`` per layer."""
    return (spava_step_ms + layers * collective_us * 1e-3) / dense_ms - 1


def run(args: argparse.Namespace) -> int:
    model = language_model(args.model, tiny=args.tiny, device=args.device)
    L = args.context + args.question
    layout = SpavaLayout.auto(L, args.question, args.world)
    ranks = args.ranks if args.ranks is not None else list(range(args.world))
    bad = [r for r in ranks if not 0 <= r < args.world]
    if bad:
        raise SystemExit(f"decode: --ranks {bad} outside 0 .. {args.world - 1}")
    spava = [spava_rank(model, layout, r, args) for r in ranks]
    base = dense(model, L, args)
    crit = max(spava, key=lambda r: r["token_ms"])
    layers = model.config.num_hidden_layers
    result = {
        "model": args.model, "tiny": args.tiny, "layout": repr(layout), "context": args.context,
        "question": args.question, "world": args.world, "layers": layers,
        "repeats": args.repeats, "attn_decode_kernel": envs.attn_decode(),
        "collective_us": args.collective_us, "collective_modelled": True, "collective_source": COLLECTIVE_SOURCE,
        "spava_ranks": spava, "dense": base, "critical_rank": crit["rank"],
        "spava_token_ms": crit["token_ms"], "dense_token_ms": base["token_ms"],
        "spava_tokens_per_s": 1e3 / crit["token_ms"], "dense_tokens_per_s": 1e3 / base["token_ms"],
        "slowdown": crit["token_ms"] / base["token_ms"] - 1, "bar": BAR,
        "slowdown_at_collective_us": {f"{us:g}": slowdown(crit["step"]["ms"], layers, us,
                                                          base["token_ms"]) for us in SWEEP_US}}
    result["bar_met"] = result["slowdown"] <= BAR
    path = write_result("decode", result)
    print(report(result) + f"\n(wrote {path})")
    return 0


def report(res: dict) -> str:
    """The printed table."""
    lines = [(f"{res['model']} decode after {res['context']} + {res['question']} prompt "
              f"tokens, W = {res['world']}: {res['layout']}"),
             (f"collectives: {res['collective_us']:g} us per all-gather x {res['layers']} "
              f"layers -- {res['collective_source']}"),
             (f"{'':>9} {'KV rows':>8} {'token ms':>9} {'attention':>9} {'merge':>7} "
              f"{'coll.':>6} {'linear+':>8} {'host/step':>9} {'launch':>7}  mode")]
    for r in res["spava_ranks"]:
        lines.append(f"{'rank ' + str(r['rank']):>9} {r['kv_rows']:>8} {r['token_ms']:>9.3f} "
                     f"{r['attention_ms']:>9.3f} {r['merge_ms']:>7.3f} {r['collectives_ms']:>6.3f}"
                     f" {r['linear_other_ms']:>8.3f} {r['step']['enqueue_ms']:>9.3f} "
                     f"{r['step'].get('launch_ms', float('nan')):>7.3f}  {r['step']['mode']}")
    d = res["dense"]
    for name, k in d["kernels"].items():
        if "error" in k:
            lines.append(f"{'dense':>9} {name}: {k['error']}")
            continue
        step = k["step"]
        lines.append(f"{'dense':>9} {d['kv_rows']:>8} {k['token_ms']:>9.3f} "
                     f"{k['attention_ms']:>9.3f} {'-':>7} {'-':>6} {k['linear_other_ms']:>8.3f} "
                     f"{step['enqueue_ms']:>9.3f} {step.get('launch_ms', float('nan')):>7.3f}"
                     f"  {name}, {step['mode']}" + ("  <- best" if name == d["best"] else ""))
    sweep = ", ".join(f"{us} us: {100 * s:+.1f} %" for us, s in
                      res["slowdown_at_collective_us"].items())
    lines.append(f"tokens/s: Spava W = {res['world']} (rank {res['critical_rank']}) "
                 f"{res['spava_tokens_per_s']:.1f}, dense one GPU ({d['best']}) "
                 f"{res['dense_tokens_per_s']:.1f}; Spava slower by {100 * res['slowdown']:+.1f} % "
                 f"(bar <= {100 * res['bar']:.0f} %: {'met' if res['bar_met'] else 'NOT met'})")
    lines.append(f"slowdown vs modelled collective latency: {sweep}")
    lines.append("ms per token, device time; coll.: the modelled gathers; linear+: the step less "
                 "attention and merge (projections, MLP, norms, RoPE, LM head, the simulated "
                 "gather's copy); host/step: the host's time to issue one eager step; launch: "
                 "one graph replay's")
    return "\n".join(lines)
