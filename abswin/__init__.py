"""abswin: Hiera with absolute-win position embeddings, MAE pretraining and finetuning."""

__version__ = "0.1.0"  # first: the submodules import it

from .checkpoint import CheckpointError, LoadReport, load_checkpoint
from .models import Hiera, MaskedAutoencoderHiera, absolute_to_abswin, create_model, list_models, window_similarity
from .exported import load_exported
from .pretrained import (PretrainedError, PretrainedWeights, fetch_pretrained, get_pretrained, list_pretrained,
                         register_pretrained)


__all__ = [
    "CheckpointError",
    "Hiera",
    "LoadReport",
    "MaskedAutoencoderHiera",
    "PretrainedError",
    "PretrainedWeights",
    "absolute_to_abswin",
    "create_model",
    "fetch_pretrained",
    "get_pretrained",
    "list_models",
    "list_pretrained",
    "load_exported",
    "load_checkpoint",
    "register_pretrained",
    "window_similarity",
]
