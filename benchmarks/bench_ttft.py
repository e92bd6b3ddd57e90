"""Time to first token, vision included (routine ``ttft``): Qwen2.5-VL-7B and Qwen3-VL-8B
(random bf16 weights, the published shapes) on a video whose visual tokens make a 128K-token
prompt, on one H100:

* vision on one GPU: the vision tower on the whole video;
* vision frame-parallel at W: the largest rank's share of the temporal patches, a simulated rank
  of ``frame_parallel_video_embeds`` (its encoder, the padded send copy and the concatenation
  of the gathered rows), plus the all-gather of the embeddings (DeepStack features included)
  modelled from the bytes each rank receives at the link bandwidth (the simulator's NVLink
  default, 450 GB/s per direction: NCCL reaches less, so the modelled gather is a lower bound);
* the language model's prefill of the prompt with the e2e routine's functions: Spava per rank
  (the slowest rank) and dense SDPA cuDNN on one GPU.

TTFT (Spava) = vision per rank + all-gather + Spava prefill; TTFT (dense) = vision on one GPU +
dense prefill. Left out of both: the processor (decoding, resizing), the placeholder scatter and
position ids (small, the same on both sides), the first token's logits; and for Spava the
language model's own communication (the layer routine models its overlap).

The video: ``--frames`` frames of ``--grid`` x ``--grid`` patches (default 1024 frames of
32 x 32: 448 px for Qwen2.5-VL's 14-pixel patches, 512 px for Qwen3-VL's 16), two frames per
temporal patch, (grid / 2)^2 tokens per temporal patch after the 2 x 2 merge: 512 x 256 = 131072
visual tokens, then the 64-token question.

The towers attend within each temporal patch (and Qwen2.5-VL's 8 x 8-patch windows): here with
torch's varlen attention over the packed sequences (flash; cuDNN >= 9.18 takes sequences over
128 tokens), the kind of kernel a deployment's flash-attention path runs; ``--vision-attention
sdpa`` takes transformers' SDPA path instead, one SDPA call per window from Python (8192 calls
per layer for Qwen2.5-VL's whole video).

    python benchmarks/bench.py --routine ttft [--frames 1024] [--grid 32] [--world 8]
"""

from __future__ import annotations

import argparse
import gc
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from bench_e2e import (add_common_arguments, dense_backends, dense_ms, language_model,
                       prompt_ids, spava_rank_ms, time_ms)
from bench_utils import write_result
from spava_ext import SpavaLayout
from spava_ext.comm import SimulatedComm
from spava_ext.integrations.qwen_vl import frame_parallel_video_embeds
from spava_ext.layout import balanced_split
from spava_ext.simulate import SimConfig

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # older torch: --vision-attention sdpa
    varlen_attn = None

# The vision towers' published configs (the checkpoints' config.json, vision_config); the
# config classes' defaults differ in Qwen2.5-VL's hidden_size (3584; the 7B's is 1280) and
# Qwen3-VL's out_hidden_size (3584; the 8B's is 4096).
VISION = {
    "qwen2.5-vl-7b": ("Qwen2_5_VLVisionConfig", dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, hidden_act="silu",
        patch_size=14, temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=3584,
        window_size=112, fullatt_block_indexes=[7, 15, 23, 31])),
    "qwen3-vl-8b": ("Qwen3VLVisionConfig", dict(
        depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
        hidden_act="gelu_pytorch_tanh", patch_size=16, temporal_patch_size=2,
        spatial_merge_size=2, out_hidden_size=4096, num_position_embeddings=2304,
        deepstack_visual_indexes=[8, 16, 24])),
}
TINY_VISION = {  # --tiny: Qwen2.5-VL windows of 2 x 2 merged tokens, one full-attention layer
    "qwen2.5-vl-7b": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                          out_hidden_size=64, window_size=56, fullatt_block_indexes=[1]),
    "qwen3-vl-8b": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                        out_hidden_size=64, num_position_embeddings=16,
                        deepstack_visual_indexes=[0, 1]),
}

# transformers passes the packed sequences' bounds (cu_seqlens) only to attention functions
# whose name contains "flash"
VARLEN_ATTENTION = "spava_bench_flash_varlen"


