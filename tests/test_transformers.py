"""transformers integration with tiny random-weight models over 1..3 gloo processes."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spava_ext  # noqa: E402
from spava_ext import SpavaLayout, reference  # noqa: E402
from utils import run_ranks  # noqa: E402

L, NQ, NEW = 260, 10, 6


def tiny_model(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    with torch.no_grad():  # sharpen the head so greedy decoding has no near-ties
        model.lm_head.weight.mul_(40)
    return model.eval()


def prompt():
    return torch.randint(0, 96, (1, L), generator=torch.Generator().manual_seed(7))


def _generate_rank(rank, world, kind, passing_len, anchor_len=16):
    """This rank's generated tokens with the anchor sharded and replicated."""
    model = tiny_model(kind)
    return [spava_ext.generate(model, {"input_ids": prompt()}, max_new_tokens=NEW,
                               passing_len=passing_len, anchor_len=anchor_len, query_len=NQ,
                               stop_token_ids=[], **options)
            for options in ({"shard_anchor": True}, {"shard_anchor": False})]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_exact_mode_generates_what_the_model_generates(kind, world):
    """With the anchor sharded and replicated."""
    model = tiny_model(kind)
    ids = prompt()
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                              do_sample=False, pad_token_id=0,
                              eos_token_id=None, output_scores=True, return_dict_in_generate=True)
    top2 = torch.stack(want.scores).topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-2  # the test's own precondition: no ties
    got = run_ranks(_generate_rank, world, kind, None)
    for r in range(world):
        for tokens in got[r]:
            assert torch.equal(tokens, want.sequences[:, L:]), (r, tokens, want.sequences[:, L:])


@pytest.mark.parametrize("anchor_len", [16, 2, 0])
def test_approximate_mode_sharded_anchor_generates_the_replicated_tokens(anchor_len):
    """W = 3, an anchor of 16 (slices 6, 6, 4), shorter than W (slices 1, 1, 0) and none."""
    for r, (sharded, replicated) in enumerate(run_ranks(_generate_rank, 3, "qwen2", 5,
                                                        anchor_len)):
        assert sharded.shape == (1, NEW) and torch.equal(sharded, replicated), (r, sharded,
                                                                                replicated)


def _capture_rank(rank, world, kind, shard_anchor, **run_options):
    from spava_ext.comm import GroupComm
    from spava_ext.integrations.transformers import spava_prefill

    model = tiny_model(kind)
    layout = SpavaLayout(L, 16, NQ, world, 5, shard_anchor=shard_anchor)
    layers = {}
    spava_prefill(model, prompt(), layout, GroupComm(None), capture=lambda i, q, k, v, out:
                  layers.__setitem__(i, [t.clone() for t in (q, k, v, out)]), **run_options)
    return layers


def _capture_fp8_rank(rank, world):
    return _capture_rank(rank, world, "qwen2", True, attn_dtype="fp8", hadamard=True)


def test_fp8_prefill_is_the_fp8_arithmetic_layer_by_layer():
    """A prefill with attn_dtype="fp8" runs every layer's attention in FP8: each layer's output
    is spava_ext.fp8.spava_attention of that layer's q, k, v (the same quantisation and
    arithmetic in torch on one process)."""
    from spava_ext import fp8

    world = 3
    per_rank = run_ranks(_capture_fp8_rank, world)
    layout = SpavaLayout(L, 16, NQ, world, 5, shard_anchor=True)
    for layer in range(2):
        q, k, v, out = (layout.unshard([per_rank[r][layer][j] for r in range(world)])
                        for j in range(4))
        want = fp8.spava_attention(q, k, v, layout, rotate=True)
        torch.testing.assert_close(out, want.to(out.dtype), atol=1e-5, rtol=1e-5)
        assert (out - reference.spava_attention(q, k, v, layout)).abs().max() > 1e-4  # rounded


def test_generate_rejects_bad_attention_options():
    model = tiny_model("qwen2")
    with pytest.raises(ValueError, match=r"spava_ext.generate: attn_dtype must be None"):
        spava_ext.generate(model, {"input_ids": prompt()}, max_new_tokens=2, query_len=4,
                           attn_dtype="int8")


@pytest.mark.parametrize("world,shard_anchor", [(1, False), (3, False), (3, True)])
def test_approximate_mode_matches_the_reference_layer_by_layer(world, shard_anchor):
    per_rank = run_ranks(_capture_rank, world, "qwen2", shard_anchor)
    layout = SpavaLayout(L, 16, NQ, world, 5, shard_anchor=shard_anchor)
    # Layer 0 sees the same hidden states as a dense run: its post-RoPE q and k must be the dense
    # run's rows (global positions), which a capturing attention function records.
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        seen.setdefault(module.layer_idx, (query.transpose(1, 2), key.transpose(1, 2)))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("spava_test_capture", capture)
    model = tiny_model("qwen2")
    model.set_attn_implementation("spava_test_capture")
    with torch.no_grad():
        model(prompt())
    q0 = layout.unshard([per_rank[r][0][0] for r in range(world)])
    k0 = layout.unshard([per_rank[r][0][1] for r in range(world)])
    assert (q0 - seen[0][0]).abs().max() < 1e-5 and (k0 - seen[0][1]).abs().max() < 1e-5
    for layer in range(2):
        q, k, v, out = (layout.unshard([per_rank[r][layer][j] for r in range(world)])
                        for j in range(4))
        ref = reference.spava_attention(q, k, v, layout)
        assert (out - ref).abs().max() < 1e-5, layer
    assert per_rank[0][0][0].shape[1] == layout.local_len(0)


def test_generate_input_errors():
    model = tiny_model("qwen2")
    with pytest.raises(ValueError, match="query_len"):
        spava_ext.generate(model, {"input_ids": prompt()}, max_new_tokens=2)
    with pytest.raises(ValueError, match="padded"):
        spava_ext.generate(model, {"input_ids": prompt(), "attention_mask": torch.zeros(1, L)},
                           max_new_tokens=2, query_len=4)


def _sample_rank(rank, world, stop):
    model = tiny_model("qwen2")
    kw = dict(max_new_tokens=NEW, passing_len=5, anchor_len=16, query_len=NQ)
    sampled = spava_ext.generate(model, {"input_ids": prompt()}, do_sample=True, temperature=3.0,
                                 top_p=0.9, seed=11, stop_token_ids=[], **kw)
    again = spava_ext.generate(model, {"input_ids": prompt()}, do_sample=True, temperature=3.0,
                               top_p=0.9, seed=11, stop_token_ids=[], **kw)
    stopped = spava_ext.generate(model, {"input_ids": prompt()}, stop_token_ids=[stop], **kw)
    return sampled, again, stopped


def test_sampling_is_shared_and_reproducible_and_stop_tokens_stop():
    greedy = run_ranks(_generate_rank, 1, "qwen2", 5)[0][0]
    stop = int(greedy[0, 2])  # the third greedy token
    out = run_ranks(_sample_rank, 2, stop)
    for sampled, again, stopped in out:
        assert torch.equal(sampled, out[0][0])  # rank 0 samples, every rank gets its tokens
        assert torch.equal(sampled, again)  # same seed, same tokens
        first = int((greedy[0] == stop).nonzero()[0])
        assert torch.equal(stopped, greedy[:, : first + 1])  # stops right after the stop token
