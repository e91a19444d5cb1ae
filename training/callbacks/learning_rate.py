"""The learning rate of every optimizer step: Lightning's ``LearningRateMonitor``."""

from __future__ import annotations

from lightning.pytorch.callbacks import LearningRateMonitor

__all__ = ["LearningRateLogger"]


class LearningRateLogger(LearningRateMonitor):
    """Lightning's :class:`~lightning.pytorch.callbacks.LearningRateMonitor` (same arguments), but
    a run without a logger (``logger=none``) trains without it instead of failing to start.

    The metric names are Lightning's: the scheduler's name and one metric per parameter group.
    :class:`training.module_base.TrainingModule` names them ``train/lr/<group>``, a group per layer
    and weight decay (``layer00`` ... ``layerNN``, ``layerNN_no_wd``; :mod:`abswin.optim`): with
    layer-wise decay each layer has its own lr; the last layer's is the schedule's peak lr."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
