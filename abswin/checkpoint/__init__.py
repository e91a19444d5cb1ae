"""Load Hiera checkpoints of any origin into abswin models.

``load_checkpoint(model, path)`` reads a file safely (:mod:`.reading`: a file whose pickle would
run code is refused, never executed), recognises where it comes from and renames its keys to
ours (:mod:`.formats`), converts the position embeddings to the model at hand
(:mod:`.resize_pos_embed`) and says what it did (:mod:`.report`). Anything that cannot be
reconciled is a one-line :class:`CheckpointError` naming the file, raised before the model is
touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.nn as nn

from .architecture import Architecture, read_architecture, recorded_classes
from .errors import CheckpointError
from .formats import describe, lightning_extras, match_model_kind, our_state_dict
from .reading import check_finite, read_checkpoint
from .report import LoadReport, shape_of
from .resize_pos_embed import Fitting, file_antialias, fit_position_embeddings

__all__ = ["Architecture", "CheckpointError", "LoadReport", "check_finite", "load_checkpoint", "read_architecture",
           "read_checkpoint", "recorded_classes"]

logger = logging.getLogger("abswin")


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = False,
                    checkpoint: dict | None = None) -> LoadReport:
    """Load an official, timm or abswin checkpoint (``.pth``/``.ckpt``/``.safetensors``) into
    ``model``, converting keys and position embeddings as needed.

    Heads of another ``num_classes`` are not loaded (``report.reinitialised``); an MAE's decoder
    is ignored by a classifier and its ``encoder_norm`` becomes the classifier's ``norm``.
    ``strict=True`` raises :class:`CheckpointError` if any model key is missing or any file key
    unexpected. The model is only modified once everything fits. ``checkpoint``: the file, already
    read by :func:`read_checkpoint` (it is not changed), so that a caller that also needs
    :func:`read_architecture` reads it once.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    fmt, weights, sd = our_state_dict(checkpoint, path)
    check_finite(sd, path)
    report = LoadReport(format=fmt, path=str(path), kind=describe(sd),
                        ignored=lightning_extras(weights) if fmt == "lightning" else [])
    if fmt == "timm":
        report.converted.append("timm names mapped to ours (head.fc/head.norm/pos_embed_win/pos_embed)")

    model_sd = model.state_dict()
    sd, dropped, notes = match_model_kind(sd, model_sd)
    report.converted += notes
    report.ignored += dropped
    meta = checkpoint.get("abswin") if isinstance(checkpoint.get("abswin"), dict) else None
    fit = Fitting(model, model_sd, report, path, file_antialias(fmt, meta, model))
    new_antialias = fit_position_embeddings(sd, fit)
    _set_aside_heads_of_another_size(sd, model_sd, report, path)

    report.missing = [k for k in model_sd if k not in sd and k not in report.reinitialised]
    report.unexpected = [k for k in sd if k not in model_sd]
    if strict and (report.missing or report.unexpected):
        raise CheckpointError.about(
            path,
            f"strict load: {len(report.missing)} missing ({', '.join(report.missing[:3]) or '-'}), "
            f"{len(report.unexpected)} unexpected ({', '.join(report.unexpected[:3]) or '-'})",
        )
    if not any(k in model_sd for k in sd):
        sample = ", ".join(list(sd)[:3])
        raise CheckpointError.about(path, f"none of its {len(sd)} tensors belong to this model ({sample}, ...): "
                                          f"a checkpoint of another architecture?")

    result = model.load_state_dict({k: v for k, v in sd.items() if k in model_sd}, strict=False)
    assert not result.unexpected_keys
    report.loaded = sum(1 for k in sd if k in model_sd)
    if new_antialias is not None:
        model.global_pos_antialias = new_antialias

    if report.explained is not None:
        logger.warning(
            "%s: absolute position embedding converted to abs-win; tile(window) + interp(global) "
            "reproduces %.2f%% of it", path, 100 * report.explained,
        )
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    logger.log(level, "%s", report)
    return report


def _set_aside_heads_of_another_size(sd: dict, model_sd: dict, report: LoadReport, path: Path) -> None:
    """Heads of another ``num_classes`` stay as initialised (``report.reinitialised``); any other
    shape mismatch is an error (another model size?)."""
    mismatched = []
    for k in list(sd):
        if k in model_sd and sd[k].shape != model_sd[k].shape:
            if k.startswith("head."):
                report.reinitialised.append(k)
                sd.pop(k)
            else:
                mismatched.append(k)
    if mismatched:
        k = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatched tensors: another model size?)" if len(mismatched) > 1 else ""
        raise CheckpointError.about(
            path, f"{k} has shape {shape_of(sd[k])} in the file but {shape_of(model_sd[k])} in the model{more}"
        )
