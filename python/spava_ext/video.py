"""Video frames for the CLI: decoded with PyAV, sampled uniformly in time."""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["read_video"]


def read_video(path: str, fps: float = 1.0, max_frames: int = 64) -> tuple[np.ndarray, float]:
    """Frames ``[T, H, W, 3]`` uint8 sampled at ``fps`` (at most ``max_frames``, uniform over the
    whole video, an even count for the 2-frame temporal patches) and the rate actually used."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"read_video: fps must be a finite number > 0, got {fps!r}")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
        raise ValueError(f"read_video: max_frames must be an int >= 2 (frames go to the model in "
                         f"pairs), got {max_frames!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"spava: video file '{path}' not found")
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
    if not frames:
        raise ValueError(f"spava: no video frames in '{path}'")
    duration = len(frames) / rate
    want = max(2, min(max_frames, int(round(duration * fps)), len(frames)))
    want -= want % 2  # an even count, still >= 2
    idx = np.linspace(0, len(frames) - 1, want).round().astype(int)
    return np.stack([frames[i] for i in idx]), want / duration
