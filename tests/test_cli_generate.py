"""`spava generate` end to end: a tiny Qwen2.5-VL saved to disk (weights, tokenizer, processor)
and a synthetic video file written by the test, on 1 process and under torchrun with 2 ranks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
av = pytest.importorskip("av")

SPECIAL = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
           "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
WORDS = ["user", "assistant", "what", "is", "in", "the", "video", "?"] + [f"w{i}" for i in range(56)]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    root = tmp_path_factory.mktemp("spava_cli")
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[2:])
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = transformers.Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=TEMPLATE)
    torch.manual_seed(0)
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, eos_token_id=vocab["<|im_end|>"],
                         bos_token_id=None,
                         pad_token_id=vocab["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [4, 2, 2]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, fullatt_block_indexes=[1], window_size=56,
                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                           tokens_per_second=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"])
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # no near-ties in greedy decoding
    model.generation_config.eos_token_id = None  # generate all max_new_tokens tokens
    model_dir = root / "tiny-qwen2.5-vl"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    video = root / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(12):
            img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return model_dir, video


def run(args, nproc=1):
    base = ["-m", "spava_ext", "generate"] + args
    from utils import _free_port

    cmd = ([sys.executable] + base if nproc == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(_free_port())] + base)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    answer = [line for line in res.stdout.splitlines() if line.startswith("answer:")]
    assert len(answer) == 1, res.stdout
    return answer[0], res.stdout


def test_generate_cli_spava_equals_dense(assets):
    model_dir, video = assets
    common = ["--model", str(model_dir), "--video", str(video), "--question",
              "what is in the video ?", "--fps", "4", "--max-new-tokens", "6"]
    dense, _ = run(common + ["--attention", "dense"])
    exact, out = run(common + ["--passing-len", "exact", "--anchor-len", "4"])
    assert exact == dense, (exact, dense)
    assert "12 frames" in out and "timing:" in out and "tokens/s" in out
    two, out2 = run(common + ["--passing-len", "exact", "--anchor-len", "4"], nproc=2)
    assert two == dense, (two, dense)
    assert "2 rank(s)" in out2
    approx, _ = run(common + ["--passing-len", "2"], nproc=2)  # approximate mode runs too
    assert approx.startswith("answer:")


def test_generate_cli_missing_paths(tmp_path):
    res = subprocess.run([sys.executable, "-m", "spava_ext", "generate", "--model",
                          str(tmp_path / "nope"), "--video", "x.mp4", "--question", "q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "model directory" in res.stderr and "not found" in res.stderr
