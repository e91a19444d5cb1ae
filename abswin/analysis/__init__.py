"""Looking at a Hiera's position embedding and MAE reconstructions: the pictures and numbers behind
``python analyze.py``, the training callbacks' W&B images and the notebooks.

* :mod:`.embeddings`: the embedding's parts at any token grid, window similarity, token similarity,
  and their pictures (the paper's Figs. 1-5);
* :mod:`.reconstructions`: MAE reconstructions of images and clips;
* :mod:`.loading`: the model of any checkpoint we can load;
* :mod:`.report`: all of it for one model, as PNGs and ``report.md``;
* :mod:`.drawing`: uint8 pictures (colour map, window grid, labels, PNG) with torch and PIL only.

Pictures are uint8 ``[3, H, W]`` tensors (``drawing.save_png`` writes one; ``plt.imshow(
image.permute(1, 2, 0))`` shows one).
"""

from .drawing import save_png
from .embeddings import (channels_picture, embedding_parts, grid_at, next_size, num_channels, own_grid,
                         spatial_window_similarity, token_similarity, token_similarity_picture, window_and_global,
                         window_similarity_matrix, window_similarity_picture)
from .loading import LoadedModel, model_from_checkpoint
from .reconstructions import (Reconstruction, has_decoder, load_image, prepare, reconstruct,
                              reconstruction_picture)
from .report import Analysis, analyze

__all__ = [
    "Analysis",
    "LoadedModel",
    "Reconstruction",
    "analyze",
    "channels_picture",
    "embedding_parts",
    "grid_at",
    "has_decoder",
    "load_image",
    "model_from_checkpoint",
    "next_size",
    "num_channels",
    "own_grid",
    "prepare",
    "reconstruct",
    "reconstruction_picture",
    "save_png",
    "spatial_window_similarity",
    "token_similarity",
    "token_similarity_picture",
    "window_and_global",
    "window_similarity_matrix",
    "window_similarity_picture",
]
