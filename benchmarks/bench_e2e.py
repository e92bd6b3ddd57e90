"""End-to-end prefill (routine ``e2e``): the Qwen2.5-VL-7B language model (random bf16 weights,
all 28 layers, MLPs included) on one H100.

* Spava: every rank's prefill of its local tokens ``[anchor | C_r | C_(2W-1-r) | question]``
  under the simulator (received passing blocks synthesised, no communication); the slowest rank
  is the critical path.
* ZigZag ring: every rank's prefill of its two chunks (L / W tokens), each layer's attention being
  the ring's per-rank work (its rows over all earlier keys, causal) on the same kernel;
  communication excluded, which favours the ring.
* Dense: the same model on the full sequence on one GPU, SDPA with the faster of the cuDNN and
  flash backends.

    python benchmarks/bench.py --routine e2e [--context 131072] [--world 8] [--layers 28]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_utils import gpu_time, write_result
from spava_ext import SpavaLayout, ops
from spava_ext.attention import KeySegments
from spava_ext.comm import SimulatedComm
from spava_ext.integrations.transformers import SpavaRun, _run, spava_prefill
from spava_ext.layout import balanced_split


def qwen25_vl_7b_lm(layers: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                      num_hidden_layers=layers, num_attention_heads=28, num_key_value_heads=4,
                      max_position_embeddings=1 << 20, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=False)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    return model.eval()


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
    D = cfg.hidden_size // cfg.num_attention_heads
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=int, default=131072)
    parser.add_argument("--question", type=int, default=64)
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    model = qwen25_vl_7b_lm(args.layers)
    L = args.context + args.question
    layout = SpavaLayout.auto(L, args.question, args.world)
    ids = torch.randint(0, model.config.vocab_size, (1, L), device="cuda")
    reps = dict(warmup=1, repeats=args.repeats)
    comms = [SimulatedComm(r, args.world) for r in range(args.world)]
    with torch.no_grad():
        spava = [gpu_time(lambda r=r: spava_prefill(model, ids, layout, comms[r]), **reps)["ms"]
                 for r in range(args.world)]
        ring = [gpu_time(ring_prefill_fn(model, ids, args.world, r), **reps)["ms"]
                for r in range(args.world)]
        dense = {}
        model.set_attn_implementation("sdpa")
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel(backend):
                dense[name] = gpu_time(lambda: model.model(input_ids=ids, use_cache=False),
                                       **reps)["ms"]
    crit, ring_crit, best = max(spava), max(ring), min(dense.values())
    result = {"layout": repr(layout), "layers": args.layers, "spava_rank_ms": spava,
              "ring_rank_ms": ring, "dense_ms": dense, "spava_critical_ms": crit,
              "ring_critical_ms": ring_crit, "speedup_vs_dense": best / crit,
              "speedup_vs_ring": ring_crit / crit}
    path = write_result("e2e_prefill", result)
    print(f"{layout}\nper-rank prefill (Spava), ms: " + " ".join(f"{t:.0f}" for t in spava))
    print("per-rank prefill (ZigZag ring, compute only), ms: " + " ".join(f"{t:.0f}" for t in ring))
    print("dense prefill on one GPU: " + ", ".join(f"{k} {v:.0f} ms" for k, v in dense.items()))
    print(f"end-to-end prefill speedup at W={args.world}: {best / crit:.2f}x vs dense, "
          f"{ring_crit / crit:.2f}x vs ZigZag ring  (wrote {path})")
    return 0
