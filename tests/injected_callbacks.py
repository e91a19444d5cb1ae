"""Callbacks that tests add to a launched run of an entry point, to make a fault happen at one exact
point instead of hoping a random moment hits it (``+callbacks.NAME._target_=tests.injected_callbacks.CLASS``
and its arguments as ``+callbacks.NAME.ARG=VALUE``):

- :class:`SignalSelf`: a scheduler's signal at one boundary of an epoch;
- :class:`NaNGradientAt`: a diverging step;
- :class:`DiskFullAt`: a checkpoint write the storage refuses.

They are added after the shipped callbacks, so at a hook they share they run after
``PreemptionCheckpoint`` (a signal sent at ``train_batch_end`` is seen at the next boundary) and
before the checkpoint callbacks (Lightning runs those last)."""

from __future__ import annotations

import errno
import os
import signal

import lightning.pytorch as pl
import torch

POINTS = ("mid_batch_end", "last_batch_start", "last_batch_end", "train_epoch_end", "validation_start",
          "validation_end", "epoch_end_save")


class SignalSelf(pl.Callback):
    """Send ``signal`` to this process once, at ``point`` of training epoch ``epoch`` (rank ``rank``
    only); with ``group``, to its whole process group, loader workers included, as a terminal's
    Ctrl-C does."""

    def __init__(self, point: str, epoch: int = 0, rank: int = 0, signal_name: str = "SIGTERM",
                 group: bool = False) -> None:
        if point not in POINTS:
            raise ValueError(f"point={point!r}: one of {', '.join(POINTS)}")
        self.point, self.epoch, self.rank, self.group = point, epoch, rank, group
        self.signum = int(getattr(signal, signal_name))
        self.sent = False

    def _send(self, trainer, point: str) -> None:
        if self.sent or point != self.point or trainer.current_epoch != self.epoch or trainer.sanity_checking:
            return
        if trainer.global_rank == self.rank:
            self.sent = True
            print(f"signal_self: {signal.Signals(self.signum).name} at {point}, step {trainer.global_step}",
                  flush=True)
            if self.group:
                os.killpg(os.getpgrp(), self.signum)
            else:
                os.kill(os.getpid(), self.signum)

    @staticmethod
    def _last(trainer, batch_idx: int) -> bool:
        return batch_idx + 1 == trainer.num_training_batches

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._last(trainer, batch_idx):
            self._send(trainer, "last_batch_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._send(trainer, "last_batch_end" if self._last(trainer, batch_idx) else
                   "mid_batch_end" if batch_idx == 1 else "")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._send(trainer, "train_epoch_end")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._send(trainer, "validation_start")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._send(trainer, "validation_end")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step == trainer.num_training_batches * (self.epoch + 1):  # the epoch-end save
            self._send(trainer, "epoch_end_save")


class NaNGradientAt(pl.Callback):
    """Every gradient NaN at the given global ``steps``, as a diverging step makes them."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step in self.steps:
            for p in pl_module.parameters():
                p.grad = torch.full_like(p, float("nan"))


class DiskFullAt(pl.Callback):
    """The checkpoint written at global ``step`` fails as on a full disk (ENOSPC)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step == self.step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checkpoints/last.ckpt")
