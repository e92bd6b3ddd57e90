"""End-to-end prefill (routine ``e2e``): a video LMM's language model (random bf16 weights, all
layers, MLPs included) on one H100: Qwen2.5-VL-7B (the default) or Qwen3-VL-8B.

* Spava: every rank's prefill of its local tokens ``[A_r | C_r | C_(2W-1-r) | question]`` (A_r
  its 1/W slice of the anchor; ``--anchor replicated``: the whole anchor on every rank) under the
  simulator (the received anchor slices and passing blocks synthesised, no communication); the
  slowest rank is the critical path.
* ZigZag ring: every rank's prefill of its two chunks (L / W tokens), each layer's attention being
  the ring's per-rank work (its rows over all earlier keys, causal) on the same kernel;
  communication excluded, which favours the ring.
* Dense: the same model on the full sequence on one GPU, SDPA with the faster of the cuDNN and
  flash backends.

Qwen3-VL-8B's language model is timed as transformers' Qwen3 text model of its shape: the same
matmuls and attention; 1-D RoPE stands in for the interleaved M-RoPE and the DeepStack additions
(three element-wise adds) are left out.

    python benchmarks/bench.py --routine e2e [--model qwen3-vl-8b] [--context 131072] [--world 8]
                                             [--anchor sharded|replicated]

``--tiny`` (with ``--device cpu`` and a short ``--context``) runs the same code on tiny random
models of the same families: the CPU smoke test of the routine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_utils import gpu_time, write_result
from spava_ext import SpavaLayout, ops
from spava_ext.attention import KeySegments
from spava_ext.comm import SimulatedComm
from spava_ext.integrations.transformers import SpavaRun, _run, spava_prefill
from spava_ext.layout import balanced_split

# The language models' published shapes (the checkpoints' config.json, text part):
# name -> (transformers family prefix, config arguments).
LANGUAGE_MODELS = {
    "qwen2.5-vl-7b": ("Qwen2", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen3-vl-8b": ("Qwen3", dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6})),
}
# --tiny: the same families at a size that runs in seconds on a CPU
TINY_LM = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16)
DENSE_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def language_model(name: str, layers: int | None = None, tiny: bool = False,
                   device: str = "cuda"):
    """The language model ``name`` of :data:`LANGUAGE_MODELS` with random weights (bf16 on a
    GPU, float32 on the CPU), ``layers`` decoder layers (default: the published count)."""
    import transformers

    family, shape = LANGUAGE_MODELS[name]
    shape = {**shape, **(TINY_LM if tiny else {})}
    if layers is not None:
        shape["num_hidden_layers"] = layers
    cfg = getattr(transformers, f"{family}Config")(max_position_embeddings=1 << 20,
                                                   tie_word_embeddings=False, **shape)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = getattr(transformers, f"{family}ForCausalLM")._from_config(cfg, dtype=dtype)
    return model.eval()


def time_ms(fn, device: str, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn()``: CUDA events on a GPU (``gpu_time``), the host clock on
    the CPU (the smoke run)."""
    if device == "cuda":
        return gpu_time(fn, warmup=warmup, repeats=repeats)["ms"]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def prompt_ids(model, length: int) -> torch.Tensor:
    """Random token ids ``[1, length]`` on the model's device (timings depend on shapes only)."""
    return torch.randint(0, model.config.vocab_size, (1, length), device=model.device)


@torch.no_grad()
def spava_rank_ms(model, ids: torch.Tensor, layout: SpavaLayout, warmup: int,
                  repeats: int) -> list[float]:
    """Every rank's Spava prefill of ``ids`` (simulated: one rank at a time), ms."""
    dev = ids.device.type
    comms = [SimulatedComm(r, layout.world_size) for r in range(layout.world_size)]
    return [time_ms(lambda c=c: spava_prefill(model, ids, layout, c), dev, warmup, repeats)
            for c in comms]


@torch.no_grad()
def dense_ms(model, ids: torch.Tensor, backends: list[str], warmup: int,
             repeats: int) -> dict:
    """The whole prefill of ``ids`` on one device, SDPA with each of ``backends`` (names in
    :data:`DENSE_BACKENDS`), ms; no logits (the base model's last hidden states)."""
    model.set_attn_implementation("sdpa")
    out = {}
    for name in backends:
        with sdpa_kernel(DENSE_BACKENDS[name]):
            out[name] = time_ms(lambda: model.model(input_ids=ids, use_cache=False),
                                ids.device.type, warmup, repeats)
    return out


