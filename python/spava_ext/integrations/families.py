"""The model families that :func:`spava_ext.generate` and ``spava generate`` support, chosen by
the checkpoint's ``config.model_type`` (docs/models.md describes what each one needs)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Optional

from .internvl import prepare_internvl_prompt
from .llava_onevision import prepare_llava_onevision_prompt
from .qwen_vl import prepare_qwen_vl_prompt

__all__ = ["Family", "FAMILIES", "family_for", "supported_model_types", "video_family_of_dir"]


@dataclass(frozen=True)
class Family:
    """``prepare(model, inputs, comm) -> Prompt`` builds a multimodal prompt (None: a text
    model, 1-D positions). ``video_kwargs(n_frames, fps)``: what the family's processor needs
    besides the frames (the CLI)."""

    name: str
    model_types: tuple[str, ...]
    prepare: Optional[Callable] = None
    video_kwargs: Callable[[int, float], dict] = field(default=lambda n_frames, fps: {})


def _presampled_video_kwargs(n_frames: int, fps: float) -> dict:
    """The frames are already sampled (no resampling); their rate gives the video's time
    positions (Qwen2.5-VL's absolute-time M-RoPE, Qwen3-VL's textual timestamps)."""
    return {"do_sample_frames": False,
            "video_metadata": [{"total_num_frames": n_frames, "fps": fps,
                                "frames_indices": list(range(n_frames))}]}


FAMILIES = (
    Family("Qwen2 / Qwen3 / Llama (text)", ("qwen2", "qwen3", "llama")),
    Family("Qwen2-VL / Qwen2.5-VL", ("qwen2_vl", "qwen2_5_vl"), prepare_qwen_vl_prompt,
           _presampled_video_kwargs),
    Family("Qwen3-VL", ("qwen3_vl", "qwen3_vl_moe"), prepare_qwen_vl_prompt,
           _presampled_video_kwargs),
    Family("InternVL3", ("internvl",), prepare_internvl_prompt),
    Family("LLaVA-OneVision", ("llava_onevision",), prepare_llava_onevision_prompt),
)


def supported_model_types() -> list[str]:
    return [t for fam in FAMILIES for t in fam.model_types]


def family_for(config, caller: str = "spava_ext.generate") -> Family:
    """The family of a model's (top-level) config; ValueError naming the type otherwise."""
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise ValueError(f"{caller}: model_type {model_type!r} is not supported; supported: "
                     f"{', '.join(supported_model_types())}")


def video_family_of_dir(model_dir: str, caller: str) -> Family:
    """The multimodal family of a local checkpoint, read from its ``config.json`` before any
    weights load; ValueError naming the type for an unsupported or a text-only one."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{caller}: no config.json in model directory '{model_dir}'")
    with open(path) as f:
        model_type = json.load(f).get("model_type")
    family = family_for(SimpleNamespace(model_type=model_type), caller)
    if family.prepare is None:
        video = [t for fam in FAMILIES if fam.prepare is not None for t in fam.model_types]
        raise ValueError(f"{caller}: model_type {model_type!r} is a text model; a question "
                         f"about a video needs one of: {', '.join(video)}")
    return family
