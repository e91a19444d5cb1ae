"""Load a folder written by ``python -m abswin.export`` (:mod:`abswin.export`): its
``config.json`` rebuilds the network, its ``model.safetensors`` holds the weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .models import create_model
from .pretrained import HUB_PREFIX, local_path

__all__ = ["CONFIG", "load_exported"]

CONFIG = "config.json"


def load_exported(folder: str | Path) -> torch.nn.Module:
    """The model of an exported folder, its weights loaded (strictly), in eval mode. ``folder``: a
    path, or ``hf-hub:OWNER/NAME`` for one on the Hugging Face hub (fetched once into its cache)."""
    folder = local_path(str(folder)) if str(folder).startswith(HUB_PREFIX) else Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        name, options = config["model"], config["options"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError.about(folder, f"not an exported folder: {CONFIG} is missing or unreadable ({e})") from None
    model = create_model(name, **options)
    load_checkpoint(model, folder, strict=True)
    return model.eval()
