"""abswin: Hiera with absolute-win position embeddings, MAE pretraining and finetuning."""

from .models import Hiera, MaskedAutoencoderHiera, absolute_to_abswin, create_model, list_models, window_similarity

__version__ = "0.1.0"

__all__ = [
    "Hiera",
    "MaskedAutoencoderHiera",
    "absolute_to_abswin",
    "create_model",
    "list_models",
    "window_similarity",
]
