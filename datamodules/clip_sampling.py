"""Which frames make a clip, and which crops make the evaluation views: the index maths of video
sampling (MAE-ST / Hiera). A clip is ``num_frames`` frames ``sampling_rate`` apart; training draws
one random window per clip, evaluation takes ``num_views`` evenly spaced windows (temporal views)
and evenly spaced square crops (spatial views). Videos too short for a window repeat their last
frame.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["clip_span", "eval_clip_indices", "spatial_crops", "train_clip_indices"]


def clip_span(num_frames: int, sampling_rate: int) -> int:
    return (num_frames - 1) * sampling_rate + 1


def train_clip_indices(n: int, num_frames: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``num_frames`` frames ``sampling_rate`` apart in a video of ``n`` frames;
    a too-short video starts at 0 and repeats its last frame."""
    span = clip_span(num_frames, sampling_rate)
    start = int(rng.integers(0, n - span + 1)) if n >= span else 0
    return np.minimum(start + np.arange(num_frames) * sampling_rate, n - 1)


def eval_clip_indices(n: int, num_frames: int, sampling_rate: int, num_views: int) -> np.ndarray:
    """``[num_views, num_frames]``: windows evenly spaced from the first to the last possible start
    (one view: the centre window); short videos repeat their last frame."""
    span = clip_span(num_frames, sampling_rate)
    delta = max(n - span, 0)
    starts = np.linspace(0, delta, num_views) if num_views > 1 else np.array([delta / 2])
    idx = np.round(starts).astype(np.int64)[:, None] + np.arange(num_frames) * sampling_rate
    return np.minimum(idx, n - 1)


def spatial_crops(frames: torch.Tensor, size: int, num_views: int) -> list[torch.Tensor]:
    """``num_views`` square crops of ``[..., H, W]`` evenly spaced along the long side (3: left/
    centre/right, or top/centre/bottom), centred on the short side; 1: the centre crop."""
    h, w = frames.shape[-2:]
    if min(h, w) < size:
        raise ValueError(f"frames {h}x{w} are smaller than the crop {size}")
    long_len = max(h, w)
    pos = np.linspace(0, long_len - size, num_views) if num_views > 1 else np.array([(long_len - size) / 2])
    crops = []
    for p in np.round(pos).astype(int):
        if w >= h:
            y = (h - size) // 2
            crops.append(frames[..., y:y + size, p:p + size])
        else:
            x = (w - size) // 2
            crops.append(frames[..., p:p + size, x:x + size])
    return crops
