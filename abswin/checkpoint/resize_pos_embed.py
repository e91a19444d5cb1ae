"""Fit a checkpoint's position embeddings to the model it is loaded into.

The file's spatial embedding (absolute or abs-win) and the model's pick one case, one function
each (:data:`SPATIAL_CASES`):

* absolute -> absolute: naive bicubic resize to the model's ``pretrain_grid`` (the paper's
  baseline);
* absolute -> abs-win: least-squares split into a window and a global part; the report says
  how much of the original it reproduces;
* abs-win -> abs-win: window copied, global resized if its size differs;
* abs-win -> absolute: composed exactly at the model's grid.

Then, whatever the case: the temporal embedding is resized linearly, an MAE's
``decoder_pos_embed`` per frame bicubically and linearly in time. The maths is the model's own,
:mod:`abswin.models.pos_embed`; this module chooses, checks and reports. Every function writes
the fitted tensors into the state dict it is given and never touches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..models import pos_embed as pe
from .errors import CheckpointError
from .report import LoadReport, shape_of

StateDict = dict[str, torch.Tensor]
# where an absolute spatial embedding lives: image models, video models with sep_pos_embed
ABSOLUTE_KEYS = ("pos_embed", "pos_embed_spatial")
ABSWIN_KEYS = ("pos_embed_window", "pos_embed_global")


@dataclass
class Fitting:
    """What every case needs to know besides the file's state dict."""

    model: nn.Module
    model_sd: StateDict
    report: LoadReport  # notes and resized shapes go here
    path: Path  # named in errors
    file_antialias: bool  # whether the file's global embedding was composed with antialias


# a case fits the file's spatial embedding in place; it returns the global_pos_antialias the
# model must use afterwards (None: keep the model's)
SpatialCase = Callable[[StateDict, Fitting], "bool | None"]


def file_antialias(fmt: str, meta: dict | None, model: nn.Module) -> bool:
    """The antialias the checkpoint's global embedding was composed with: timm always uses it,
    ours records it in the ``abswin`` metadata; otherwise assume the model's."""
    if fmt == "timm":
        return True
    if meta is not None and "global_pos_antialias" in meta.get("options", {}):
        return bool(meta["options"]["global_pos_antialias"])
    return bool(getattr(model, "global_pos_antialias", False))


def fit_position_embeddings(sd: StateDict, fit: Fitting) -> bool | None:
    """Fit the spatial, temporal and decoder position embeddings of ``sd`` to the model (in
    place). Returns the ``global_pos_antialias`` the model must use afterwards (``None``: keep)."""
    file_frames = sd["pos_embed_temporal"].shape[1] if "pos_embed_temporal" in sd else None
    case = spatial_case(sd, fit)
    new_antialias = case(sd, fit) if case else None
    resize_temporal_embed(sd, fit)
    resize_decoder_embed(sd, fit, file_frames)
    return new_antialias


def spatial_case(sd: StateDict, fit: Fitting) -> SpatialCase | None:
    """The function of :data:`SPATIAL_CASES` for the file's and the model's spatial embeddings
    (``None``: one of them has none)."""
    return SPATIAL_CASES.get((_file_spatial_kind(sd), _model_spatial_kind(fit)))


def _absolute_key(sd: StateDict) -> str | None:
    return next((k for k in ABSOLUTE_KEYS if k in sd and sd[k].dim() == 3), None)


def _file_spatial_kind(sd: StateDict) -> str | None:
    if _absolute_key(sd):
        return "absolute"
    return "abswin" if any(k in sd for k in ABSWIN_KEYS) else None


def _model_spatial_kind(fit: Fitting) -> str | None:
    if getattr(fit.model, "pos_embed_mode", None) == "abswin":
        return "abswin"
    return "absolute" if _absolute_key(fit.model_sd) else None


