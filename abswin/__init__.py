"""abswin: Hiera with absolute-win position embeddings, MAE pretraining and finetuning."""

from .checkpoint import CheckpointError, LoadReport, load_checkpoint
from .models import Hiera, MaskedAutoencoderHiera, absolute_to_abswin, create_model, list_models, window_similarity

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Hiera",
    "LoadReport",
    "MaskedAutoencoderHiera",
    "absolute_to_abswin",
    "create_model",
    "list_models",
    "load_checkpoint",
    "window_similarity",
]
