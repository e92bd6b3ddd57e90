"""InternVL3 (transformers' ``internvl``) through spava_ext.generate: a tiny random model, video
frames as 448-style images with "<img> ... </img>" placeholders, 1..3 gloo ranks (the CLI path:
test_models_cli.py)."""

import pytest

pytest.importorskip("transformers")

from models_common import check_family, check_frame_parallel  # noqa: E402


@pytest.mark.parametrize("world", [1, 3])
def test_exact_tokens_and_layers_match_the_model_and_reference(world):
    check_family("internvl", world)


def test_frame_parallel_vision_is_exact():
    check_frame_parallel("internvl")