def _per_sequence_sdpa(q, k, v, cu_q, cu_k, max_q, max_k, scale=None):
    """``varlen_attn``'s computation (not causal), SDPA per sequence: the CPU smoke run."""
    bounds = cu_q.tolist()
    return torch.cat([F.scaled_dot_product_attention(
        *(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=scale).transpose(0, 1)
        for a, b in zip(bounds, bounds[1:])])


def varlen_vision_attention(module, query, key, value, attention_mask=None, scaling=None,
                            dropout=0.0, cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """A vision tower's attention: ``query/key/value [1, H, S, D]`` hold packed sequences with
    bounds ``cu_seq_lens_q [n + 1]``, each attending within itself (not causal). Returns
    ``([1, S, H, D], None)``: torch's varlen flash attention on a GPU, SDPA per sequence on
    the CPU."""
    if cu_seq_lens_q is None:
        raise ValueError(f"{VARLEN_ATTENTION}: called without cu_seq_lens_q (the packed "
                         f"sequences' bounds); it serves the Qwen-VL vision towers only")
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [S, H, D]
    cu = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
    attend = varlen_attn if q.is_cuda else _per_sequence_sdpa
    return attend(q, k, v, cu, cu, max_length_q, max_length_q, scale=scaling).unsqueeze(0), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_vision_attention)


def vision_tower(name: str, tiny: bool = False, device: str = "cuda", attention: str = "varlen"):
    """The vision tower of ``name`` with random weights (bf16 on a GPU, float32 on the CPU),
    attention :data:`VARLEN_ATTENTION` (``"varlen"``) or transformers' SDPA path
    (``"sdpa"``)."""
    import transformers
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel)

    classes = {"qwen2.5-vl-7b": Qwen2_5_VisionTransformerPretrainedModel,
               "qwen3-vl-8b": transformers.Qwen3VLVisionModel}
    config_class, shape = VISION[name]
    cfg = getattr(transformers, config_class)(**{**shape, **(TINY_VISION[name] if tiny else {})})
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        visual = classes[name]._from_config(cfg, dtype=dtype).eval()
    if attention == "varlen":
        if device != "cpu" and varlen_attn is None:
            raise RuntimeError(f"bench ttft: this torch ({torch.__version__}) has no "
                               f"torch.nn.attention.varlen; use --vision-attention sdpa")
        # set on the config directly: set_attn_implementation looks for the flash_attn package
        # for any name with "flash" in it
        visual.config._attn_implementation = VARLEN_ATTENTION
    return visual


