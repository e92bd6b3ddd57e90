"""What every multimodal family hands the Spava prefill: the full prompt's embeddings and
global position ids (:class:`Prompt`), built with a frame-parallel vision encoder
(:func:`frame_parallel`).

Frame parallelism: a video is cut into units that the vision tower encodes independently (a
frame, or a temporal patch of frames). Rank r encodes a contiguous, balanced share of the
units and one all-gather gives every rank every unit's output rows, in order. It is exact when
the tower's output for a unit depends on that unit's pixels alone; each family states why that
holds for its tower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..layout import SpavaLayout, balanced_split

__all__ = ["Prompt", "frame_parallel", "scatter_placeholders", "default_query_len"]


@dataclass
class Prompt:
    """The full prompt, before it is sharded.

    ``embeds [B, L, h]``; ``positions [B, L]`` or ``[3, B, L]`` (M-RoPE); ``rope_deltas [B, 1]``
    (M-RoPE: a text token's position minus its index, for decode); ``visual_mask [B, L]`` and
    ``deepstack`` (Qwen3-VL: per early decoder layer ``[n_visual, h]``, the features added to
    the visual tokens' hidden states after that layer, visual tokens in prompt order).
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    rope_deltas: Optional[torch.Tensor] = None
    visual_mask: Optional[torch.Tensor] = None
    deepstack: Optional[list[torch.Tensor]] = None

    def decoder_kwargs(self, layout: SpavaLayout, rank: int) -> dict:
        """Extra decoder arguments for ``rank``'s tokens: the DeepStack mask and features of
        the visual tokens that the rank holds, in its local order (none for other families)."""
        if self.deepstack is None:
            return {}
        mask = self.visual_mask
        B, L = mask.shape
        index = layout.local_indices(rank).to(mask.device)  # global rows, local order
        local = mask[:, index]  # [B, L_r]
        # row of each visual token in the features: visual tokens are counted over (b, l)
        ordinal = (mask.flatten().cumsum(0) - 1).view(B, L)[:, index]
        rows = ordinal[local]
        return {"visual_pos_masks": local,
                "deepstack_visual_embeds": [f[rows.to(f.device)] for f in self.deepstack]}


def frame_parallel(unit_rows: list[int], encode: Callable[[int, int], torch.Tensor], width: int,
                   dtype: torch.dtype, device: torch.device, comm, what: str) -> torch.Tensor:
    """Output rows ``[sum(unit_rows), width]`` of every unit on every rank.

    Unit ``i`` gives ``unit_rows[i]`` rows; ``encode(first, last)`` returns the rows of units
    ``first .. last-1`` (called once, with ``last > first``, for this rank's share)."""
    shares = balanced_split(len(unit_rows), comm.world)
    first = sum(shares[: comm.rank])
    last = first + shares[comm.rank]
    local = (encode(first, last).to(dtype) if last > first
             else torch.zeros((0, width), dtype=dtype, device=device))
    if comm.world == 1:
        return local
    tokens, start = [], 0
    for n in shares:
        tokens.append(sum(unit_rows[start : start + n]))
        start += n
    if local.shape != (tokens[comm.rank], width):
        raise ValueError(f"spava frame-parallel {what}: rank {comm.rank} encoded "
                         f"{tuple(local.shape)}, expected ({tokens[comm.rank]}, {width})")
    most = max(tokens)
    send = local.new_zeros((most, width))
    send[: local.shape[0]] = local
    recv = comm.buffer((comm.world, most, width), send.dtype, send.device, what)
    comm.all_gather(recv, send, what).wait()
    return torch.cat([recv[r, : tokens[r]] for r in range(comm.world)])


def scatter_placeholders(embeds: torch.Tensor, ids: torch.Tensor, token_id: int,
                         features: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``embeds`` with the rows of placeholder ``token_id`` replaced by ``features`` (in order)
    and the placeholder mask ``[B, L]``."""
    mask = ids == token_id
    if int(mask.sum()) != features.shape[0]:
        raise ValueError(f"spava_ext.generate: {int(mask.sum())} {what} placeholder tokens, "
                         f"{features.shape[0]} {what} embeddings")
    out = embeds.masked_scatter(mask.unsqueeze(-1), features.to(embeds.device, embeds.dtype))
    return out, mask


def default_query_len(config, input_ids: torch.Tensor) -> Optional[int]:
    """Tokens after the last vision token (the question and the assistant prefix), or None.
    ``config`` is the multimodal model's config."""
    vision = torch.zeros_like(input_ids[0], dtype=torch.bool)
    for name in ("image_token_id", "video_token_id", "vision_end_token_id", "image_token_index",
                 "video_token_index"):
        tok = getattr(config, name, None)
        if tok is not None:
            vision |= input_ids[0] == tok
    where = torch.nonzero(vision).flatten()
    if where.numel() == 0:
        return None
    return int(input_ids.shape[1] - 1 - where[-1])
