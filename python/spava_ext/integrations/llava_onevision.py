"""Prompt preparation for LLaVA-OneVision (``llava_onevision``): video frames frame-parallel
(images, any-resolution tiles packed per image, on every rank), 1-D positions.

Frame parallelism is exact: the SigLIP tower, the projector and the 2 x 2 bilinear pooling act
on each frame alone; the one ``image_newline`` row that ends each video is appended after the
gather.
"""

from __future__ import annotations

import math

import torch

from .multimodal import Prompt, frame_parallel, scatter_placeholders

__all__ = ["prepare_llava_onevision_prompt"]


def _video_features(base, videos: torch.Tensor, comm) -> torch.Tensor:
    """``[n_videos * (frames * pooled + 1), h]``: every video's frame tokens then its newline."""
    n_videos, frames = videos.shape[:2]
    vision = base.config.vision_config
    pooled = math.ceil(vision.image_size // vision.patch_size / 2) ** 2  # tokens per frame
    flat = videos.flatten(0, 1)

    def encode(first: int, last: int) -> torch.Tensor:
        out = base.get_video_features(flat[first:last].unsqueeze(0)).pooler_output
        return out.reshape(-1, out.shape[-1])

    newline = base.image_newline
    rows = frame_parallel([pooled] * (n_videos * frames), encode, newline.shape[-1],
                          newline.dtype, videos.device, comm, "video embeds")
    rows = rows.view(n_videos, frames * pooled, -1)
    ends = newline.to(rows.dtype).expand(n_videos, 1, -1)
    return torch.cat([rows, ends], dim=1).flatten(0, 1)


def prepare_llava_onevision_prompt(model, inputs: dict, comm) -> Prompt:
    base = model.model
    ids = inputs["input_ids"]
    cfg = base.config
    embeds = model.get_input_embeddings()(ids)
    if inputs.get("pixel_values") is not None:  # images: small, every rank encodes them
        out = base.get_image_features(inputs["pixel_values"], inputs["image_sizes"],
                                      batch_num_images=inputs.get("batch_num_images"))
        embeds, _ = scatter_placeholders(embeds, ids, cfg.image_token_id,
                                         torch.cat(list(out.pooler_output)), "image")
    if inputs.get("pixel_values_videos") is not None:
        embeds, _ = scatter_placeholders(
            embeds, ids, cfg.video_token_id,
            _video_features(base, inputs["pixel_values_videos"], comm), "video")
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return Prompt(embeds, positions)
