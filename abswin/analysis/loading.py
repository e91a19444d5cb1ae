"""The model of a checkpoint, built and loaded for analysis.

Our Lightning checkpoints say which model they hold (``hyper_parameters``: ``model_name``,
``model_kwargs``). Official, timm and plain state-dict files do not: the caller names the
registry model (``abswin.list_models()``). Either way the model is built as the file's tensors
say (:func:`abswin.checkpoint.read_architecture`: position-embedding mode, global size, head), so an
official absolute embedding is shown as it is, not converted to abs-win, and the weights go
through :func:`abswin.load_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..checkpoint import CheckpointError, LoadReport, load_checkpoint, read_architecture, read_checkpoint
from ..models import create_model

__all__ = ["LoadedModel", "model_from_checkpoint"]


@dataclass
class LoadedModel:
    """A model in eval mode with its weights from ``path``, and how it was built."""

    model: nn.Module
    path: str
    model_name: str
    model_kwargs: dict
    report: LoadReport
    mask_ratio: float | None = None  # the MAE run's, when the file records it (ours do)


def model_from_checkpoint(path: str | Path, model_name: str | None = None, img_size: int | None = None,
                          num_frames: int | None = None, pos_embed: str | None = None) -> LoadedModel:
    """Build the model of the checkpoint at ``path`` and load it (see the module docstring).

    ``model_name`` is needed for files that do not name their model; ``img_size``, ``num_frames``
    and ``pos_embed`` override what the file says (the registry's size otherwise, for files that
    do not say). Problems are one-line ValueErrors (:class:`~abswin.CheckpointError` for the file).
    """
    checkpoint = read_checkpoint(path)  # once: for its architecture, then its weights
    arch = read_architecture(path, checkpoint)
    name = model_name or arch.model_name
    if not name:
        raise CheckpointError.about(path, "does not name its model (an official, timm or plain file): pass the "
                                          "registry name, --model NAME (e.g. hiera_base_224; see abswin.list_models())")
    kwargs = arch.model_options()
    keep_abswin_shapes = arch.pos_embed == "abswin" and pos_embed in (None, "abswin")
    if not keep_abswin_shapes:  # abs-win's shapes are the file's only when it holds abs-win; else the registry's
        kwargs = {k: v for k, v in kwargs.items() if k not in ("window_pos_embed", "global_pos_size")}
    if arch.num_classes:
        kwargs["num_classes"] = arch.num_classes
    overrides = {"img_size": img_size, "num_frames": num_frames, "pos_embed": pos_embed}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    model = create_model(name, **kwargs)
    report = load_checkpoint(model, path, checkpoint=checkpoint)
    mask_ratio = (checkpoint.get("hyper_parameters") or {}).get("mask_ratio")
    return LoadedModel(model.eval(), str(path), name, kwargs, report, mask_ratio)
