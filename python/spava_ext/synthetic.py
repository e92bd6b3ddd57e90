"""Synthetic long-video-like attention inputs (for the demo, benchmarks and fidelity probes).

Keys of a "video" drift smoothly from frame to frame (an AR(1) walk per kv head), tokens of a frame
scatter around their frame's embedding, every query leans on an attention-sink key at position 0,
video queries look mostly at their own and nearby frames (as LMM attention does), and the
question's queries point at a few "needle" frames, so that query-aware selection has something
real to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["VideoLayer", "video_like_layer"]


@dataclass
class VideoLayer:
    q: torch.Tensor  # [B, L, Hq, D]
    k: torch.Tensor  # [B, L, Hkv, D]
    v: torch.Tensor  # [B, L, Hkv, D]
    needle_frames: list[int]  # frames the question is about
    frame_start: int  # position of the first video token
    tokens_per_frame: int


def video_like_layer(
    frames: int,
    tokens_per_frame: int,
    prefix_len: int,
    question_len: int,
    heads_q: int,
    heads_kv: int,
    head_dim: int,
    batch: int = 1,
    needles: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> VideoLayer:
    """Sequence ``[prefix (system prompt) | frames x tokens_per_frame | question]``."""
    g = torch.Generator().manual_seed(seed)
    D, Hkv, Hq = head_dim, heads_kv, heads_q
    # frame embeddings: a smooth AR(1) walk, unit scale
    rho = 0.95
    emb = torch.empty(batch, frames, Hkv, D)
    emb[:, 0] = torch.randn(batch, Hkv, D, generator=g)
    for f in range(1, frames):
        step = torch.randn(batch, Hkv, D, generator=g)
        emb[:, f] = rho * emb[:, f - 1] + (1 - rho**2) ** 0.5 * step
    video_k = emb.repeat_interleave(tokens_per_frame, dim=1)
    video_k = video_k + 0.5 * torch.randn(video_k.shape, generator=g)
    prefix_k = torch.randn(batch, prefix_len, Hkv, D, generator=g)
    sink = torch.randn(batch, Hkv, D, generator=g)
    if prefix_len:
        prefix_k[:, 0] = 1.5 * sink
    question_k = torch.randn(batch, question_len, Hkv, D, generator=g)
    k = torch.cat([prefix_k, video_k, question_k], dim=1)
    v = torch.randn(k.shape, generator=g)
    # queries: noise + the sink direction; video rows lean on their own frame, question rows on
    # the needle frames
    L = k.shape[1]
    G = Hq // Hkv
    q = torch.randn(batch, L, Hkv, G, D, generator=g)
    q += 0.6 * sink[:, None, :, None, :]
    s = prefix_len
    q[:, s: s + frames * tokens_per_frame] += 0.8 * emb.repeat_interleave(tokens_per_frame, 1).unsqueeze(3)
    needle_frames = sorted(torch.randperm(frames, generator=g)[:needles].tolist())
    target = emb[:, needle_frames].mean(dim=1)  # [B, Hkv, D]
    q[:, L - question_len:] += 2.0 * target[:, None, :, None, :]
    q = q.view(batch, L, Hq, D)
    return VideoLayer(q.to(dtype), k.to(dtype), v.to(dtype), needle_frames, prefix_len,
                      tokens_per_frame)
