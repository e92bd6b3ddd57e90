"""`spava generate` end to end for Qwen3-VL, Qwen3-VL-MoE, InternVL3 and LLaVA-OneVision: a
tiny random checkpoint saved to disk (weights, tokenizer, processor) and a synthetic video; the
family comes from the checkpoint's config. Exact mode over 2 ranks answers what the model's
own generate answers."""

import json

import pytest

from utils import write_video

transformers = pytest.importorskip("transformers")
av = pytest.importorskip("av")

from models_common import save_tiny  # noqa: E402
from test_cli_generate import run  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("spava_models_cli") / "clip.mp4"
    write_video(path, frames=12, seed=0)
    return path


@pytest.mark.parametrize("kind", ["qwen3_vl", "qwen3_vl_moe", "internvl", "llava_onevision"])
def test_generate_cli_exact_equals_dense(kind, video, tmp_path):
    save_tiny(kind, tmp_path)
    common = ["--model", str(tmp_path), "--video", str(video), "--question",
              "what is in the video ?", "--fps", "4", "--max-new-tokens", "5"]
    dense, _ = run(common + ["--attention", "dense"])
    assert len(dense) > len("answer: ")
    exact, out = run(common + ["--passing-len", "exact", "--anchor-len", "4"], nproc=2)
    assert exact == dense, (exact, dense)
    assert "12 frames" in out and "2 rank(s)" in out


def test_generate_cli_unsupported_model_type(tmp_path, capsys):
    from spava_ext.cli import main

    for model_type, why in (("gpt2", "is not supported; supported: "), ("qwen2", "text model")):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert main(["generate", "--model", str(tmp_path), "--video",
                     str(tmp_path / "config.json"), "--question", "q"]) == 2
        err = capsys.readouterr().err
        assert f"model_type '{model_type}'" in err and why in err, err
        assert "qwen3_vl" in err and "llava_onevision" in err, err
