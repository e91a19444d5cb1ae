"""Image decoding and the standard ImageNet train/eval transforms of the loader workers (torchvision ``transforms.v2``).

Images are decoded to uint8 ``[3, H, W]`` tensors (libjpeg-turbo via ``torchvision.io``, PIL as the
fallback) and every op here runs on uint8 and returns uint8: the loader workers hand over uint8
crops, and normalisation and random erasing run on the device (:mod:`datamodules.on_device`).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from abswin.normalization import IMAGENET_MEAN

from .randaugment import RandAugmentSettings

BICUBIC = v2.InterpolationMode.BICUBIC

# torchvision 0.29 deprecates torchvision.io's decoders in favour of TorchCodec, warning on every
# call; the pinned torchvision still ships them (libjpeg-turbo), so silence exactly that message.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def decode(data: bytes) -> torch.Tensor:
    """File bytes -> uint8 ``[3, H, W]`` (grayscale/alpha/palette -> RGB).

    JPEG/PNG/WebP/GIF go through ``torchvision.io.decode_image`` (libjpeg-turbo / libpng); anything
    else (BMP, TIFF, CMYK oddities, ...) through PIL. Raises if neither can decode the bytes
    (corrupt or truncated files). Multi-frame files (animated GIF, multi-page TIFF): the first frame.
    """
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return img[0] if img.ndim == 4 else img  # animated GIF: [frames, 3, H, W]
    except RuntimeError as tv_error:
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as pil_error:  # noqa: BLE001 - both decoders failed: report the pair
            raise OSError(f"torchvision: {tv_error}; PIL: {pil_error}") from pil_error
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def train_transform(img_size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                    hflip: float = 0.5) -> v2.Compose:
    """The workers' training augmentation, uint8 ``[..., 3, H, W]`` -> uint8 ``[..., 3, img_size,
    img_size]`` (leading dims, e.g. a clip's frames, all alike): bicubic RandomResizedCrop and a
    horizontal flip (``hflip`` = probability, 0 = off). MAE pretraining: ``scale=(0.2, 1.0)``.
    RandAugment and random erasing (finetuning) run on the device (:mod:`datamodules.on_device`).
    """
    ops: list = [v2.RandomResizedCrop(img_size, scale=tuple(scale), ratio=tuple(ratio),
                                      interpolation=BICUBIC, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    return v2.Compose(ops)


def randaug_settings(num_ops: int, magnitude: float, mstd: float | None, op_prob: float, num_bins: int,
                     mean: Sequence[float] = IMAGENET_MEAN) -> RandAugmentSettings | None:
    """The ``data.randaug_*`` values as :class:`~datamodules.randaugment.RandAugmentSettings`
    (filling with the ``mean`` colour), or None when off (``mstd`` null or ``num_ops`` 0); a
    one-line ValueError naming a value out of range."""
    try:
        whole = float(num_ops) == int(num_ops) and int(num_ops) >= 0
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"data.randaug_num_ops={num_ops} must be a whole number >= 0")
    if mstd is None or int(num_ops) == 0:
        return None
    checks = [("randaug_num_bins", num_bins, int(num_bins) >= 2, "a whole number >= 2"),
              ("randaug_magnitude", magnitude, 0 <= float(magnitude) <= int(num_bins) - 1,
               f"in [0, randaug_num_bins - 1 = {int(num_bins) - 1}]"),
              ("randaug_mstd", mstd, float(mstd) >= 0, ">= 0, or null for no RandAugment"),
              ("randaug_op_prob", op_prob, 0 <= float(op_prob) <= 1, "in [0, 1]")]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"data.{name}={value} must be {allowed}")
    return RandAugmentSettings(num_ops=int(num_ops), magnitude=float(magnitude), magnitude_std=float(mstd),
                               op_prob=float(op_prob), num_bins=int(num_bins),
                               fill=tuple(int(round(255 * m)) for m in mean))


def eval_transform(img_size: int, crop_pct: float = 0.875) -> v2.Compose:
    """Standard ImageNet evaluation: resize the shorter side to ``int(img_size / crop_pct)``
    (bicubic, antialiased), center crop ``img_size``; uint8 (normalised on the device)."""
    return v2.Compose([
        v2.Resize(int(img_size / crop_pct), interpolation=BICUBIC, antialias=True),
        v2.CenterCrop(img_size),
    ])