def dense_backends(device: str) -> list[str]:
    """The dense baselines' SDPA backends: cuDNN and flash on a GPU; flash on the CPU (no cuDNN
    kernel there)."""
    return list(DENSE_BACKENDS) if device == "cuda" else ["flash"]


def ring_prefill_fn(model, ids: torch.Tensor, world: int, rank: int):
    """A callable running ZigZag ring's per-rank prefill of ``rank`` (compute only)."""
    L = ids.shape[1]
    sizes = balanced_split(L, 2 * world)
    starts = [sum(sizes[:i]) for i in range(2 * world)]
    chunks = (rank, 2 * world - 1 - rank)
    dev = ids.device
    pos = torch.cat([torch.arange(starts[c], starts[c] + sizes[c]) for c in chunks]).to(dev)
    local = ids[:, pos]
    cfg = model.config
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    g = torch.Generator(device=dev).manual_seed(rank)
    dtype = next(model.parameters()).dtype
    earlier = torch.randn(2, 1, L, cfg.num_key_value_heads, D, device=dev, dtype=dtype,
                          generator=g)  # the keys the ring would receive

    def attention(q, k, v, layout, comm, scale, layer):
        out = torch.empty_like(q)
        n0 = sizes[chunks[0]]
        for rows, c in ((slice(0, n0), chunks[0]), (slice(n0, None), chunks[1])):
            keys = KeySegments().add(earlier[0][:, : starts[c]], earlier[1][:, : starts[c]])
            keys.add(k[:, rows], v[:, rows], diag=0)
            ops.attn_fwd(q[:, rows], keys.k, keys.v, keys.row_begin, keys.diag, scale,
                         out=out[:, rows])
        return out

    embeds = model.get_input_embeddings()(local)
    run = SpavaRun(None, None, None, "prefill", layer_attention=attention)
    return lambda: _run(model, run, embeds, pos.unsqueeze(0))


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The options the e2e and ttft routines share."""
    parser.add_argument("--question", type=int, default=64)
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="timed calls per measurement, after one warm-up call")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random models of the same families (smoke run)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=list(LANGUAGE_MODELS), default="qwen2.5-vl-7b")
    parser.add_argument("--context", type=int, default=131072)
    parser.add_argument("--layers", type=int, default=None,
                        help="decoder layers (default: the model's published count)")
    parser.add_argument("--anchor", choices=["sharded", "replicated"], default="sharded",
                        help="Spava's anchor: each rank runs the decoder on 1/W of it and the "
                             "layers gather its K/V (sharded, the default), or every rank runs "
                             "all of it (replicated)")
    add_common_arguments(parser, repeats=2)


def run(args: argparse.Namespace) -> int:
    model = language_model(args.model, args.layers, args.tiny, args.device)
    L = args.context + args.question
    layout = SpavaLayout.auto(L, args.question, args.world,
                              shard_anchor=args.anchor == "sharded")
    ids = prompt_ids(model, L)
    reps = dict(warmup=1, repeats=args.repeats)
    spava = spava_rank_ms(model, ids, layout, **reps)
    with torch.no_grad():
        ring = [time_ms(ring_prefill_fn(model, ids, args.world, r), args.device, **reps)
                for r in range(args.world)]
    dense = dense_ms(model, ids, dense_backends(args.device), **reps)
    crit, ring_crit, best = max(spava), max(ring), min(dense.values())
    result = {"model": args.model, "tiny": args.tiny, "layout": repr(layout),
              "anchor": args.anchor,
              "layers": model.config.num_hidden_layers, "warmup": 1, "repeats": args.repeats,
              "spava_rank_ms": spava, "ring_rank_ms": ring, "dense_ms": dense,
              "spava_critical_ms": crit, "ring_critical_ms": ring_crit,
              "speedup_vs_dense": best / crit, "speedup_vs_ring": ring_crit / crit}
    name = "e2e_prefill" if args.model == "qwen2.5-vl-7b" else f"e2e_prefill_{args.model}"
    if args.anchor == "replicated":  # the A/B's other half, kept beside the default's file
        name += "_replicated-anchor"
    path = write_result(name, result)
    print(f"{args.model}: {layout}\nper-rank prefill (Spava, {args.anchor} anchor), ms: "
          + " ".join(f"{t:.0f}" for t in spava))
    print("per-rank prefill (ZigZag ring, compute only), ms: " + " ".join(f"{t:.0f}" for t in ring))
    print("dense prefill on one GPU: " + ", ".join(f"{k} {v:.0f} ms" for k, v in dense.items()))
    print(f"end-to-end prefill speedup at W={args.world}: {best / crit:.2f}x vs dense, "
          f"{ring_crit / crit:.2f}x vs ZigZag ring  (wrote {path})")
    return 0
