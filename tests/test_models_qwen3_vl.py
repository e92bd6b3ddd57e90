"""Qwen3-VL and Qwen3-VL-MoE through spava_ext.generate: tiny random models, a synthetic video
with textual timestamps and DeepStack features, 1..3 gloo ranks (the CLI path:
test_models_cli.py)."""

import pytest

pytest.importorskip("transformers")

from models_common import check_family, check_frame_parallel  # noqa: E402


@pytest.mark.parametrize("kind,world", [("qwen3_vl", 1), ("qwen3_vl", 3), ("qwen3_vl_moe", 2)])
def test_exact_tokens_and_layers_match_the_model_and_reference(kind, world):
    check_family(kind, world)


@pytest.mark.parametrize("kind", ["qwen3_vl", "qwen3_vl_moe"])
def test_frame_parallel_vision_and_deepstack_are_exact(kind):
    check_frame_parallel(kind)
