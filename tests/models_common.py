"""Tiny random multimodal models (2 layers, hidden 64), their synthetic prompts and saved
checkpoints, and the check every family's tests run over 1..3 gloo ranks (:func:`check_family`)."""

from __future__ import annotations

import torch
import transformers

import spava_ext
from spava_ext import SpavaLayout, reference
from utils import run_ranks

NEW = 5  # generated tokens
VOCAB = 200
IMAGE, VIDEO, VSTART, VEND = 190, 191, 192, 193
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0)
QWEN3_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                    out_hidden_size=64, patch_size=16, temporal_patch_size=2,
                    spatial_merge_size=2, num_position_embeddings=16,
                    deepstack_visual_indexes=[0, 1])
QWEN3_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
              "mrope_interleaved": True}
T, H, W = 6, 4, 4  # Qwen3-VL video: temporal patches x patch grid -> 4 tokens per patch
FRAMES, SIDE = 7, 56  # InternVL / LLaVA-OneVision: frames of 4 x 4 patches of 14 pixels


def build(kind: str):
    """A tiny random model of ``kind`` with a sharpened head (no near-ties when greedy)."""
    torch.manual_seed(0)
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
               vision_end_token_id=VEND)
    if kind == "qwen3_vl":
        cfg = transformers.Qwen3VLConfig(text_config=dict(TEXT, rope_parameters=QWEN3_ROPE),
                                         vision_config=QWEN3_VISION, **ids)
        model = transformers.Qwen3VLForConditionalGeneration(cfg)
    elif kind == "qwen3_vl_moe":
        text = dict(TEXT, rope_parameters=QWEN3_ROPE, num_experts=4, num_experts_per_tok=2,
                    moe_intermediate_size=32, decoder_sparse_step=1)
        cfg = transformers.Qwen3VLMoeConfig(text_config=text, vision_config=QWEN3_VISION, **ids)
        model = transformers.Qwen3VLMoeForConditionalGeneration(cfg)
    elif kind == "internvl":
        cfg = transformers.InternVLConfig(
            text_config=dict(TEXT, model_type="qwen2"), vision_config=dict(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                image_size=[SIDE, SIDE], patch_size=[14, 14]),
            image_token_id=IMAGE, image_seq_length=4, tie_word_embeddings=False)
        model = transformers.InternVLForConditionalGeneration(cfg)
    elif kind == "llava_onevision":
        cfg = transformers.LlavaOnevisionConfig(
            text_config=dict(TEXT, model_type="qwen2"), vision_config=dict(
                model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, image_size=SIDE, patch_size=14,
                vision_use_head=False),
            image_token_index=IMAGE, video_token_index=VIDEO,
            image_grid_pinpoints=[[SIDE, SIDE], [SIDE, 2 * SIDE]])
        model = transformers.LlavaOnevisionForConditionalGeneration(cfg)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model.eval()


