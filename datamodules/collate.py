"""Data set items ``(x or None, label, index)`` (see :mod:`datamodules.files`; ``x`` uint8) to a
:class:`~abswin.batch.Batch`, with each sample's data-set index. Unreadable files (``x`` None) are left out of the inputs and their
data-set indices are reported in ``Batch.missing``, never replaced by other samples. A batch whose
every file was unreadable has empty inputs (the training step skips it).
"""
from __future__ import annotations

import torch

from abswin.batch import Batch

__all__ = ["collate_images", "collate_video_eval", "collate_video_train"]


def _readable(items: list) -> tuple[list, torch.Tensor]:
    """The items whose file decoded, and the data-set indices (int64 ``[M]``) of those that did not."""
    missing = torch.tensor([index for x, _, index in items if x is None], dtype=torch.int64)
    return [item for item in items if item[0] is not None], missing


def _labels(ok: list, repeat: int = 1) -> torch.Tensor:
    return torch.tensor([label for _, label, _ in ok for _ in range(repeat)], dtype=torch.int64)


def _indices(ok: list, repeat: int = 1) -> torch.Tensor:
    return torch.tensor([index for _, _, index in ok for _ in range(repeat)], dtype=torch.int64)


def collate_images(items: list) -> Batch:
    """Images ``[3, H, W]`` -> ``Batch(images [N, 3, H, W], labels [N], missing)`` (training and
    evaluation). All unreadable: ``images [0, 3, 0, 0]``."""
    ok, missing = _readable(items)
    images = torch.stack([x for x, _, _ in ok]) if ok else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return Batch(images, _labels(ok), missing=missing, indices=_indices(ok))


def collate_video_train(items: list) -> Batch:
    """Training videos, R clips each (``[R, 3, T, H, W]``) -> ``Batch(images [N*R, 3, T, H, W],
    labels [N*R] (each video's label R times), missing, clips_per_sample=R)``. All unreadable:
    ``images [0, 3, 0, 0, 0]``."""
    ok, missing = _readable(items)
    if not ok:
        return Batch(torch.empty(0, 3, 0, 0, 0, dtype=torch.uint8), _labels(ok), missing=missing,
                     indices=_indices(ok))
    clips_per_sample = len(ok[0][0])
    return Batch(torch.cat([x for x, _, _ in ok]), _labels(ok, clips_per_sample), missing=missing,
                 clips_per_sample=clips_per_sample, indices=_indices(ok, clips_per_sample))


def collate_video_eval(items: list) -> Batch:
    """Evaluation videos, V views each (``[V, 3, T, H, W]``) -> ``Batch(images=None, views [B, V, 3,
    T, H, W], labels [B], video_index [B], missing)``. All unreadable: ``views [0, 0, 3, 0, 0, 0]``."""
    ok, missing = _readable(items)
    views = torch.stack([x for x, _, _ in ok]) if ok else torch.empty(0, 0, 3, 0, 0, 0, dtype=torch.uint8)
    index = torch.tensor([i for _, _, i in ok], dtype=torch.int64)
    return Batch(None, _labels(ok), views=views, video_index=index, missing=missing)
