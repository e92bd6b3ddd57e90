"""Video frames for the CLI: decoded with PyAV, sampled uniformly in time."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_video"]


def read_video(path: str, fps: float = 1.0, max_frames: int = 64) -> tuple[np.ndarray, float]:
    """Frames ``[T, H, W, 3]`` uint8 sampled at ``fps`` (at most ``max_frames``, uniform over the
    whole video, an even count for the 2-frame temporal patches) and the rate actually used."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(f"spava: video file '{path}' not found")
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
    if not frames:
        raise ValueError(f"spava: no video frames in '{path}'")
    duration = len(frames) / rate
    want = max(2, min(max_frames, int(round(duration * fps)), len(frames)))
    want -= want % 2
    if want == 0:
        want = 2
    idx = np.linspace(0, len(frames) - 1, want).round().astype(int)
    return np.stack([frames[i] for i in idx]), want / duration
