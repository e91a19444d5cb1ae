"""A model's spatial position embedding: its parts at any token grid, the window-similarity metric
(paper, Fig. 4) and its window-by-window matrix, the token-to-token similarity of the window and
global embeddings (Fig. 5), and the pictures of all of them (Figs. 1-3, 5).

An embedding here is a ``[C, h, w]`` tensor on a token grid. Its *own grid* is the one it is kept
at: the training grid of an ``absolute`` parameter, the model's token grid for ``abswin``. At
another grid ``absolute`` is resized naively (bicubic: the paper's bug) and ``abswin`` by tiling
its window part and interpolating its global part, both by the model's own code
(:meth:`Hiera.get_pos_embed`, :mod:`abswin.models.pos_embed`). For video models this is the
spatial embedding, without the temporal part.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..models import pos_embed as pe
from . import drawing

__all__ = [
    "channels_picture",
    "check_channels",
    "embedding_parts",
    "grid_at",
    "next_size",
    "num_channels",
    "own_grid",
    "pixels",
    "spatial_window_similarity",
    "token_similarity",
    "token_similarity_picture",
    "window_and_global",
    "window_of",
    "window_similarity_matrix",
    "window_similarity_picture",
]

Grid = tuple[int, int]


def own_grid(model) -> Grid:
    """The token grid the spatial embedding is kept at (see the module docstring)."""
    if model.pos_embed_mode == "absolute":
        return tuple(int(g) for g in model.pretrain_grid)
    return tuple(int(g) for g in model.tokens_spatial_shape[-2:])


def num_channels(model) -> int:
    """The embedding's width (the model's first-stage width)."""
    return int(model.patch_embed.proj.out_channels)


def check_channels(model, channels: Sequence[int]) -> None:
    """A one-line ValueError unless ``channels`` are some of the embedding's channels."""
    n = num_channels(model)
    bad = [c for c in channels if not 0 <= c < n]
    if bad or not channels:
        raise ValueError(f"channel {bad[0] if bad else '(none)'}: the embedding has {n} channels (0-{n - 1})")


def window_of(model) -> Grid:
    """The window (mask unit) of the first stages, in tokens: ``(8, 8)`` for every Hiera."""
    return tuple(int(m) for m in model.mask_unit_size[-2:])


def pixels(model, grid: Sequence[int]) -> Grid:
    """The image size, ``(height, width)`` in pixels, of a token grid."""
    return tuple(int(g) * int(s) for g, s in zip(grid, model.patch_stride[-2:]))


