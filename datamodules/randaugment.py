"""RandAugment on the device, batched, with timm-style magnitude noise and per-op probability.

In a loader worker RandAugment costs about as much CPU as decoding the JPEG (its geometric ops go
through float grid sampling), and a GPU node has too few cores per GPU for that. So the workers
hand over uint8 crops, and after the batch reaches the device each sample is augmented here.

Each sample (each clip of a video: one draw for all its frames) draws its ops from its own seed,
``(seed, epoch, data-set index, clip)``, as random erasing does: the same ops whatever the device,
worker or batch composition, so a resumed run stays bit-identical (on another kind of device the
bilinear geometric ops may round a pixel differently: ``bench/gpu_check.py`` measures it). Samples that drew the
same op at the same magnitude are transformed together by torchvision's functional op.

The ops are torchvision's ``RandAugment`` ops with their magnitude ranges (:data:`OPS`); what we
add, as timm's ``rand-m9-mstd0.5-inc1``: per sample ``magnitude ~ N(magnitude, magnitude_std)``,
rounded and clamped to ``[0, num_bins - 1]`` (11 bins: timm's 0-10 scale), and each of the
``num_ops`` ops applied with probability ``op_prob``. Differences from timm: docs/recipes.md.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = ["OPS", "RANDAUG_TAG", "RandAugmentSettings", "apply_op", "draw_ops", "rand_augment"]

RANDAUG_TAG = 0x4A7D06  # derive_seed(seed, RANDAUG_TAG, epoch, index, clip): one stream per sample


def _linear(low: float, high: float):
    return lambda bins, height, width: torch.linspace(low, high, bins)


# name -> (magnitudes over the bins (None: no magnitude), signed): torchvision's RandAugment ranges
OPS: dict[str, tuple] = {
    "Identity": (None, False),
    "ShearX": (_linear(0.0, 0.3), True),
    "ShearY": (_linear(0.0, 0.3), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
    "Rotate": (_linear(0.0, 30.0), True),
    "Brightness": (_linear(0.0, 0.9), True),
    "Color": (_linear(0.0, 0.9), True),
    "Contrast": (_linear(0.0, 0.9), True),
    "Sharpness": (_linear(0.0, 0.9), True),
    "Posterize": (lambda bins, height, width: (8 - torch.arange(bins) / ((bins - 1) / 4)).round().int(), False),
    "Solarize": (_linear(1.0, 0.0), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}
OP_NAMES = tuple(OPS)


@dataclasses.dataclass(frozen=True)
class RandAugmentSettings:
    """The recipe's RandAugment (``data.randaug_*``); ``fill``: the colour geometric ops bring in
    (uint8 per channel: the ImageNet mean, as timm)."""

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.5
    op_prob: float = 0.5
    num_bins: int = 11
    fill: tuple[int, ...] = (124, 116, 104)
    interpolation: InterpolationMode = InterpolationMode.BILINEAR


def draw_ops(generator: torch.Generator, settings: RandAugmentSettings) -> tuple[tuple[int, int, bool], ...]:
    """One sample's ops, in order: ``(op index in OPS, magnitude bin, negated)``."""
    m = settings.magnitude + settings.magnitude_std * torch.randn((), generator=generator).item()
    magnitude_bin = int(min(max(round(m), 0), settings.num_bins - 1))
    applied = (torch.rand(settings.num_ops, generator=generator) < settings.op_prob).tolist()
    ops = []
    for keep in applied:
        if not keep:
            continue
        op = int(torch.randint(len(OP_NAMES), (), generator=generator))
        negated = OPS[OP_NAMES[op]][1] and torch.rand((), generator=generator).item() <= 0.5
        ops.append((op, magnitude_bin, bool(negated)))
    return tuple(ops)


def apply_op(x: torch.Tensor, name: str, magnitude: float, settings: RandAugmentSettings) -> torch.Tensor:
    """torchvision's op ``name`` at ``magnitude`` on uint8 ``[..., C, H, W]`` (every leading index alike)."""
    fill = list(settings.fill)
    interpolation = settings.interpolation
    if name == "Identity":
        return x
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(magnitude))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return F.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=interpolation,
                        fill=fill, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        translate = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return F.affine(x, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0], interpolation=interpolation,
                        fill=fill)
    if name == "Rotate":
        return F.rotate(x, angle=magnitude, interpolation=interpolation, fill=fill)
    enhance = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
               "Sharpness": F.adjust_sharpness}
    if name in enhance:
        return enhance[name](x, 1.0 + magnitude)
    if name == "Posterize":
        return F.posterize(x, int(magnitude))
    if name == "Solarize":
        return F.solarize(x, 255.0 * magnitude)
    if name == "AutoContrast":
        return F.autocontrast(x)
    if name == "Equalize":
        return F.equalize(x)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OP_NAMES)}")


def rand_augment(x: torch.Tensor, draws: Sequence[Sequence[tuple[int, int, bool]]],
                 settings: RandAugmentSettings) -> torch.Tensor:
    """``x``: uint8 ``[N, C, H, W]`` images or ``[N, C, T, H, W]`` clips; ``draws[i]``: sample i's
    ops (:func:`draw_ops`). Returns the augmented batch (a new tensor; ``x`` is left as it is)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"RandAugment runs on uint8 batches, got {x.dtype}")
    clips = x.ndim == 5
    out = (x.permute(0, 2, 1, 3, 4) if clips else x).clone()  # [N, (T,) C, H, W]
    height, width = out.shape[-2:]
    for slot in range(max((len(d) for d in draws), default=0)):
        groups: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
        for row, ops in enumerate(draws):
            if slot < len(ops):
                groups[ops[slot]].append(row)
        for (op, magnitude_bin, negated), rows in groups.items():
            name = OP_NAMES[op]
            magnitudes_fn = OPS[name][0]
            magnitude = 0.0 if magnitudes_fn is None else float(magnitudes_fn(settings.num_bins, height, width)[magnitude_bin])
            index = torch.tensor(rows, device=out.device)
            out[index] = apply_op(out[index], name, -magnitude if negated else magnitude, settings)
    return out.permute(0, 2, 1, 3, 4) if clips else out
