"""Image decoding and the standard ImageNet train/eval transforms (torchvision ``transforms.v2``).

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


class RandAugmentMstd(v2.RandAugment):
    """torchvision's RandAugment with timm-style magnitude noise and per-op probability.

    Per call (= per image): ``magnitude ~ N(magnitude, magnitude_std)``, rounded and clamped to
    ``[0, num_magnitude_bins - 1]``; each of the ``num_ops`` ops is applied with probability
    ``op_prob`` (done exactly by drawing the number of ops from Binomial(num_ops, op_prob), as ops are
    chosen independently with replacement). With ``num_magnitude_bins=11`` the magnitude is on timm's
    0..10 scale (``m9`` = 90% of each op's maximum).

    Differences from timm's ``rand-m9-mstd0.5-inc1`` (what the MAE/Hiera finetuning recipes use):

    * Op set: torchvision's 14 ops (Identity, ShearX/Y, TranslateX/Y, Rotate, Brightness, Color,
      Contrast, Sharpness, Posterize, Solarize, AutoContrast, Equalize). timm's 15 "increasing" ops
      have no Identity but add Invert and SolarizeAdd.
    * "Increasing" (``inc1``): torchvision's ops already get stronger with the magnitude, with the
      same ranges as timm's for shear (0.3), translate (~0.45 of the size), rotate (30 deg),
      enhance ops (factor 1 +- 0.9*m/10) and solarize (threshold 256 -> 0); posterize differs:
      torchvision goes from 8 down to 4 bits, timm's PosterizeIncreasing from 4 down to 0 bits.
    * The magnitude is drawn once per image and shared by its ops (timm draws it per op), and it is
      rounded to an integer bin (timm uses the continuous value).
    * Geometric ops use one fixed interpolation (bilinear here; timm picks bilinear or bicubic at
      random) and fill with the mean colour (as timm does) when ``fill`` is given.
    * Ops run on uint8 tensors, not PIL images (tiny rounding differences).
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 9,
        magnitude_std: float = 0.5,
        op_prob: float = 0.5,
        num_magnitude_bins: int = 11,
        interpolation=v2.InterpolationMode.BILINEAR,
        fill=None,
    ) -> None:
        super().__init__(num_ops=num_ops, magnitude=int(round(magnitude)),
                         num_magnitude_bins=num_magnitude_bins, interpolation=interpolation, fill=fill)
        self.mean_magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.op_prob = float(op_prob)
        self.max_num_ops = num_ops

    def forward(self, *inputs):
        m = self.mean_magnitude
        if self.magnitude_std > 0:
            m += self.magnitude_std * float(torch.randn(()))
        self.magnitude = int(min(max(round(m), 0), self.num_magnitude_bins - 1))
        n = self.max_num_ops
        self.num_ops = int(torch.binomial(torch.tensor(float(n)), torch.tensor(self.op_prob))) if self.op_prob < 1 else n
        return super().forward(*inputs)


def train_transform(
    img_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    randaug_num_ops: int = 2,
    randaug_magnitude: float = 9,
    randaug_mstd: float | None = 0.5,
    randaug_op_prob: float = 0.5,
    randaug_num_bins: int = 11,
    mean: Sequence[float] = IMAGENET_MEAN,
) -> v2.Compose:
    """Training augmentation on uint8 ``[3, H, W]`` -> uint8 ``[3, img_size, img_size]``.

    Bicubic RandomResizedCrop, horizontal flip (``hflip`` = probability, 0 = off), RandAugment
    (:class:`RandAugmentMstd`, filling with the ``mean`` colour; off when ``randaug_mstd`` is None or
    ``randaug_num_ops`` is 0). MAE pretraining: ``scale=(0.2, 1.0)``, ``randaug_mstd=None``. Random
    erasing, after normalisation, runs on the device (:mod:`datamodules.on_device`).
    """
    ops: list = [v2.RandomResizedCrop(img_size, scale=tuple(scale), ratio=tuple(ratio),
                                      interpolation=BICUBIC, antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if randaug_mstd is not None and randaug_num_ops > 0:
        fill = [int(round(255 * m)) for m in mean]
        ops.append(RandAugmentMstd(randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob,
                                   randaug_num_bins, fill=fill))
    return v2.Compose(ops)


def randaug_settings(num_ops: int, magnitude: float, mstd: float | None, op_prob: float, num_bins: int) -> dict:
    """The ``randaug_*`` keyword arguments of :func:`train_transform`, typed (Hydra passes strings/ints)."""
    return dict(randaug_num_ops=int(num_ops), randaug_magnitude=float(magnitude),
                randaug_mstd=None if mstd is None else float(mstd), randaug_op_prob=float(op_prob),
                randaug_num_bins=int(num_bins))


def mode_train_transform(mode: str, img_size: int, scale: Sequence[float], ratio: Sequence[float], hflip: float,
                         randaug: dict) -> v2.Compose:
    """The data modules' training transform: ``"pretrain"`` (MAE) is crop + flip only;
    ``"finetune"`` adds RandAugment (``randaug``: :func:`randaug_settings`)."""
    if mode == "pretrain":
        return train_transform(img_size, scale, ratio, hflip, randaug_mstd=None)
    return train_transform(img_size, scale, ratio, hflip, **randaug)


def eval_transform(img_size: int, crop_pct: float = 0.875) -> v2.Compose:
    """Standard ImageNet evaluation: resize the shorter side to ``int(img_size / crop_pct)``
    (bicubic, antialiased), center crop ``img_size``; uint8 (normalised on the device)."""
    return v2.Compose([
        v2.Resize(int(img_size / crop_pct), interpolation=BICUBIC, antialias=True),
        v2.CenterCrop(img_size),
    ])
