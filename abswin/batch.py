"""What a data loader hands a Lightning module: :class:`Batch`, the one contract between the data
layer (:mod:`datamodules`, whose collate functions build it) and the training layer
(:mod:`training`, which reads its fields). Only torch is imported here.

Three kinds of batch, told apart by their fields, never by their length or rank:

* images (training and evaluation): ``images [N, 3, H, W]``, ``labels [N]``;
* video training: ``images [N, 3, T, H, W]`` clips, ``labels [N]``, with ``N = videos x
  clips_per_sample`` (repeated sampling: several clips drawn from each decoded video);
* video evaluation (the multi-view protocol): ``views [B, V, 3, T, H, W]`` (V views of each of B
  videos), ``labels [B]``, ``video_index [B]``; ``images`` is None.

``missing`` holds the data-set indices of the files of this batch that could not be decoded: they
are reported (``val/missing``), never replaced by other samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

__all__ = ["Batch"]


def _no_indices() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass
class Batch:
    """A batch with named fields (see the module docstring for the three kinds).

    Lightning moves it to the device field by field (``apply_to_collection`` handles dataclasses);
    a DataLoader with ``pin_memory=True`` calls :meth:`pin_memory`.
    """

    images: torch.Tensor | None
    """``[N, 3, H, W]`` images or ``[N, 3, T, H, W]`` clips; None in multi-view batches. uint8 from
    the loader; normalised float32 once on the device (what the modules get)."""
    labels: torch.Tensor
    """int64 class indices: one per image or clip (``[N]``), or per video with ``views`` (``[B]``)."""
    views: torch.Tensor | None = None
    """``[B, V, 3, T, H, W]``: multi-view video evaluation (average the softmax over V); uint8, then
    float32, as ``images``."""
    video_index: torch.Tensor | None = None
    """int64 ``[B]``: the data-set index of each video of ``views``."""
    missing: torch.Tensor = field(default_factory=_no_indices)
    """int64 ``[M]``: data-set indices of this batch's unreadable files (reported, not replaced)."""
    clips_per_sample: int = 1
    """Clips per decoded video in ``images`` (repeated sampling); 1 for images."""
    indices: torch.Tensor | None = None
    """int64 ``[N]``: the data-set index of each image or clip of ``images`` (seeds per-sample
    augmentation on the device)."""

    def __post_init__(self) -> None:
        if (self.images is None) == (self.views is None):
            raise ValueError("a Batch holds either images (or clips) or multi-view views, not both or neither")

    @property
    def inputs(self) -> torch.Tensor:
        """``images``, or ``views`` in a multi-view batch."""
        return self.views if self.views is not None else self.images

    @property
    def num_samples(self) -> int:
        """Images or videos in the batch: a video counts once however many clips or views it gives."""
        if self.views is not None:
            return int(self.views.shape[0])
        return int(self.images.shape[0]) // self.clips_per_sample

    def pin_memory(self) -> Batch:
        """A copy whose tensors are in pinned memory (the DataLoader's ``pin_memory=True``)."""
        return dataclasses.replace(self, **{
            f.name: value.pin_memory() for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)})
