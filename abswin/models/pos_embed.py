"""Position embeddings for Hiera: the paper's subject, in one place.

Three ways to get a position embedding for a token grid:

* ``absolute``: one learned embedding at the training grid. At another grid it is
  resized by naive bicubic interpolation (``align_corners=False``, no antialias), exactly
  as MAE's ``interpolate_pos_embed`` does. This is the paper's *buggy baseline*: the
  learned 8x8 window pattern no longer lines up with the windows (paper, Sec. 3).
* ``abswin``: a window embedding the size of one mask unit, tiled over the grid (and
  cropped where the grid is not a multiple of the window), plus a small global embedding
  bicubically interpolated to the grid. Neither parameter depends on the input size, so
  a model trained at 224px runs at 448px without touching its weights (paper, Fig. 3).
* temporal (video): a per-frame-token embedding, linearly interpolated to a new number of
  frame tokens (paper, A.2: 16 frames to 32).

Everything here is a pure function of tensors so that the model, the checkpoint loader
and the analysis tools share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "tile_window",
    "resize_global",
    "abswin_embed",
    "resize_absolute",
    "resize_temporal",
    "window_similarity",
    "AbswinDecomposition",
    "absolute_to_abswin",
]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"expected an int or an (h, w) pair, got {size!r}")
    return size  # type: ignore[return-value]


def tile_window(window: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Tile a ``[1, C, wh, ww]`` window embedding over a ``grid`` and crop to it.

    Tiling starts at the top-left token, which is where Hiera's mask units start, so every
    mask unit sees exactly the learned window embedding.
    """
    gh, gw = _pair(grid)
    wh, ww = window.shape[-2:]
    reps = (math.ceil(gh / wh), math.ceil(gw / ww))
    return window.repeat(1, 1, *reps)[..., :gh, :gw]


def resize_global(glob: torch.Tensor, grid: Sequence[int], antialias: bool = False) -> torch.Tensor:
    """Bicubically resize a ``[1, C, h, w]`` global embedding to ``grid`` (align_corners=False).

    ``antialias`` selects another kernel, not only a low-pass filter for shrinking: with it,
    PyTorch's bicubic uses the PIL-style kernel (a=-0.5) instead of the plain one (a=-0.75),
    so the result differs when upsampling too. timm's abs-win weights were trained with it
    on, the paper authors' code (SAM2) with it off.
    """
    grid = _pair(grid)
    if tuple(glob.shape[-2:]) == grid:
        return glob
    dtype = glob.dtype
    out = F.interpolate(glob.float(), size=grid, mode="bicubic", align_corners=False, antialias=antialias)
    return out.to(dtype)


def abswin_embed(
    window: torch.Tensor | None,
    glob: torch.Tensor | None,
    grid: Sequence[int],
    antialias: bool = False,
) -> torch.Tensor:
    """Compose the abs-win embedding ``tile(window) + interp(global)`` as ``[1, C, gh, gw]``.

    Either part may be ``None`` ("global only" / "window only" of the paper's Table 2).
    """
    if window is None and glob is None:
        raise ValueError("abswin needs a window embedding, a global embedding or both")
    out = None
    if window is not None:
        out = tile_window(window, grid)
    if glob is not None:
        g = resize_global(glob, grid, antialias)
        out = g if out is None else out + g
    return out


def resize_absolute(pos: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """Naively resize a ``[1, N, C]`` absolute embedding (MAE's ``interpolate_pos_embed``).

    Bicubic, ``align_corners=False``, no antialias: the baseline the paper shows to be bugged.
    """
    old_grid, new_grid = _pair(old_grid), _pair(new_grid)
    if old_grid == new_grid:
        return pos
    c = pos.shape[-1]
    if pos.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f"position embedding has {pos.shape[1]} tokens, not a {old_grid} grid")
    x = pos.reshape(1, *old_grid, c).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=new_grid, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(pos.dtype)