def grid_at(model, size: int | Sequence[int]) -> Grid:
    """The token grid of an image ``size`` (pixels, ``int`` or ``(h, w)``); a ValueError when
    the size is not a whole number of patches."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    sh, sw = (int(s) for s in model.patch_stride[-2:])
    if h <= 0 or w <= 0 or h % sh or w % sw:
        raise ValueError(f"size {h}x{w} px is not a whole number of this model's {sh}x{sw}-pixel patches "
                         f"(e.g. {max(sh, h // sh * sh)} or {(h // sh + 1) * sh})")
    return h // sh, w // sw


def next_size(model) -> Grid:
    """The default size to resize to: one window more on each side (224 -> 256 px, the paper's
    Fig. 1b; 64 -> 96 px), the next size the model can run at."""
    return pixels(model, [g + m for g, m in zip(own_grid(model), window_of(model))])


@torch.no_grad()
def embedding_parts(model, grid: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """The spatial embedding at ``grid`` (default: its own) as ``[C, h, w]`` float tensors:
    ``{"absolute"}``, or for abs-win ``{"composed", "window", "global"}`` (window tiled and
    cropped, global interpolated, as the model composes them; a part the model lacks is left out)."""
    h, w = grid = tuple(grid or own_grid(model))
    composed = model.get_pos_embed(list(grid))[0].T.reshape(-1, h, w).detach().float()
    if model.pos_embed_mode == "absolute":
        return {"absolute": composed}
    parts = {"composed": composed}
    if model.pos_embed_window is not None:
        parts["window"] = pe.tile_window(model.pos_embed_window, grid)[0].detach().float()
    if model.pos_embed_global is not None:
        parts["global"] = pe.resize_global(model.pos_embed_global, grid, model.global_pos_antialias)[0].detach().float()
    return parts


@torch.no_grad()
def spatial_window_similarity(model, grid: Sequence[int] | None = None) -> float:
    """The paper's window similarity (Fig. 4) of the spatial embedding at ``grid`` (default: its
    own), by :func:`abswin.window_similarity`; a ValueError for fewer than two windows."""
    grid = list(grid or own_grid(model))
    return pe.window_similarity(model.get_pos_embed(grid), window=window_of(model), grid=grid)


def window_similarity_matrix(emb: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """:func:`abswin.models.pos_embed.window_similarity_matrix` of a ``[C, h, w]`` embedding."""
    return pe.window_similarity_matrix(emb[None], window)


@torch.no_grad()
def window_and_global(model) -> tuple[dict[str, torch.Tensor], str]:
    """``({"window": [C, wh, ww], "global": [C, gh, gw]}, where they come from)``: an abs-win
    model's own parameters, or for an ``absolute`` one the least-squares split
    (:func:`abswin.absolute_to_abswin`, 7x7 global) of its embedding at its own grid; a
    ValueError when that grid is not a whole number of windows."""
    if model.pos_embed_mode == "abswin":
        parts = {"window": model.pos_embed_window, "global": model.pos_embed_global}
        return {k: v[0].detach().float() for k, v in parts.items() if v is not None}, "the model's parameters"
    grid = own_grid(model)
    dec = pe.absolute_to_abswin(model.get_pos_embed(list(grid)), grid, window=window_of(model),
                                global_size=tuple(min(7, g) for g in grid))
    note = f"least-squares split of the absolute embedding (reproduces {100 * dec.explained:.1f}% of it)"
    return {"window": dec.window[0].float(), "global": dec.glob[0].float()}, note


def token_similarity(emb: torch.Tensor) -> torch.Tensor:
    """``[h, w, h, w]``: entry ``[i, j]`` is the map of cosine similarities between token
    ``(i, j)`` of a ``[C, h, w]`` embedding and every token (paper, Fig. 5)."""
    c, h, w = emb.shape
    v = F.normalize(emb.reshape(c, h * w).T.float(), dim=1)
    return (v @ v.T).reshape(h, w, h, w)


# ---------------------------------------------------------------------------- pictures
def _size_text(model, grid: Sequence[int]) -> str:
    (ph, pw), (h, w) = pixels(model, grid), grid
    return f"{ph}x{pw} px ({h}x{w} tokens)"


def channels_picture(model, channels: Sequence[int], grid: Sequence[int] | None = None,
                     scale: int | None = None, title: str | None = None) -> torch.Tensor:
    """uint8 ``[3, H, W]``: the chosen ``channels`` (columns) of each part of the embedding
    (rows, :func:`embedding_parts`) at ``grid`` (default: its own), each channel min-max scaled,
    tokens enlarged ``scale`` times (default: to about 128 px), the window grid drawn over them."""
    grid = tuple(grid or own_grid(model))
    check_channels(model, channels)
    parts = embedding_parts(model, grid)
    scale = scale or drawing.zoom_for(grid)
    tiles = torch.cat([drawing.colourise(drawing.normalise_each(p[list(channels)])) for p in parts.values()])
    tiles = drawing.draw_window_grid(drawing.enlarge(tiles, scale), window_of(model), scale)
    image = drawing.to_uint8(drawing.grid(tiles, ncol=len(channels)))
    if title is None:
        how = "" if grid == own_grid(model) else (
            ": naive bicubic" if model.pos_embed_mode == "absolute" else ": window tiled, global interpolated")
        title = f"{model.pos_embed_mode} position embedding at {_size_text(model, grid)}{how}; windows {window_of(model)}"
    return drawing.labelled(image, tiles.shape[-2:], title, rows=list(parts), cols=[f"ch {c}" for c in channels])


def window_similarity_picture(model, grids: Sequence[Sequence[int]], size: int = 160) -> torch.Tensor:
    """uint8 ``[3, H, W]``: for each grid, the matrix of cosine similarities between the windows of
    the spatial embedding (:func:`window_similarity_matrix`, colours from -1 to 1), titled with
    its mean, the paper's window similarity. Grids of fewer than two windows are left out."""
    window = window_of(model)
    tiles, names = [], []
    for grid in grids:
        emb = embedding_parts(model, grid)
        emb = emb.get("composed", emb.get("absolute"))
        try:
            sim = window_similarity_matrix(emb, window)
        except ValueError:
            continue
        mean = pe.window_similarity(emb[None], window)
        tile = drawing.colourise(((sim + 1) / 2)[None])
        tiles.append(F.interpolate(tile, size=(size, size), mode="nearest"))
        names.append(f"{'x'.join(map(str, pixels(model, grid)))} px: {mean:.4f}")
    if not tiles:
        raise ValueError(f"no grid of {grids} holds two {window[0]}x{window[1]} windows")
    image = drawing.to_uint8(drawing.grid(torch.cat(tiles), ncol=len(tiles)))
    return drawing.labelled(image, (size, size), "window similarity: cosine between windows (-1..1), mean",
                            cols=names)


def token_similarity_picture(emb: torch.Tensor, title: str, size: int = 40) -> torch.Tensor:
    """uint8 ``[3, H, W]`` (paper, Fig. 5): one small map per token of a ``[C, h, w]`` embedding,
    laid out as the tokens are, showing that token's cosine similarity to every token
    (colours from -1 to 1)."""
    h, w = emb.shape[-2:]
    sims = token_similarity(emb).reshape(h * w, h, w)
    scale = drawing.zoom_for((h, w), size)
    tiles = drawing.enlarge(drawing.colourise((sims + 1) / 2), scale)
    image = drawing.to_uint8(drawing.grid(tiles, ncol=w, padding=1))
    return drawing.labelled(image, tiles.shape[-2:], title, padding=1)
