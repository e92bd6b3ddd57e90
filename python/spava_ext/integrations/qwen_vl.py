"""Prompt preparation for the Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE):
frame-parallel vision encoder, placeholder filling, the global M-RoPE position ids and, for
Qwen3-VL, the DeepStack features (all on the full prompt, before it is sharded).

Frame parallelism: the unit of work is one temporal patch of a video (``temporal_patch_size``
frames, ``h * w`` patches). It is exact because these vision towers attend within a temporal
patch (attention sequences and Qwen2.5-VL's windows are per frame group) and their position
encodings (rotary, and Qwen3-VL's interpolated learned table) depend on (h, w) only. Qwen3-VL's
DeepStack mergers run on the same per-unit hidden states, so their features are gathered with
the main embeddings (one all-gather of ``[tokens, h * (1 + n_deepstack)]``).

Qwen3-VL's textual timestamps (``<t seconds>`` before each temporal patch) are ordinary text
tokens of the prompt; its ``get_rope_index`` splits each video into one grid per temporal patch.
"""

from __future__ import annotations

import torch

from .multimodal import Prompt, frame_parallel, scatter_placeholders

__all__ = ["frame_parallel_video_embeds", "prepare_qwen_vl_prompt"]


def frame_parallel_video_embeds(base, pixel_values_videos: torch.Tensor,
                                video_grid_thw: torch.Tensor, comm) -> torch.Tensor:
    """Video embeddings ``[n_tokens, h * (1 + n_deepstack)]`` of every video (the merger's
    output, then each DeepStack merger's along the last dim), each rank encoding its share of
    the temporal patches. ``base`` is the multimodal base model (``model.model``)."""
    visual = base.visual
    merge2 = visual.spatial_merge_size ** 2
    units = []  # (first pixel row, pixel rows, (h, w))
    row = 0
    for t, h, w in video_grid_thw.tolist():
        for _ in range(t):
            units.append((row, h * w, (h, w)))
            row += h * w
    n_deep = len(getattr(visual, "deepstack_visual_indexes", None) or [])
    hidden = base.config.text_config.hidden_size

    def encode(first: int, last: int) -> torch.Tensor:
        entries = []  # consecutive units with the same (h, w) share one grid entry (t, h, w)
        for _, _, hw in units[first:last]:
            if entries and tuple(entries[-1][1:]) == hw:
                entries[-1][0] += 1
            else:
                entries.append([1, *hw])
        begin, end = units[first][0], units[last - 1][0] + units[last - 1][1]
        grid = torch.tensor(entries, dtype=video_grid_thw.dtype, device=video_grid_thw.device)
        out = visual(pixel_values_videos[begin:end].type(visual.dtype), grid_thw=grid)
        deep = getattr(out, "deepstack_features", None) or []
        return torch.cat([out.pooler_output, *deep], dim=-1)

    return frame_parallel([n // merge2 for _, n, _ in units], encode, hidden * (1 + n_deep),
                          visual.dtype, pixel_values_videos.device, comm, "video embeds")


def _deepstack(image_mask, image_deep, video_mask, video_deep):
    """The DeepStack mask and per-layer features over the visual tokens (images and videos
    interleaved in prompt order), as the model's own forward builds them."""
    if not image_deep and not video_deep:
        return None, None
    masks = [m for m in (image_mask, video_mask) if m is not None]
    visual = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    layers = []
    for i in range(max(len(image_deep), len(video_deep))):
        joint = None
        for mask, deep in ((image_mask, image_deep), (video_mask, video_deep)):
            if deep:
                if joint is None:
                    joint = deep[i].new_zeros((int(visual.sum()), deep[i].shape[-1]))
                joint[mask[visual]] = deep[i].to(joint.dtype)
        layers.append(joint)
    return visual, layers


def prepare_qwen_vl_prompt(model, inputs: dict, comm) -> Prompt:
    """The full prompt: image and video placeholders filled (videos frame-parallel, images on
    every rank), M-RoPE position ids ``[3, B, L]`` and deltas, and DeepStack features."""
    base = model.model
    ids = inputs["input_ids"]
    cfg = base.config
    embeds = model.get_input_embeddings()(ids)
    image_mask = video_mask = None
    image_deep, video_deep = [], []
    if inputs.get("pixel_values") is not None:  # images: small, every rank encodes them
        out = base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        embeds, image_mask = scatter_placeholders(embeds, ids, cfg.image_token_id,
                                                  torch.cat(list(out.pooler_output)), "image")
        image_deep = list(getattr(out, "deepstack_features", None) or [])
    if inputs.get("pixel_values_videos") is not None:
        vid, *video_deep = frame_parallel_video_embeds(
            base, inputs["pixel_values_videos"], inputs["video_grid_thw"], comm
        ).split(embeds.shape[-1], dim=-1)
        embeds, video_mask = scatter_placeholders(embeds, ids, cfg.video_token_id, vid, "video")
    mm = inputs.get("mm_token_type_ids")
    if mm is None:
        mm = (ids == cfg.image_token_id).int() + 2 * (ids == cfg.video_token_id).int()
    positions, deltas = base.get_rope_index(
        ids, mm, image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
        attention_mask=inputs.get("attention_mask"))
    visual, deep = _deepstack(image_mask, image_deep, video_mask, video_deep)
    return Prompt(embeds, positions, deltas, visual, deep)