def resize_temporal(temporal: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Linearly interpolate a ``[1, T, C]`` temporal embedding to ``num_tokens`` frame tokens."""
    if temporal.shape[1] == num_tokens:
        return temporal
    x = temporal.transpose(1, 2).float()
    x = F.interpolate(x, size=num_tokens, mode="linear", align_corners=False)
    return x.transpose(1, 2).to(temporal.dtype)


def _as_grid(pos: torch.Tensor, grid: Sequence[int] | None) -> torch.Tensor:
    """Accept ``[1, N, C]`` (with ``grid``) or ``[1, C, H, W]`` and return ``[C, H, W]``."""
    if pos.dim() == 4:
        return pos[0]
    if grid is None:
        side = math.isqrt(pos.shape[1])
        if side * side != pos.shape[1]:
            raise ValueError(f"cannot infer the grid of {pos.shape[1]} tokens; pass grid=(h, w)")
        grid = (side, side)
    gh, gw = _pair(grid)
    return pos[0].reshape(gh, gw, -1).permute(2, 0, 1)


def window_similarity_matrix(
    pos: torch.Tensor, window: Sequence[int] = (8, 8), grid: Sequence[int] | None = None
) -> torch.Tensor:
    """``[n, n]`` cosine similarities between the ``n`` whole windows of the embedding (raster
    order), each window's embedding flattened into one vector. Partial windows at the border are
    ignored; fewer than two windows is a ValueError."""
    x = _as_grid(pos.detach(), grid).float()
    c, gh, gw = x.shape
    wh, ww = _pair(window)
    nh, nw = gh // wh, gw // ww
    if nh * nw < 2:
        raise ValueError(f"a {gh}x{gw} grid holds fewer than two {wh}x{ww} windows")
    x = x[:, : nh * wh, : nw * ww].reshape(c, nh, wh, nw, ww).permute(1, 3, 0, 2, 4)
    v = F.normalize(x.reshape(nh * nw, -1), dim=1)
    return v @ v.T


def window_similarity(
    pos: torch.Tensor, window: Sequence[int] = (8, 8), grid: Sequence[int] | None = None
) -> float:
    """The paper's window-repetition metric (Fig. 4 and 8): the mean cosine similarity over all
    pairs of distinct windows (:func:`window_similarity_matrix`). 1.0 means every window carries
    the same embedding (perfectly tiled).
    """
    sim = window_similarity_matrix(pos, window, grid)
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


@dataclass
class AbswinDecomposition:
    """Result of :func:`absolute_to_abswin`.

    ``explained`` is the fraction of the original embedding's variance (around its mean)
    that ``tile(window) + interp(global)`` reproduces; ``rel_error`` is
    ``||pos - recon|| / ||pos||``.
    """

    window: torch.Tensor  # [1, C, wh, ww]
    glob: torch.Tensor  # [1, C, gh, gw]
    explained: float
    rel_error: float


def _bicubic_matrix(src: int, dst: int) -> torch.Tensor:
    """The ``[dst, src]`` matrix of 1-D bicubic resizing (align_corners=False, no antialias)."""
    eye = torch.eye(src, dtype=torch.float64).reshape(src, 1, src, 1)
    out = F.interpolate(eye, size=(dst, 1), mode="bicubic", align_corners=False)
    return out.reshape(src, dst).T


def absolute_to_abswin(
    pos: torch.Tensor,
    grid: Sequence[int],
    window: Sequence[int] = (8, 8),
    global_size: Sequence[int] = (7, 7),
    method: str = "lstsq",
) -> AbswinDecomposition:
    """Split a learned absolute embedding into an abs-win window and global part.

    ``method="pool"``: the window part is the mean of the embedding over all windows (what
    repeats) and the global part is what remains, average-pooled to the global size.
    ``method="lstsq"`` (default): the window and global parts that jointly reproduce the
    embedding best under the exact composition ``tile(window) + bicubic(global)`` (a linear
    least-squares problem shared by all channels). The report says how much of the original
    embedding the decomposition reproduces.
    """
    x = _as_grid(pos.detach(), grid).double()
    c, gh, gw = x.shape
    wh, ww = _pair(window)
    sh, sw = _pair(global_size)
    if gh % wh or gw % ww:
        raise ValueError(f"grid {gh}x{gw} is not a whole number of {wh}x{ww} windows")
    if method == "pool":
        win = x.reshape(c, gh // wh, wh, gw // ww, ww).mean(dim=(1, 3))[None]
        glob = F.adaptive_avg_pool2d(x[None] - tile_window(win, (gh, gw)), (sh, sw))
    elif method == "lstsq":
        # columns: one per window-embedding entry (tiling) and per global entry (bicubic upsampling)
        tiling = tile_window(torch.eye(wh * ww, dtype=x.dtype).view(1, wh * ww, wh, ww), (gh, gw))
        upsample = torch.kron(_bicubic_matrix(sh, gh), _bicubic_matrix(sw, gw))  # [gh*gw, sh*sw]
        design = torch.cat([tiling[0].reshape(wh * ww, -1).T, upsample], dim=1)
        coef = torch.linalg.pinv(design) @ x.reshape(c, -1).T  # [wh*ww + sh*sw, C]
        win = coef[: wh * ww].T.reshape(1, c, wh, ww)
        glob = coef[wh * ww :].T.reshape(1, c, sh, sw)
    else:
        raise ValueError(f"method={method!r} is not one of 'lstsq', 'pool'")
    recon = abswin_embed(win, glob, (gh, gw), antialias=False)
    err = (x[None] - recon).pow(2).sum()
    var = (x - x.mean(dim=(1, 2), keepdim=True)).pow(2).sum()
    return AbswinDecomposition(
        window=win.to(pos.dtype),
        glob=glob.to(pos.dtype),
        explained=float(1 - err / var.clamp_min(1e-12)),
        rel_error=float(err.sqrt() / x.pow(2).sum().sqrt().clamp_min(1e-12)),
    )
