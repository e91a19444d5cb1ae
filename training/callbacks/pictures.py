"""Callbacks that watch the position embedding and MAE reconstructions during training.

They need only ``pl_module.model`` (a :class:`~abswin.Hiera` or MAE model). The numbers and
pictures are :mod:`abswin.analysis`'s, the same as ``python analyze.py`` and the notebooks
make. Pictures go to every :class:`~lightning.pytorch.loggers.WandbLogger` of the trainer and are
always saved as PNG under ``<default_root_dir>/plots/`` (CSV users get them too). Only global
rank 0 makes them, so nothing here may call a collective (``trainer.log_dir`` is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch

from abswin import analysis
from abswin.analysis.reconstructions import COLUMNS, IMAGENET_MEAN, IMAGENET_STD
from abswin.batch import Batch
from abswin.normalization import normalize

__all__ = [
    "WindowSimilarityLogger",
    "PosEmbedImageLogger",
    "MAEReconstructionLogger",
    "log_and_save_image",
]


def _model(pl_module: pl.LightningModule) -> torch.nn.Module:
    return pl_module.model


def _plots_dir(trainer: pl.Trainer) -> Path:
    """``<default_root_dir>/plots`` (the run directory). Not ``trainer.log_dir``: that is a
    broadcast to every rank, and the pictures are made on rank 0 alone."""
    return Path(trainer.default_root_dir) / "plots"


def log_and_save_image(trainer: pl.Trainer, key: str, image: torch.Tensor, caption: str | None = None) -> Path:
    """Log a ``[3, H, W]`` uint8 image to every WandbLogger and save it as PNG (global rank 0)."""
    from lightning.pytorch.loggers import WandbLogger

    image = image.detach().cpu()
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            kw = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[image.permute(1, 2, 0).numpy()], step=trainer.global_step, **kw)
    path = _plots_dir(trainer) / f"{key.replace('/', '_')}_epoch{trainer.current_epoch:04d}.png"
    return analysis.save_png(image, path)


class _EveryNEpochs(pl.Callback):
    def __init__(self, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs

    def _due(self, trainer: pl.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking


class WindowSimilarityLogger(pl.Callback):
    """Logs ``pos_embed/window_similarity`` at the end of every training epoch (and at the
    start of training, for the curve's first point, when ``log_at_start``)."""

    def __init__(self, log_at_start: bool = True):
        self.log_at_start = log_at_start

    def on_train_start(self, trainer, pl_module) -> None:
        if self.log_at_start:
            try:
                value = analysis.spatial_window_similarity(_model(pl_module))
            except ValueError:  # grid of fewer than two windows
                return
            for logger in trainer.loggers:
                logger.log_metrics({"pos_embed/window_similarity": value}, step=trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        try:
            value = analysis.spatial_window_similarity(_model(pl_module))
        except ValueError:  # grid of fewer than two windows
            return
        # the same value on every rank: sync_dist only keeps Lightning from warning
        pl_module.log("pos_embed/window_similarity", value, on_step=False, on_epoch=True, sync_dist=True)


class PosEmbedImageLogger(_EveryNEpochs):
    """Every ``every_n_epochs`` epochs, a picture of the first ``num_channels`` channels of the
    spatial position embedding at the model's token grid (each channel min-max scaled, the window
    grid drawn over it; :func:`abswin.analysis.channels_picture`). Rows: the embedding, and for
    abs-win also its tiled window part and its interpolated global part. Tokens are enlarged
    ``scale`` times."""

    def __init__(self, every_n_epochs: int = 1, num_channels: int = 8, scale: int = 4):
        super().__init__(every_n_epochs)
        self.num_channels = num_channels
        self.scale = scale

    def make_image(self, model) -> torch.Tensor:
        n = min(self.num_channels, analysis.num_channels(model))
        return analysis.channels_picture(model, range(n), scale=self.scale)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        model = _model(pl_module)
        parts = "composed, window, global" if model.pos_embed_mode == "abswin" else "absolute"
        log_and_save_image(trainer, "pos_embed/channels", self.make_image(model),
                           caption=f"epoch {trainer.current_epoch}: {parts}")


class MAEReconstructionLogger(_EveryNEpochs):
    """Every ``every_n_epochs`` epochs, original | masked | prediction | prediction with the
    visible patches pasted in, for a fixed set of ``num_images`` from the val loader (else the
    train loader), drawn from as many classes as there are (labelled with their class), with a
    fixed mask (:func:`abswin.analysis.reconstruction_picture`). Video: the middle frame of each
    clip (of the frames the MAE target uses)."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 8,
        mask_ratio: float | None = None,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__(every_n_epochs)
        self.num_images = num_images
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.mean = list(mean)
        self.std = list(std)
        self._batch: tuple[torch.Tensor, list[str]] | None = None

    def _fixed_batch(self, trainer) -> tuple[torch.Tensor, list[str]] | None:
        if self._batch is None:
            classes = getattr(getattr(trainer, "datamodule", None), "classes", None)
            for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
                found = _first_images(loaders, self.num_images)
                if found is not None:
                    images, labels = found
                    names = [str(classes[i]) if classes and 0 <= i < len(classes) else str(i) for i in labels]
                    self._batch = images, names
                    break
        return self._batch

    def make_image(self, model, images: torch.Tensor, mask_ratio: float, row_labels=()) -> torch.Tensor:
        """:func:`abswin.analysis.reconstruction_picture` with this logger's mask seed, mean and std."""
        return analysis.reconstruction_picture(model, images, mask_ratio, self.seed, self.mean, self.std,
                                               row_labels=row_labels)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        model = _model(pl_module)
        found = self._fixed_batch(trainer)
        if found is None or found[0].dim() not in (4, 5) or not analysis.has_decoder(model):
            return
        images, names = found
        ratio = self.mask_ratio if self.mask_ratio is not None else pl_module.hparams.mask_ratio  # the run's
        was_training = model.training
        model.eval()
        try:
            image = self.make_image(model, images, ratio, [f"class {n}" for n in names])
        finally:
            model.train(was_training)
        log_and_save_image(trainer, "mae/reconstruction", image,
                           caption=f"epoch {trainer.current_epoch}: {' | '.join(COLUMNS)}")


def spread_over_classes(labels, n: int) -> list[int]:
    """Up to ``n`` indices into ``labels``: one sample each of ``n`` classes spaced evenly over the
    label range (not the first ``n``: ImageNet's neighbouring classes are all fish), and when there
    are fewer classes than ``n``, the next sample of each class in turn."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(int(x) for x in labels):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    if len(classes) > n:
        classes = [classes[i * len(classes) // n] for i in range(n)]
    queues = [by_class[c] for c in classes]
    chosen: list[int] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
        if len(chosen) >= n:
            break
    return chosen[:n]


def _first_images(loaders, n: int) -> tuple[torch.Tensor, list[int]] | None:
    """``n`` images (or clips: of a video, its first clip or view) of a loader (or of the first
    loader of a list / dict) and their labels: spread over the classes (:func:`spread_over_classes`)
    when the data set has ``labels``, read through the loader's collate (no worker start-up); else
    the first batch's first ``n``."""
    if loaders is None:
        return None
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if loaders is None:
        return None
    dataset = getattr(loaders, "dataset", None)
    batch = None
    try:
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            labels = getattr(dataset, "labels", None)
            indices = spread_over_classes(labels, n) if labels is not None else range(min(n, len(dataset)))
            batch = loaders.collate_fn([dataset[i] for i in indices])
    except Exception:
        pass
    if not isinstance(batch, Batch) or batch.num_samples == 0:
        batch = next(iter(loaders))
    step = 1 if batch.views is not None else batch.clips_per_sample  # a training batch: a video's first clip
    images = batch.views[:, 0] if batch.views is not None else batch.images[::step]
    images = images[:n].cpu()
    labels = batch.labels[::step][:n].tolist()
    return (images if images.is_floating_point() else normalize(images, 1)), labels  # the loaders give uint8
