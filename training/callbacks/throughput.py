"""Training throughput: ``train/throughput``, samples per second over the last logging window."""

from __future__ import annotations

import collections
import time

import lightning.pytorch as pl

__all__ = ["ThroughputLogger"]


class ThroughputLogger(pl.Callback):
    """Logs ``train/throughput``: training samples per second, all ranks together, over the last
    ``log_every_n_steps`` batches (data loading included), and ``train/data_wait``: the share of that
    time spent between one step's end and the next one's start (getting the next batch from the
    loader and onto the device; rank 0's). A GPU fed fast enough keeps it near 0. A sample is an image, or a video however
    many clips it gives (``Batch.num_samples``). No CUDA synchronisation: over a window the lag
    between host and device averages out, and the steps do not wait for it.

    Lightning's ``ThroughputMonitor`` synchronises the device after every batch and logs under
    its own names (``train|samples_per_sec``, ...); this one keeps the run's metric."""

    def __init__(self) -> None:
        self._window: collections.deque = collections.deque(maxlen=1)
        self._last: float | None = None  # when the previous step ended
        self._waited = 0.0  # from then until this step started

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None
        self._window = collections.deque(maxlen=max(1, trainer.log_every_n_steps))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._waited = 0.0 if self._last is None else now - self._last
        if self._last is None:
            self._last = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._window.append((batch.num_samples * trainer.world_size, now - self._last, self._waited))
        self._last = now
        samples = sum(n for n, _, _ in self._window)
        seconds = sum(t for _, t, _ in self._window)
        if seconds > 0:
            batch_size = max(1, batch.num_samples)
            pl_module.log("train/throughput", samples / seconds, on_step=True, on_epoch=False, batch_size=batch_size)
            pl_module.log("train/data_wait", sum(w for _, _, w in self._window) / seconds, on_step=True,
                          on_epoch=False, batch_size=batch_size)
