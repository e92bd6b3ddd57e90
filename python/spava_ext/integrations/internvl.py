"""Prompt preparation for InternVL (transformers' ``internvl``: InternVL3, InternVL3.5): the
images and video frames (all rows of ``pixel_values``, in prompt order) frame-parallel, 1-D
positions.

Frame parallelism is exact: the InternViT tower encodes every 448 x 448 image (a video frame or
an image tile) on its own (attention, position embeddings and the pixel-shuffle projector are
per image), and every image gives the same number of tokens.
"""

from __future__ import annotations

import torch

from .multimodal import Prompt, frame_parallel, scatter_placeholders

__all__ = ["prepare_internvl_prompt"]


def prepare_internvl_prompt(model, inputs: dict, comm) -> Prompt:
    base = model.model
    ids = inputs["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    pixels = inputs.get("pixel_values")
    if pixels is not None:
        n_images = pixels.shape[0]
        n_tokens = int((ids == base.config.image_token_id).sum())
        if n_tokens % n_images:
            raise ValueError(f"spava_ext.generate: {n_tokens} image placeholder tokens for "
                             f"{n_images} images (tiles or frames)")

        def encode(first: int, last: int) -> torch.Tensor:
            out = base.get_image_features(pixel_values=pixels[first:last]).pooler_output
            return out.reshape(-1, out.shape[-1])

        features = frame_parallel([n_tokens // n_images] * n_images, encode, embeds.shape[-1],
                                  embeds.dtype, embeds.device, comm, "image embeds")
        embeds, _ = scatter_placeholders(embeds, ids, base.config.image_token_id, features,
                                         "image")
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return Prompt(embeds, positions)
