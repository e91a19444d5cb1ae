"""The input pipeline's last steps, on the device: loader workers hand over uint8 crops (a quarter of
float32's bytes through shared memory and PCIe), and after the batch is moved to the device the data
module augments finetuning training batches with RandAugment (:mod:`datamodules.randaugment`),
normalises, and, when training with ``random_erasing``, erases a random box of some samples with
normal noise (timm's ``mode='pixel'``, torchvision's ``RandomErasing(value="random")``).

Erasing is seeded per sample from ``(seed, epoch, data-set index, clip)`` only, as the workers'
augmentations are: the same whatever the device count, the worker count or a resume, so a resumed
run stays bit-identical. Its parameters follow torchvision's ``RandomErasing`` draw for draw (scale
0.02-1/3 of the area, log-uniform aspect 0.3-3.3, ten tries); a clip gets one box and one noise
pattern for all its frames, as the worker-side transform gave it.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from abswin.batch import Batch
from abswin.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from abswin.seeding import derive_seed

from .randaugment import RANDAUG_TAG, RandAugmentSettings, draw_ops, rand_augment

__all__ = ["ERASING_RATIO", "ERASING_SCALE", "erasing_box", "random_erase", "sample_seeds", "to_model_input"]

ERASING_TAG = 0x3E7A5E  # derive_seed(seed, ERASING_TAG, epoch, index, clip): one stream per sample
ERASING_SCALE = (0.02, 1 / 3)
ERASING_RATIO = (0.3, 3.3)


def erasing_box(generator: torch.Generator, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of the box to erase, drawn as torchvision's ``RandomErasing`` draws it;
    None when ten tries find no box that fits."""
    low, high = math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1])
    for _ in range(10):
        area = height * width * torch.empty(1).uniform_(*ERASING_SCALE, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(low, high, generator=generator).item())
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if h < height and w < width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    return None


def random_erase(x: torch.Tensor, seeds: list[int], p: float) -> torch.Tensor:
    """Erase, in place, a box of sample ``i`` of ``x`` (``[N, C, H, W]`` images or ``[N, C, T, H, W]``
    clips, normalised) with probability ``p``, drawn from ``seeds[i]``; returns ``x``."""
    height, width = x.shape[-2:]
    for i, seed in enumerate(seeds):
        drawn = torch.Generator().manual_seed(seed)
        if torch.rand((), generator=drawn).item() >= p:
            continue
        box = erasing_box(drawn, height, width)
        if box is None:
            continue
        top, left, h, w = box
        noise_shape = (x.shape[1], *([1] * (x.ndim - 4)), h, w)  # one pattern for every frame of a clip
        noise = torch.randn(noise_shape, generator=torch.Generator(x.device).manual_seed(seed), device=x.device)
        x[i, ..., top:top + h, left:left + w] = noise
    return x


def sample_seeds(batch: Batch, seed: int, tag: int, epoch: int) -> list[int]:
    """One seed per image or clip of a training batch, from ``(seed, tag, epoch, data-set index,
    clip)`` only."""
    if batch.indices is None:
        raise ValueError("augmenting on the device needs Batch.indices (the data-set index of each sample)")
    clips = batch.clips_per_sample
    return [derive_seed(seed, tag, epoch, int(index), row % clips) for row, index in enumerate(batch.indices.tolist())]


def to_model_input(batch: Batch, random_erasing: float = 0.0, seed: int = 0, epoch: int | None = None,
                   randaug: RandAugmentSettings | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Batch:
    """The uint8 batch of a loader (moved to the device) as the model takes it: normalised float32;
    with ``epoch`` (training), RandAugmented when ``randaug`` is given and erased per sample when
    ``random_erasing > 0`` (module docstring). A batch already in floating point is returned as it is."""
    pixels = batch.inputs
    if pixels.is_floating_point():
        return batch
    if batch.views is not None:
        return dataclasses.replace(batch, views=normalize(pixels, 2, mean, std))
    training = epoch is not None and pixels.shape[0] > 0
    if training and randaug is not None:
        draws = [draw_ops(torch.Generator().manual_seed(s), randaug)
                 for s in sample_seeds(batch, seed, RANDAUG_TAG, epoch)]
        pixels = rand_augment(pixels, draws, randaug)
    images = normalize(pixels, 1, mean, std)
    if training and random_erasing > 0:
        random_erase(images, sample_seeds(batch, seed, ERASING_TAG, epoch), random_erasing)
    return dataclasses.replace(batch, images=images)
