"""MAE reconstructions: what the model fills in for the masked mask units of an image or a clip.

:func:`reconstruct` runs the encoder and decoder with a seeded mask and maps the per-patch
normalised prediction (``norm_pix_loss``) back to pixels with the true patch's mean and
variance; :func:`reconstruction_picture` lays it out as in MAE's figures: original | masked |
prediction | prediction with the visible patches pasted in, one row per sample, enlarged and
labelled. Inputs are normalised with ``mean``/``std`` (ImageNet's, as the data pipeline) and
un-normalised for the picture, so a perfect prediction of a grey image is grey (tested).

Why a grey input can come back tinted: with ``norm_pix_loss`` the model predicts each patch
normalised over its pixels *and colour channels*, in the ImageNet-normalised space, where a grey
pixel's three channels differ (its blue channel is highest). Drawn with the true patch's mean and
variance, any error the model makes in that channel pattern becomes a colour cast. The picture
says so in its title; it is the model's error, not the drawing's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import drawing
from ..normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["COLUMNS", "IMAGENET_MEAN", "IMAGENET_STD", "Reconstruction", "frames_of", "has_decoder", "load_image",
           "prepare", "reconstruct", "reconstruction_picture"]



def has_decoder(model) -> bool:
    """An MAE model (with ``forward_decoder``), which can reconstruct."""
    return hasattr(model, "forward_decoder")


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as uint8 ``[H, W, 3]`` RGB; a one-line ValueError for a file PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy())
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path}: cannot be read ({' '.join(str(e).split()) or type(e).__name__})") from None


def prepare(pixels: torch.Tensor | np.ndarray, size: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` (image) or ``[T, H, W, 3]`` (clip) to the model's normalised input
    ``[1, 3, h, w]`` / ``[1, 3, T, h, w]``: the short side resized to fit ``size = (h, w)``
    (bicubic, antialiased), then the centre crop."""
    x = torch.as_tensor(np.asarray(pixels)).float().div(255)
    video = x.dim() == 4
    x = x if video else x[None]
    x = x.permute(0, 3, 1, 2)  # [T, 3, H, W]
    h, w = size
    scale = max(h / x.shape[-2], w / x.shape[-1])
    resized = (max(h, round(x.shape[-2] * scale)), max(w, round(x.shape[-1] * scale)))
    x = F.interpolate(x, size=resized, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (resized[0] - h) // 2, (resized[1] - w) // 2
    x = x[..., top:top + h, left:left + w]
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.transpose(0, 1)[None] if video else x


def frames_of(model, patches: torch.Tensor) -> torch.Tensor:
    """MAE patches ``[B, L, pixels]`` back to pictures ``[B, C, T', H, W]``: for images
    ``T' = 1``, for video the frames the MAE target uses (every ``patch_stride[0]``-th)."""
    x = model.unpatchify(patches)
    return x[:, :, None] if x.dim() == 4 else x


COLUMNS = ("original", "masked", "prediction", "prediction + visible")
TINT_NOTE = ("norm_pix_loss: each patch is predicted normalised over its pixels and colours, drawn with the true "
             "patch's mean and variance;\na colour cast on grey is the model's error in ImageNet-normalised space "
             "(where grey's channels differ), not the drawing's.")


@dataclass
class Reconstruction:
    """Normalised pixels ``[B, C, T', H, W]`` (``T' = 1`` for images) and the loss."""

    original: torch.Tensor
    prediction: torch.Tensor  # the model's prediction of every patch
    reconstruction: torch.Tensor  # the prediction, with the visible patches pasted in
    visible: torch.Tensor  # 1 where a pixel was visible to the encoder, else 0
    loss: float  # the MAE loss on the masked patches (in the model's target space)
    norm_pix_loss: bool = True  # the prediction was per-patch normalised (see the module docstring)

    def columns(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                all_frames: bool = False) -> torch.Tensor:
        """Pixels in [0, 1], ``[rows, 4, C, H, W]``: a row per sample (per frame with ``all_frames``,
        else a clip's middle target frame), the columns of :data:`COLUMNS`; masked patches grey in
        the second."""
        t = self.original.shape[2]
        frames = slice(None) if all_frames else slice(t // 2, t // 2 + 1)
        m = torch.tensor(mean, device=self.original.device).view(1, -1, 1, 1, 1)
        s = torch.tensor(std, device=self.original.device).view(1, -1, 1, 1, 1)
        cols = [(p * s + m)[:, :, frames] for p in (self.original, self.original, self.prediction, self.reconstruction)]
        visible = self.visible[:, :, frames]
        cols[1] = cols[1] * visible + 0.5 * (1 - visible)
        tiles = torch.stack(cols, dim=1).clamp(0, 1)  # [B, 4, C, T', H, W]
        return tiles.permute(0, 3, 1, 2, 4, 5).flatten(0, 1).cpu()  # rows: (sample, frame)

    def picture(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                all_frames: bool = False, row_labels: Sequence[str] = (), min_tile: int = 160) -> torch.Tensor:
        """See :func:`reconstruction_picture`."""
        tiles = self.columns(mean, std, all_frames)
        scale = drawing.zoom_for(tiles.shape[-2:], min_tile)
        tiles = drawing.enlarge(tiles.flatten(0, 1), scale)
        image = drawing.to_uint8(drawing.grid(tiles, ncol=len(COLUMNS)))
        title = TINT_NOTE if self.norm_pix_loss else ""
        return drawing.labelled(image, tiles.shape[-2:], title=title, rows=row_labels, cols=COLUMNS)


@torch.no_grad()
def reconstruct(model, x: torch.Tensor, mask_ratio: float, seed: int = 0) -> Reconstruction:
    """Reconstruct the normalised input ``x`` (``[B, 3, H, W]`` or ``[B, 3, T, H, W]``) with a mask
    drawn from ``seed`` (the same mask every time, the global RNG untouched)."""
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)
    g = torch.Generator(device=x.device).manual_seed(seed)
    latent, mask = model.forward_encoder(x, mask_ratio, model.get_random_mask(x, mask_ratio, generator=g))
    pred, kept = model.forward_decoder(latent, mask)  # [B, L, C*p*p], [B, L] True = visible
    patches = model.patchify(x).float()
    target = model.normalize_target(patches)
    loss = float((pred.float() - target)[~kept].pow(2).mean()) if bool((~kept).any()) else 0.0
    pred = model.denormalize_pred(pred.float(), patches)
    keep = kept[..., None].float()
    return Reconstruction(
        original=frames_of(model, patches),
        prediction=frames_of(model, pred),
        reconstruction=frames_of(model, patches * keep + pred * (1 - keep)),
        visible=frames_of(model, keep.expand_as(patches)),
        loss=loss,
        norm_pix_loss=bool(getattr(model, "norm_pix_loss", False)),
    )


def reconstruction_picture(model, x: torch.Tensor, mask_ratio: float, seed: int = 0,
                           mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                           all_frames: bool = False, row_labels: Sequence[str] = ()) -> torch.Tensor:
    """uint8 ``[3, H, W]``: a row per image of ``x`` (for a clip, its middle target frame, or every
    target frame with ``all_frames``), labelled ``row_labels``, showing original | masked (grey) |
    prediction | prediction + visible, each tile enlarged to at least 160 pixels; with
    ``norm_pix_loss`` a note on colour casts above it (module docstring)."""
    return reconstruct(model, x, mask_ratio, seed).picture(mean, std, all_frames, row_labels)
