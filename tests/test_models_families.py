"""Family selection by ``config.model_type`` in spava_ext.generate, and the Qwen3 text family."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spava_ext  # noqa: E402
from utils import run_ranks  # noqa: E402

L, NQ, NEW = 120, 7, 5


def tiny_qwen3():
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(vocab_size=96, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=16,
                                   max_position_embeddings=1024)
    model = transformers.Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # no near-ties in greedy decoding
    return model.eval()


def prompt():
    return torch.randint(0, 96, (1, L), generator=torch.Generator().manual_seed(5))


def _rank(rank, world):
    return spava_ext.generate(tiny_qwen3(), {"input_ids": prompt()}, max_new_tokens=NEW,
                              passing_len=None, anchor_len=8, query_len=NQ, stop_token_ids=[])


def test_qwen3_text_exact_mode_generates_what_the_model_generates():
    model = tiny_qwen3()
    with torch.no_grad():
        want = model.generate(prompt(), attention_mask=torch.ones(1, L, dtype=torch.long),
                              max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                              pad_token_id=0)
    for got in run_ranks(_rank, 2):
        assert torch.equal(got, want[:, L:]), (got, want[:, L:])


def test_unsupported_model_type_is_named_with_the_supported_ones():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=96, n_embd=32, n_layer=1, n_head=2, n_positions=256)).eval()
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported; supported: "
                                         r"qwen2, qwen3, llama, qwen2_vl, .*qwen3_vl_moe, "
                                         r"internvl, llava_onevision"):
        spava_ext.generate(model, {"input_ids": prompt()}, max_new_tokens=2, query_len=NQ)
