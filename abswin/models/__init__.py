"""Model code: pure PyTorch, no Lightning, no Hydra, no file formats."""

from .features import HieraFeatures
from .hiera import Hiera
from .mae import MaskedAutoencoderHiera
from .pos_embed import absolute_to_abswin, window_similarity
from .registry import create_model, hiera_name, list_models

__all__ = ["Hiera", "HieraFeatures", "MaskedAutoencoderHiera", "create_model", "hiera_name", "list_models", "window_similarity", "absolute_to_abswin"]
