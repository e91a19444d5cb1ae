"""Pictures as uint8 ``[3, H, W]`` tensors: colour maps, enlarged tiles with the window grid drawn
over them, tile grids, labels and PNG files.

Pure torch and PIL (no matplotlib), so that the training callbacks, which have only the
``[train]`` extra, draw the same pictures as ``python analyze.py`` and the notebooks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["colourise", "draw_window_grid", "enlarge", "grid", "labelled", "normalise_each", "save_png",
           "to_uint8", "zoom_for"]

# matplotlib's viridis at 17 evenly spaced points (linearly interpolated in between)
_VIRIDIS = torch.tensor([
    [68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141], [44, 114, 142],
    [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
    [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37],
], dtype=torch.float32) / 255
PAD = 2  # pixels between tiles (white)


def normalise_each(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale each ``[h, w]`` map of ``[N, h, w]`` to [0, 1] (a constant map becomes 0)."""
    flat = x.float().flatten(1)
    lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x)


def colourise(x: torch.Tensor) -> torch.Tensor:
    """Maps ``[N, h, w]`` with values in [0, 1] to viridis colours ``[N, 3, h, w]``."""
    t = x.float().clamp(0, 1) * (len(_VIRIDIS) - 1)
    lo = t.floor().long().clamp(max=len(_VIRIDIS) - 2)
    frac = (t - lo)[..., None]
    rgb = _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac  # [N, h, w, 3]
    return rgb.permute(0, 3, 1, 2)


def zoom_for(size: Sequence[int], target: int = 128) -> int:
    """The whole-number enlargement that makes a map of ``size`` tokens about ``target`` pixels."""
    return max(1, math.ceil(target / max(size)))


def enlarge(tiles: torch.Tensor, scale: int) -> torch.Tensor:
    """``[N, C, h, w]`` enlarged ``scale`` times, each token a ``scale x scale`` block."""
    return F.interpolate(tiles.float(), scale_factor=scale, mode="nearest") if scale > 1 else tiles.float()


def draw_window_grid(tiles: torch.Tensor, window: Sequence[int], scale: int, alpha: float = 0.6) -> torch.Tensor:
    """White lines along the window (mask-unit) borders of enlarged ``[N, 3, H, W]`` tiles: a
    line on the first pixel row / column of every window but the first."""
    out = tiles.clone()
    wh, ww = (int(w) * scale for w in window)
    rows, cols = list(range(wh, out.shape[-2], wh)), list(range(ww, out.shape[-1], ww))
    out[..., rows, :] = out[..., rows, :] * (1 - alpha) + alpha
    out[..., :, cols] = out[..., :, cols] * (1 - alpha) + alpha
    return out


def grid(tiles: torch.Tensor, ncol: int, padding: int = PAD, pad_value: float = 1.0) -> torch.Tensor:
    """``[N, C, h, w]`` tiles laid out row by row, ``ncol`` to a row, ``padding`` pixels of
    ``pad_value`` around each (torchvision's ``make_grid``, also for a single tile)."""
    n, c, h, w = tiles.shape
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    out = torch.full((c, nrow * (h + padding) + padding, ncol * (w + padding) + padding), pad_value,
                     dtype=tiles.dtype)
    for i in range(n):
        y, x = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        out[:, y:y + h, x:x + w] = tiles[i]
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8."""
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def labelled(image: torch.Tensor, tile: Sequence[int], title: str = "", rows: Sequence[str] = (),
             cols: Sequence[str] = (), padding: int = PAD) -> torch.Tensor:
    """A uint8 ``[3, H, W]`` picture made by :func:`grid` (tiles of ``tile = (h, w)`` pixels)
    with a title above it (lines split at ``\n``), a label left of each row and one above each column."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom

    line = max(size("Ag")[1], 8) + 4
    left = max((size(r)[0] for r in rows), default=0) + (8 if rows else 0)
    title_lines = title.split("\n") if title else []
    top = line * len(title_lines) + (line if cols else 0)
    h, w = image.shape[-2:]
    canvas = Image.new("RGB", (max([left + w] + [size(t)[0] + 8 for t in title_lines]), top + h), "white")
    canvas.paste(Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        draw.text((4, 2 + i * line), text, fill="black", font=font)
    for j, text in enumerate(cols):
        x = left + padding + j * (tile[1] + padding) + (tile[1] - size(text)[0]) // 2
        draw.text((max(x, left), top - line + 2), text, fill="black", font=font)
    for i, text in enumerate(rows):
        y = top + padding + i * (tile[0] + padding) + (tile[0] - line) // 2
        draw.text((4, y), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save a uint8 ``[3, H, W]`` picture (creating its folder)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.detach().cpu().permute(1, 2, 0).contiguous().numpy()).save(path)
    return path