def _square_grid(path: Path, key: str, n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError.about(path, f"{key} has {n} tokens, not a square grid: cannot infer its size")
    return side, side


# ---------------------------------------------------------------------------- spatial cases
def resize_absolute_to_absolute(sd: StateDict, fit: Fitting) -> None:
    """Naive bicubic resize to the model's ``pretrain_grid``, as MAE does."""
    key = _absolute_key(sd)
    if key not in fit.model_sd:  # an image embedding offered to a video model: reported as unexpected
        return
    pos = sd[key]
    grid = _square_grid(fit.path, key, pos.shape[1])
    target = tuple(fit.model.pretrain_grid)
    if grid != target:
        sd[key] = pe.resize_absolute(pos, grid, target)
        fit.report.resized[key] = (shape_of(pos), shape_of(sd[key]))


def split_absolute_into_abswin(sd: StateDict, fit: Fitting) -> bool:
    """Least-squares split into the model's window and global parts (a part the model lacks is
    folded into the other). The split assumes plain bicubic: antialias goes off."""
    model, report = fit.model, fit.report
    key = _absolute_key(sd)
    pos = sd.pop(key)
    grid = _square_grid(fit.path, key, pos.shape[1])
    win_p, glob_p = model.pos_embed_window, model.pos_embed_global
    window = tuple(model.mask_unit_size[-2:]) if win_p is not None else (1, 1)
    gsize = tuple(glob_p.shape[-2:]) if glob_p is not None else (1, 1)
    try:
        dec = pe.absolute_to_abswin(pos, grid, window=window, global_size=gsize)
    except ValueError as e:
        raise CheckpointError.about(fit.path, f"cannot split {key} {shape_of(pos)} into abs-win: {e}") from None
    window_emb, glob_emb = dec.window, dec.glob
    # a part the model lacks is folded into the other exactly: bicubic resizing keeps
    # constants, and a 1x1 "window" or "global" is a per-channel constant
    if glob_p is None:
        window_emb, glob_emb = window_emb + glob_emb, None
    if win_p is None:
        window_emb, glob_emb = None, glob_emb + window_emb
    if window_emb is not None:
        sd["pos_embed_window"] = window_emb.contiguous()
    if glob_emb is not None:
        sd["pos_embed_global"] = glob_emb.contiguous()
    parts = " + ".join(
        f"{n} {shape_of(t)}" for n, t in (("window", window_emb), ("global", glob_emb)) if t is not None
    )
    report.explained = dec.explained
    report.converted.append(
        f"absolute {key} {shape_of(pos)} ({grid[0]}x{grid[1]} grid) split into abs-win {parts}: "
        f"reproduces {dec.explained:.2%} of its variance (relative error {dec.rel_error:.3f})"
    )
    if model.global_pos_antialias:
        report.converted.append("global_pos_antialias set to False (the split assumes plain bicubic)")
    return False


def fit_abswin_to_abswin(sd: StateDict, fit: Fitting) -> bool | None:
    """Window copied (its size must match), global resized; a part the file lacks is zero. The
    model takes the antialias the file was trained with."""
    model_sd, report = fit.model_sd, fit.report
    if "pos_embed_window" in sd and "pos_embed_window" in model_sd:
        old, new = shape_of(sd["pos_embed_window"]), shape_of(model_sd["pos_embed_window"])
        if old[-2:] != new[-2:]:
            raise CheckpointError.about(fit.path, f"pos_embed_window has shape {old} in the file but {new} in the "
                                                  "model: a window embedding of another mask-unit size cannot be converted")
    for key in ABSWIN_KEYS:  # a part the file lacks adds nothing
        if key in model_sd and key not in sd:
            sd[key] = torch.zeros_like(model_sd[key])
            report.converted.append(f"{key}: not in the file, set to zero (the file's embedding is the other part alone)")
    new_antialias = None
    if report.format == "timm":
        report.converted.append("global_pos_antialias = True: timm composes the global embedding with antialias")
        new_antialias = True
    elif fit.file_antialias != fit.model.global_pos_antialias:
        report.converted.append(f"global_pos_antialias set to {fit.file_antialias} (as the checkpoint was trained)")
        new_antialias = fit.file_antialias
    if "pos_embed_global" in sd and "pos_embed_global" in model_sd:
        g, want = sd["pos_embed_global"], model_sd["pos_embed_global"]
        size = tuple(want.shape[-2:])
        if tuple(g.shape[-2:]) != size and g.shape[1] == want.shape[1]:
            sd["pos_embed_global"] = pe.resize_global(g, size, antialias=fit.file_antialias).contiguous()
            report.resized["pos_embed_global"] = (shape_of(g), shape_of(sd["pos_embed_global"]))
    return new_antialias


def compose_abswin_into_absolute(sd: StateDict, fit: Fitting) -> None:
    """tile(window) + interp(global) evaluated at the model's grid: exact."""
    key = _absolute_key(fit.model_sd)
    win, glob = sd.pop("pos_embed_window", None), sd.pop("pos_embed_global", None)
    grid = tuple(fit.model.pretrain_grid)
    pos = pe.abswin_embed(win, glob, grid, antialias=fit.file_antialias).flatten(2).transpose(1, 2).contiguous()
    sd[key] = pos
    fit.report.converted.append(
        f"abs-win embedding composed into absolute {key} {shape_of(pos)} at the "
        f"{grid[0]}x{grid[1]} grid (exact, antialias={fit.file_antialias})"
    )


SPATIAL_CASES: dict[tuple[str, str], SpatialCase] = {
    ("absolute", "absolute"): resize_absolute_to_absolute,
    ("absolute", "abswin"): split_absolute_into_abswin,
    ("abswin", "abswin"): fit_abswin_to_abswin,
    ("abswin", "absolute"): compose_abswin_into_absolute,
}


# ---------------------------------------------------------------------------- time and decoder
def resize_temporal_embed(sd: StateDict, fit: Fitting) -> None:
    """Linear interpolation to the model's number of frame tokens."""
    if "pos_embed_temporal" not in sd or "pos_embed_temporal" not in fit.model_sd:
        return
    t = sd["pos_embed_temporal"]
    n = fit.model_sd["pos_embed_temporal"].shape[1]
    if t.shape[1] != n:
        sd["pos_embed_temporal"] = pe.resize_temporal(t, n).contiguous()
        fit.report.resized["pos_embed_temporal"] = (shape_of(t), shape_of(sd["pos_embed_temporal"]))


def resize_decoder_embed(sd: StateDict, fit: Fitting, file_frames: int | None) -> None:
    """An MAE decoder's absolute embedding: bicubic per frame, linear in time (video, where
    ``file_frames`` is the file's number of frame tokens)."""
    if "decoder_pos_embed" not in sd or "decoder_pos_embed" not in fit.model_sd:
        return
    d = sd["decoder_pos_embed"]
    want = fit.model_sd["decoder_pos_embed"].shape
    if d.shape == want or d.shape[-1] != want[-1]:
        return
    final = list(fit.model.tokens_spatial_shape_final)
    grid_new = tuple(final[-2:])
    if len(final) == 3:  # video: [1, T*h*w, C], T outermost
        t_old = file_frames or final[0]
        if d.shape[1] % t_old:
            raise CheckpointError.about(
                fit.path, f"decoder_pos_embed has {d.shape[1]} tokens, not a multiple of {t_old} frames"
            )
        grid_old = _square_grid(fit.path, "decoder_pos_embed (per frame)", d.shape[1] // t_old)
        frames = [pe.resize_absolute(f[None], grid_old, grid_new)[0] for f in d[0].view(t_old, -1, d.shape[-1])]
        x = torch.stack(frames, 1)  # [h*w, T, C]: one temporal sequence per spatial token
        x = pe.resize_temporal(x, final[0])
        new = x.transpose(0, 1).reshape(1, -1, d.shape[-1])
    else:
        grid_old = _square_grid(fit.path, "decoder_pos_embed", d.shape[1])
        new = pe.resize_absolute(d, grid_old, grid_new)
    sd["decoder_pos_embed"] = new.contiguous()
    fit.report.resized["decoder_pos_embed"] = (shape_of(d), shape_of(new))
