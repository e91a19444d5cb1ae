"""When a run writes ``last.ckpt``: every epoch, every N steps or every N minutes, one override each.

Lightning's ``ModelCheckpoint`` takes ``every_n_epochs``, ``every_n_train_steps`` and
``train_time_interval`` (a ``timedelta``, which a command line cannot give), and refuses more than
one of them. :class:`RunCheckpoint` takes ``every_n_minutes`` instead of the ``timedelta``; the
config leaves all three unset, which means every epoch, so one override picks another interval:
``callbacks.last.every_n_train_steps=1000`` or ``callbacks.last.every_n_minutes=30``. With a step
or time interval the final state is also written when training ends.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from ..lightning_private import accumulating, save_checkpoint_now

__all__ = ["RunCheckpoint"]


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``every_n_minutes``; at most one interval may be set (none: every
    epoch). Other arguments as ``ModelCheckpoint``."""

    def __init__(self, every_n_minutes: float | None = None, **kwargs: Any) -> None:
        if every_n_minutes is not None:
            if every_n_minutes <= 0:
                raise ValueError(f"every_n_minutes={every_n_minutes} must be positive")
            kwargs["train_time_interval"] = timedelta(minutes=float(every_n_minutes))
        names = {"every_n_epochs": "every_n_epochs", "every_n_train_steps": "every_n_train_steps",
                 "train_time_interval": "every_n_minutes"}
        chosen = [f"{names[k]}={every_n_minutes if k == 'train_time_interval' else kwargs[k]}"
                  for k in names if kwargs.get(k)]
        if len(chosen) > 1:
            raise ValueError(f"a checkpoint takes one interval, got {' and '.join(chosen)} (set the others to null)")
        self._at_end = bool(kwargs.get("every_n_train_steps") or kwargs.get("train_time_interval"))
        super().__init__(**kwargs)

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        """Never between the batches of one optimizer step: their gradients are in no checkpoint, so a
        time-based save there would not resume exactly (every rank decides the same)."""
        if accumulating(trainer):
            return
        super().on_train_batch_end(trainer, *args, **kwargs)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self._at_end:
            save_checkpoint_now(self, trainer)
