"""The input normalisation every Hiera checkpoint here was trained with (official, timm and ours):
ImageNet's per-channel mean and std of RGB in [0, 1]. The one home of these numbers: the data
modules normalise with them (on the device, after the uint8 batch is moved there), the analysis
pictures undo them, published weights record them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(pixels: torch.Tensor, channel_dim: int, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 ``pixels`` (any layout, channels at ``channel_dim``) to float32 ``(x / 255 - mean) / std``:
    bit for bit what torchvision's ``ToDtype(float32, scale=True)`` then ``Normalize`` give."""
    shape = [1] * pixels.ndim
    shape[channel_dim] = len(mean)
    m = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(shape)
    return pixels.to(torch.float32).mul_(1.0 / 255).sub_(m).div_(s)