def _words(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(3, 180, (1, n), generator=g)


def inputs(kind: str) -> dict:
    """A prompt ``[system words | video | question words]`` with the family's placeholders."""
    g = torch.Generator().manual_seed(3)
    if kind in ("qwen3_vl", "qwen3_vl_moe"):
        frame = H * W // 4
        parts = [_words(g, 30)]
        for _ in range(T):  # "<t seconds>" text, then one temporal patch
            parts += [_words(g, 3), torch.tensor([[VSTART] + [VIDEO] * frame + [VEND]])]
        ids = torch.cat(parts + [_words(g, 9)], dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values_videos": torch.randn(T * H * W, 3 * 2 * 16 * 16, generator=g),
                "video_grid_thw": torch.tensor([[T, H, W]]),
                "mm_token_type_ids": 2 * (ids == VIDEO).int()}
    if kind == "internvl":  # "Frame i: <img> 4 tokens </img>" per frame
        parts = [_words(g, 30)]
        for _ in range(FRAMES):
            parts += [_words(g, 2), torch.tensor([[VSTART] + [IMAGE] * 4 + [VEND]])]
        ids = torch.cat(parts + [_words(g, 9)], dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values": torch.randn(FRAMES, 3, SIDE, SIDE, generator=g)}
    if kind == "llava_onevision":  # 2 x 2 pooled tokens per frame, then one newline row
        ids = torch.cat([_words(g, 30), torch.full((1, FRAMES * 4 + 1), VIDEO), _words(g, 9)],
                        dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values_videos": torch.randn(1, FRAMES, 3, SIDE, SIDE, generator=g)}
    raise ValueError(f"unknown tiny model kind {kind!r}")


def _layout(kind: str, world: int, passing_len) -> SpavaLayout:
    from spava_ext.integrations.multimodal import default_query_len

    ids = inputs(kind)["input_ids"]
    return SpavaLayout(ids.shape[1], 8, default_query_len(build(kind).config, ids), world,
                       passing_len)


def _rank(rank, world, kind, passing_len):
    """This rank's exact-mode generated tokens, and per layout (approximate, exact) every
    prefill layer's ``(q, k, v, out)``."""
    from spava_ext.comm import GroupComm
    from spava_ext.integrations.families import family_for
    from spava_ext.integrations.transformers import prefill_embeds

    model = build(kind)
    tokens = spava_ext.generate(model, inputs(kind), max_new_tokens=NEW, passing_len=None,
                                anchor_len=8, stop_token_ids=[])
    comm = GroupComm(None)
    prompt = family_for(model.config).prepare(model, inputs(kind), comm)
    captured = []
    for p in (passing_len, None):
        layout = _layout(kind, world, p)
        layers = {}
        prefill_embeds(model, prompt.embeds, prompt.positions, layout, comm, None,
                       prompt.decoder_kwargs(layout, rank),
                       capture=lambda i, *t: layers.__setitem__(i, [x.clone() for x in t]))
        captured.append(layers)
    return tokens, captured


def _dense(kind: str):
    """The model's own greedy generate, and every decoder layer's post-RoPE ``(q, k)``
    ``[B, L, H, D]`` in its own forward of the prompt."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from spava_ext.integrations.transformers import _decoder

    model = build(kind)
    with torch.no_grad():
        want = model.generate(**inputs(kind), max_new_tokens=NEW, do_sample=False,
                              output_scores=True, return_dict_in_generate=True)
    top2 = torch.stack(want.scores).topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-2  # precondition: no near-ties
    seen = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        seen[module.layer_idx] = (query.transpose(1, 2), key.transpose(1, 2))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("spava_test_capture", capture)
    _decoder(model).set_attn_implementation("spava_test_capture")
    with torch.no_grad():
        model(**inputs(kind))
    L = inputs(kind)["input_ids"].shape[1]
    return want.sequences[:, L:], seen


def check_family(kind: str, world: int, passing_len: int = 3) -> None:
    """Over ``world`` ranks (one: in this process):

    * exact mode generates exactly the model's own greedy tokens;
    * approximate mode: each prefill layer's output is the reference's on the layer's own
      (unsharded) q/k/v;
    * exact mode: each layer's q and k are the dense forward's (positions, vision features and
      DeepStack injections all on the right tokens) and its output the reference's.
    """
    want, dense = _dense(kind)
    per_rank = ([_rank(0, 1, kind, passing_len)] if world == 1 else
                run_ranks(_rank, world, kind, passing_len))
    for r, (tokens, _) in enumerate(per_rank):
        assert torch.equal(tokens, want), (kind, world, r, tokens, want)
    for which, p in enumerate((passing_len, None)):
        layout = _layout(kind, world, p)
        for layer in dense:
            q, k, v, out = (layout.unshard([per_rank[r][1][which][layer][j]
                                            for r in range(world)]) for j in range(4))
            ref = reference.spava_attention(q, k, v, layout)
            assert (out - ref).abs().max() < 1e-5, (kind, p, layer)
            if p is None:
                assert (q - dense[layer][0]).abs().max() < 1e-4, (kind, layer)
                assert (k - dense[layer][1]).abs().max() < 1e-4, (kind, layer)


def check_frame_parallel(kind: str, world: int = 8) -> None:
    """The prompt built by ``world`` emulated ranks, each encoding its share of the frames (some
    none: more ranks than units), equals the one built by one rank encoding them all."""
    from types import SimpleNamespace

    from spava_ext.comm import emulate_ranks
    from spava_ext.integrations.families import family_for

    model = build(kind)
    prepare = family_for(model.config).prepare
    with torch.no_grad():
        one = prepare(model, inputs(kind), SimpleNamespace(rank=0, world=1))
        many = emulate_ranks(lambda rank, comm: prepare(model, inputs(kind), comm), world)
    for prompt in many:
        assert (prompt.embeds - one.embeds).abs().max() < 1e-5, kind
        assert torch.equal(prompt.positions, one.positions), kind
        assert (prompt.deepstack is None) == (one.deepstack is None), kind
        for mine, full in zip(prompt.deepstack or [], one.deepstack or []):
            assert (mine - full).abs().max() < 1e-5, kind


# ------------------------------------------------------------------ saved checkpoints (CLI)
PLACEHOLDERS = {  # ids IMAGE, VIDEO, VSTART, VEND as each family's processor spells them
    "qwen3_vl": ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"],
    "internvl": ["<IMG_CONTEXT>", "<video>", "<img>", "</img>"],
    "llava_onevision": ["<image>", "<video>", "<vision_start>", "<vision_end>"],
}
PLACEHOLDERS["qwen3_vl_moe"] = PLACEHOLDERS["qwen3_vl"]
VIDEO_IN_TEMPLATE = {"qwen3_vl": "<|vision_start|><|video_pad|><|vision_end|>",
                     "internvl": "<video>\n", "llava_onevision": "<video>\n"}
VIDEO_IN_TEMPLATE["qwen3_vl_moe"] = VIDEO_IN_TEMPLATE["qwen3_vl"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type'] == 'video' %}VIDEO{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% endif %}")


def _tokenizer(kind: str):
    """A word-level tokenizer over ids 0..VOCAB-1 with the family's placeholder tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0 (pad), 1, 2 (eos)
    words = (["<unk>", "user", "assistant", "what", "is", "in", "the", "video", "?", "<", ">",
              ".", ":", "seconds", "Frame"] + [str(i) for i in range(10)])
    vocab = {t: i for i, t in enumerate(special + words)}
    vocab.update({f"w{i}": i for i in range(len(vocab), VOCAB) if i not in range(IMAGE, VEND + 1)})
    vocab.update({t: IMAGE + i for i, t in enumerate(PLACEHOLDERS[kind])})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {}
    if kind == "internvl":
        extra = dict(zip(["context_image_token", "video_token", "start_image_token",
                          "end_image_token"], PLACEHOLDERS[kind]))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", extra_special_tokens=special[1:] + PLACEHOLDERS[kind],
        model_specific_special_tokens=extra)


def _processor(kind: str, tokenizer):
    template = TEMPLATE.replace("VIDEO", VIDEO_IN_TEMPLATE[kind])
    if kind in ("qwen3_vl", "qwen3_vl_moe"):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        edges = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64 * 16}
        return transformers.Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=16, size=edges),
            tokenizer=tokenizer, chat_template=template,
            video_processor=transformers.Qwen3VLVideoProcessor(size=edges))
    if kind == "internvl":
        square = {"height": SIDE, "width": SIDE}
        return transformers.InternVLProcessor(
            image_processor=transformers.GotOcr2ImageProcessor(size=square),
            tokenizer=tokenizer, image_seq_length=4, chat_template=template,
            video_processor=transformers.InternVLVideoProcessor(size=square))
    square = {"height": SIDE, "width": SIDE}
    return transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(
            size=square, image_grid_pinpoints=[[SIDE, SIDE], [SIDE, 2 * SIDE]]),
        tokenizer=tokenizer, num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=template, video_processor=transformers.LlavaOnevisionVideoProcessor(
            size=square))


def save_tiny(kind: str, path) -> None:
    """The tiny model of ``kind`` with its tokenizer and processor, as a checkpoint dir."""
    model = build(kind)
    model.generation_config.eos_token_id = None  # generate all max_new_tokens tokens
    model.save_pretrained(path)
    _processor(kind, _tokenizer(kind)).save_pretrained(path)
