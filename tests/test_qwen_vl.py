"""Qwen2.5-VL and Qwen2-VL through spava_ext.generate: tiny random models, synthetic video,
1..3 gloo ranks."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spava_ext  # noqa: E402
from utils import reference_generate, run_ranks  # noqa: E402

T, H, W = 6, 4, 4  # temporal patches x patch grid: 6 * 16 / 4 = 24 video tokens
NEW = 5


def tiny_vl(kind: str = "qwen2.5-vl"):
    torch.manual_seed(0)
    text = dict(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=1, eos_token_id=2, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [4, 2, 2]})
    ids = dict(image_token_id=190, video_token_id=191, vision_start_token_id=192,
               vision_end_token_id=193)
    if kind == "qwen2.5-vl":
        cfg = transformers.Qwen2_5_VLConfig(
            text_config=text, vision_config=dict(
                depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                fullatt_block_indexes=[1], window_size=56, patch_size=14, temporal_patch_size=2,
                spatial_merge_size=2, tokens_per_second=2), **ids)
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    else:
        cfg = transformers.Qwen2VLConfig(
            text_config=text, vision_config=dict(
                depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                temporal_patch_size=2, spatial_merge_size=2), **ids)
        model = transformers.Qwen2VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # no near-ties in greedy decoding
    return model


def inputs():
    g = torch.Generator().manual_seed(3)
    n_video = T * H * W // 4
    ids = torch.cat([torch.randint(3, 180, (1, 40), generator=g), torch.tensor([[192]]),
                     torch.full((1, n_video), 191), torch.tensor([[193]]),
                     torch.randint(3, 180, (1, 9), generator=g)], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values_videos": torch.randn(T * H * W, 3 * 2 * 14 * 14, generator=g),
            "video_grid_thw": torch.tensor([[T, H, W]]),
            "mm_token_type_ids": 2 * (ids == 191).int()}


def _rank(rank, world, passing_len, kind="qwen2.5-vl"):
    timings = {}
    ids = spava_ext.generate(tiny_vl(kind), inputs(), max_new_tokens=NEW,
                             passing_len=passing_len, anchor_len=8, stop_token_ids=[],
                             timings=timings)
    return ids, timings


@pytest.mark.parametrize("kind,world", [("qwen2.5-vl", 1), ("qwen2.5-vl", 2), ("qwen2.5-vl", 3),
                                        ("qwen2-vl", 2)])
def test_exact_mode_matches_hf_generate_with_frame_parallel_vision(kind, world):
    model = tiny_vl(kind)
    with torch.no_grad():
        want = model.generate(**inputs(), max_new_tokens=NEW, do_sample=False,
                              output_scores=True, return_dict_in_generate=True)
    top2 = torch.stack(want.scores).topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-2  # precondition: no near-ties
    L = inputs()["input_ids"].shape[1]
    for r, (ids, timings) in enumerate(run_ranks(_rank, world, None, kind)):
        assert torch.equal(ids, want.sequences[:, L:]), (world, r, ids, want.sequences[:, L:])
        assert timings["decode_tokens"] == NEW - 1 and timings["prefill"] > 0


def test_approximate_mode_generates_what_the_reference_generates():
    """3 ranks, p = 4 (chunks of 9-10 tokens), the anchor sharded (generate's default with
    several ranks): every rank's tokens are those of one process that runs the reference Spava
    attention in every layer's prefill and decodes exactly."""
    from spava_ext.integrations.multimodal import default_query_len

    model, inp = tiny_vl(), inputs()
    L = inp["input_ids"].shape[1]
    layout = spava_ext.SpavaLayout(L, 8, default_query_len(model.config, inp["input_ids"]), 3, 4,
                                   shard_anchor=True)
    want, gap = reference_generate(model, inp, layout, NEW)
    assert gap > 1e-2  # precondition: no near-ties
    with torch.no_grad():
        dense = model.generate(**inp, max_new_tokens=NEW, do_sample=False)[:, L:]
    assert not torch.equal(want, dense)  # precondition: p = 4 changes the answer
    for r, (ids, timings) in enumerate(run_ranks(_rank, 3, 4)):
        assert torch.equal(ids, want), (r, ids, want)
        assert timings["layout"] == repr(layout)


def test_frame_parallel_vision_is_exact():
    """Encoding the temporal patches in shares (as the ranks do) gives the full run's output."""
    from types import SimpleNamespace

    from spava_ext.integrations.qwen_vl import frame_parallel_video_embeds
    from spava_ext.layout import balanced_split

    model = tiny_vl()
    inp = inputs()
    with torch.no_grad():
        full = frame_parallel_video_embeds(model.model, inp["pixel_values_videos"],
                                           inp["video_grid_thw"],
                                           SimpleNamespace(rank=0, world=1))
        shares, parts, first = balanced_split(T, 4), [], 0  # 6 temporal patches: 2, 2, 1, 1
        for n in shares:
            rows = slice(first * H * W, (first + n) * H * W)
            parts.append(model.model.visual(inp["pixel_values_videos"][rows],
                                            grid_thw=torch.tensor([[n, H, W]])).pooler_output)
            first += n
    assert (torch.cat(parts) - full).abs().max() < 1e-5
