"""Prompt preparation for the Qwen2-VL family: frame-parallel vision encoder, placeholder
filling and the global M-RoPE position ids (all on the full prompt, before it is sharded).

Frame parallelism: the unit of work is one temporal patch of a video (``temporal_patch_size``
frames, ``h * w`` patches). Rank r encodes a contiguous, balanced share of all units, and an
all-gather gives every rank every video embedding. It is exact because the Qwen2.5-VL vision
tower attends within a temporal patch (its attention sequences and windows are per frame group
and its rotary positions depend on (h, w) only).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..layout import balanced_split

__all__ = ["frame_parallel_video_embeds", "prepare_vl_prompt", "default_query_len"]


def frame_parallel_video_embeds(base, pixel_values_videos: torch.Tensor,
                                video_grid_thw: torch.Tensor, comm) -> torch.Tensor:
    """Video embeddings ``[n_tokens, hidden]`` of every video, each rank encoding its share of
    the temporal patches. ``base`` is the multimodal base model (``model.model``)."""
    visual = base.visual
    merge2 = visual.spatial_merge_size ** 2
    grids = [tuple(int(x) for x in g) for g in video_grid_thw.tolist()]
    units = []  # (video, first pixel row, rows, tokens)
    row = 0
    for t, h, w in grids:
        for _ in range(t):
            units.append((len(units), row, h * w, h * w // merge2, (h, w)))
            row += h * w
    shares = balanced_split(len(units), comm.world)
    first = sum(shares[: comm.rank])
    mine = units[first : first + shares[comm.rank]]
    hidden = base.config.text_config.hidden_size
    dtype = visual.dtype
    if mine:
        # consecutive units with the same (h, w) share one grid entry (t = count, h, w)
        entries = []
        for u in mine:
            if entries and entries[-1][1:] == u[4]:
                entries[-1][0] += 1
            else:
                entries.append([1, *u[4]])
        pixels = pixel_values_videos[mine[0][1] : mine[-1][1] + mine[-1][2]].type(dtype)
        grid = torch.tensor(entries, dtype=video_grid_thw.dtype, device=video_grid_thw.device)
        local = visual(pixels, grid_thw=grid).pooler_output
    else:
        local = pixel_values_videos.new_zeros((0, hidden), dtype=dtype)
    if comm.world == 1:
        return local
    tokens = [sum(u[3] for u in units[sum(shares[:r]) : sum(shares[: r + 1])])
              for r in range(comm.world)]
    most = max(tokens)
    send = local.new_zeros((most, hidden))
    send[: local.shape[0]] = local
    recv = comm.buffer((comm.world, most, hidden), send.dtype, send.device, "video embeds")
    comm.all_gather(recv, send, "video embeds").wait()
    return torch.cat([recv[r, : tokens[r]] for r in range(comm.world)])


def prepare_vl_prompt(model, base, inputs: dict, comm
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs_embeds [B, L, h], position_ids [3, B, L], rope_deltas [B, 1])`` of the full
    prompt, with image and video placeholders filled."""
    ids = inputs["input_ids"]
    cfg = base.config
    embeds = model.get_input_embeddings()(ids)
    if inputs.get("pixel_values") is not None:  # images: small, every rank encodes them
        img = base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
        img = torch.cat(list(img)).to(embeds.device, embeds.dtype)
        embeds = embeds.masked_scatter((ids == cfg.image_token_id).unsqueeze(-1), img)
    if inputs.get("pixel_values_videos") is not None:
        vid = frame_parallel_video_embeds(base, inputs["pixel_values_videos"],
                                          inputs["video_grid_thw"], comm)
        mask = (ids == cfg.video_token_id).unsqueeze(-1)
        if int(mask.sum()) != vid.shape[0]:
            raise ValueError(f"spava_ext.generate: {int(mask.sum())} video placeholder tokens, "
                             f"{vid.shape[0]} video embeddings")
        embeds = embeds.masked_scatter(mask, vid.to(embeds.device, embeds.dtype))
    mm = inputs.get("mm_token_type_ids")
    if mm is None:
        mm = (ids == cfg.image_token_id).int() + 2 * (ids == cfg.video_token_id).int()
    positions, deltas = base.get_rope_index(
        ids, mm, image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
        attention_mask=inputs.get("attention_mask"))
    return embeds, positions, deltas


def default_query_len(base, input_ids: torch.Tensor) -> Optional[int]:
    """Tokens after the last vision token (the question and the assistant prefix), or None."""
    cfg = base.config
    vision = torch.zeros_like(input_ids[0], dtype=torch.bool)
    for name in ("image_token_id", "video_token_id", "vision_end_token_id"):
        tok = getattr(cfg, name, None)
        if tok is not None:
            vision |= input_ids[0] == tok
    where = torch.nonzero(vision).flatten()
    if where.numel() == 0:
        return None
    return int(input_ids.shape[1] - 1 - where[-1])