def video(visual, frames: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel patches ``[t * grid * grid, C * temporal_patch * patch^2]`` of a video of
    ``frames`` frames of ``grid x grid`` patches, and its grid ``[[t, grid, grid]]``."""
    cfg = visual.config
    if frames % cfg.temporal_patch_size or grid % cfg.spatial_merge_size:
        raise ValueError(f"bench ttft: --frames {frames} must be a multiple of the temporal "
                         f"patch ({cfg.temporal_patch_size}) and --grid {grid} of the spatial "
                         f"merge ({cfg.spatial_merge_size})")
    t = frames // cfg.temporal_patch_size
    width = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
    pixels = torch.randn(t * grid * grid, width, device=visual.device, dtype=visual.dtype)
    return pixels, torch.tensor([[t, grid, grid]], device=visual.device)


class _UnreadGather(SimulatedComm):
    """A simulated rank whose received rows are left uninitialised: timing never reads them,
    and SimulatedComm's random fill would draw gigabytes of numbers on the host."""

    def buffer(self, shape, dtype, device, what):
        return torch.empty(shape, dtype=dtype, device=device)


@torch.no_grad()
def vision_ms(visual, pixels: torch.Tensor, grid_thw: torch.Tensor, world: int, link_gbs: float,
              warmup: int, repeats: int) -> dict:
    """The tower on the whole video (one rank) and the largest rank's share at ``world`` ranks
    (frame_parallel_video_embeds), ms, and the modelled all-gather of the embeddings."""
    cfg = visual.config
    deep = len(getattr(cfg, "deepstack_visual_indexes", None) or [])
    width = cfg.out_hidden_size * (1 + deep)
    base = SimpleNamespace(visual=visual, config=SimpleNamespace(
        text_config=SimpleNamespace(hidden_size=cfg.out_hidden_size)))
    dev = pixels.device.type

    def encode(comm):
        return lambda: frame_parallel_video_embeds(base, pixels, grid_thw, comm)

    t, h, w = grid_thw[0].tolist()
    shares = balanced_split(t, world)
    rank = shares.index(max(shares))
    rows = max(shares) * h * w // cfg.spatial_merge_size ** 2  # the padded share of every rank
    received = (world - 1) * rows * width * pixels.element_size()
    return {"one_gpu_ms": time_ms(encode(SimulatedComm(0, 1)), dev, warmup, repeats),
            "rank_ms": time_ms(encode(_UnreadGather(rank, world)), dev, warmup, repeats),
            "rank": rank, "temporal_patches_per_rank": shares, "gather_width": width,
            "gather_bytes_per_rank": received, "gather_ms": received / (link_gbs * 1e9) * 1e3}


def peak_gib(device: str) -> float | None:
    """The device's peak allocated memory since the last call, GiB (None on the CPU)."""
    if device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2 ** 30
    torch.cuda.reset_peak_memory_stats()
    return peak


def release(device: str) -> None:
    """Give the finished part's memory back before the next model is built."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def vision_part(name: str, args: argparse.Namespace, reps: dict) -> dict:
    visual = vision_tower(name, args.tiny, args.device, args.vision_attention)
    pixels, grid_thw = video(visual, args.frames, args.grid)
    cfg = visual.config
    used = {k: getattr(cfg, k) for k in VISION[name][1]}
    out = vision_ms(visual, pixels, grid_thw, args.world, args.link_gbs, **reps)
    t = int(grid_thw[0, 0])
    return {"vision_config": used, "vision_attention": cfg._attn_implementation,
            "frame_px": args.grid * cfg.patch_size, "temporal_patches": t,
            "visual_tokens": t * args.grid ** 2 // cfg.spatial_merge_size ** 2,
            "vision": out, "vision_peak_gib": peak_gib(args.device)}


def language_part(name: str, tokens: int, args: argparse.Namespace, reps: dict) -> dict:
    model = language_model(name, None, args.tiny, args.device)
    L = tokens + args.question
    layout = SpavaLayout.auto(L, args.question, args.world)
    ids = prompt_ids(model, L)
    spava = spava_rank_ms(model, ids, layout, **reps)
    dense = dense_ms(model, ids, dense_backends(args.device)[:1], **reps)
    return {"prompt_tokens": L, "layout": repr(layout), "layers": model.config.num_hidden_layers,
            "spava_prefill_rank_ms": spava, "spava_prefill_ms": max(spava),
            "dense_prefill_ms": dense, "lm_peak_gib": peak_gib(args.device)}


def measure(name: str, args: argparse.Namespace) -> dict:
    """One model's vision and prefill timings and its TTFT on both sides."""
    reps = dict(warmup=1, repeats=args.repeats)
    peak_gib(args.device)
    res = vision_part(name, args, reps)
    release(args.device)
    res.update(language_part(name, res["visual_tokens"], args, reps))
    release(args.device)
    vis = res["vision"]
    spava = vis["rank_ms"] + vis["gather_ms"] + res["spava_prefill_ms"]
    dense = vis["one_gpu_ms"] + min(res["dense_prefill_ms"].values())
    res.update({"ttft_spava_ms": spava, "ttft_dense_ms": dense, "ttft_speedup": dense / spava})
    return res


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=list(VISION), default=list(VISION))
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--grid", type=int, default=32, help="patches per frame side")
    parser.add_argument("--link-gbs", type=float, default=SimConfig().bandwidths_gbs[0],
                        help="link bandwidth per direction of the modelled all-gather, GB/s")
    parser.add_argument("--vision-attention", choices=["varlen", "sdpa"], default="varlen",
                        help="the towers' attention: torch's varlen flash attention, or "
                             "transformers' SDPA path (one call per window)")
    add_common_arguments(parser, repeats=3)


def run(args: argparse.Namespace) -> int:
    models = {}
    for name in args.models:
        res = models[name] = measure(name, args)
        vis = res["vision"]
        print(f"{name}: {args.frames} frames of {res['frame_px']} px -> {res['visual_tokens']} "
              f"visual tokens, {res['layout']}")
        print(f"  vision: one GPU {vis['one_gpu_ms']:.0f} ms; per rank at W={args.world} "
              f"{vis['rank_ms']:.0f} ms + all-gather {vis['gather_ms']:.1f} ms (modelled)")
        print(f"  prefill: Spava {res['spava_prefill_ms']:.0f} ms per rank; dense "
              + ", ".join(f"{k} {v:.0f} ms" for k, v in res["dense_prefill_ms"].items()))
        print(f"  TTFT: Spava {res['ttft_spava_ms']:.0f} ms vs dense {res['ttft_dense_ms']:.0f} "
              f"ms -> {res['ttft_speedup']:.2f}x")
    result = {"frames": args.frames, "grid": args.grid, "question": args.question,
              "world": args.world, "link_gbs": args.link_gbs, "tiny": args.tiny,
              "cudnn": torch.backends.cudnn.version(),
              "warmup": 1, "repeats": args.repeats, "models": models}
    print(f"wrote {write_result('ttft', result)}")
    return 0
