"""Samplers and DataLoader settings: sharding over ranks, resumable training order, seeded samples.

Training order and augmentation depend only on ``(seed, epoch, position in the epoch)``:

* :class:`ResumableSampler` shuffles with ``(seed, epoch)``, gives each rank its shard and yields
  :class:`SampleKey` s ``(index, epoch)``. The data sets seed each sample's augmentation from the
  key (:func:`sample_rng`), so the worker processes need no state of their own: the result is
  the same with 0 or N workers, persistent or not, whenever the iterator was created.
* :class:`~datamodules.datamodule.ShardedDataModule` saves the training position (epoch, batches
  done in it) in every checkpoint through Lightning's ``state_dict`` / ``load_state_dict`` hooks. A
  run resumed from a mid-epoch checkpoint gets the remaining batches of that epoch, in the same
  order, with the same augmentations, and the weights end bit-identical to an uninterrupted run.

Evaluation uses :class:`ShardSampler`: disjoint shards without padding, so summed metrics count
every sample once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import select
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from abswin.seeding import derive_seed

__all__ = [
    "ResumableSampler",
    "SampleKey",
    "ShardSampler",
    "check_full_batch",
    "make_loader",
    "sample_rng",
    "split_key",
    "start_worker",
    "split_global_batch",
]


class SampleKey(NamedTuple):
    """What the training sampler hands the data set: the sample and the epoch it is drawn in."""

    index: int
    epoch: int


@contextlib.contextmanager
def sample_rng(seed: int, key: SampleKey):
    """Within: the global CPU torch RNG seeded from ``(seed, epoch, index)`` only
    (:func:`~abswin.seeding.derive_seed`); the previous state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derive_seed(seed, key.epoch, key.index))
        yield


def split_key(key) -> tuple[int, SampleKey | None]:
    """``dataset[key]`` takes a plain index (evaluation, tools) or a :class:`SampleKey` (training)."""
    if isinstance(key, tuple):
        key = SampleKey(*key)
        return int(key.index), key
    return int(key), None


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` of ``n`` gets indices ``r, r+n, r+2n, ...`` in order.

    The shards are disjoint and cover the data set exactly once (no padding duplicates, unlike
    ``DistributedSampler``), so summed metrics count each sample once; shard sizes differ by at most
    one. ``num_replicas``/``rank`` default to the initialised process group (else 1/0)."""

    def __init__(self, data_source: Sequence | int, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (
            torch.distributed.get_world_size() if dist_on else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist_on else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.length = data_source if isinstance(data_source, int) else len(data_source)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def batches_per_epoch(num_samples: int, replicas: int, per_device: int, accumulation: int) -> int:
    """One device's batches in an epoch of full optimizer steps (global batch ``replicas x
    per_device x accumulation``): an epoch never ends in a short step."""
    return num_samples // (replicas * per_device * accumulation) * accumulation


class ResumableSampler(Sampler[SampleKey]):
    """Training sampler: a permutation seeded from ``(seed, epoch)``, cut to a multiple of the global
    batch ``num_replicas x batch_size x accumulation`` (full optimizer steps only: an epoch never ends
    in a short step, and it holds the same samples on any number of devices), rank ``r`` taking every
    ``num_replicas``-th index from ``r``.

    ``start(epoch, batches_done)`` makes the next iteration begin ``batches_done`` batches into
    ``epoch`` (a mid-epoch resume); later epochs start at their beginning. ``len()`` is always the
    whole epoch's shard, so the trainer's steps per epoch (and the lr schedule) do not change on a
    resume; the resumed epoch simply ends ``batches_done`` batches early.
    """

    def __init__(self, num_samples: int, num_replicas: int, rank: int, batch_size: int, seed: int,
                 accumulation: int = 1) -> None:
        self.num_samples = int(num_samples)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.batches_per_epoch = batches_per_epoch(self.num_samples, self.num_replicas, self.batch_size,
                                                   int(accumulation))
        self.epoch = 0
        self._skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch (after the first iterator already exists)."""
        if epoch != self.epoch:
            self.epoch, self._skip_batches = int(epoch), 0

    def start(self, epoch: int, batches_done: int) -> None:
        """Position the sampler ``batches_done`` batches into ``epoch`` (a finished epoch: the next)."""
        if batches_done >= self.batches_per_epoch:
            epoch, batches_done = epoch + 1, 0
        self.epoch, self._skip_batches = int(epoch), int(batches_done)

    def _shard(self) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)
        used = self.batches_per_epoch * self.num_replicas * self.batch_size
        return order[:used][self.rank::self.num_replicas].tolist()

    def __iter__(self) -> Iterator[SampleKey]:
        shard = self._shard()[self._skip_batches * self.batch_size:]
        self._skip_batches = 0  # a mid-epoch start applies to one iteration only
        return iter([SampleKey(i, self.epoch) for i in shard])

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size


def start_worker(worker_id: int, training_pid: int) -> None:
    """Seed ``random`` and numpy in a worker from its torch seed (which the loader derives from
    its generator, so the whole pipeline follows ``seed``/``seed_everything``), and end the worker
    when the training process ends (see :func:`exit_with`). Ctrl-C reaches every process of the
    terminal: a worker ignores it, so the training process can save before it stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    exit_with(training_pid)


def exit_with(pid: int) -> None:
    """End this process when process ``pid`` ends, however it ends. A worker started by a forkserver
    is the forkserver's child, and torch's watchdog only watches that parent; the forkserver in turn
    lives while any of its children holds its pipe, so after the training process is gone the two
    would wait on each other forever, each worker holding its memory."""
    def watch() -> None:
        try:
            with os.fdopen(os.pidfd_open(pid), "rb") as handle:  # readable once the process has ended
                select.select([handle], [], [])
        except (AttributeError, OSError):  # no pidfd (old kernel) or already gone: poll
            while _alive(pid):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def split_global_batch(trainer, batch_size: int) -> tuple[int, int, int, int]:
    """``(world_size, rank, per_device_batch, accumulation)`` for a GLOBAL ``batch_size`` split over
    devices and gradient accumulation (``trainer`` may be None: one process)."""
    world = int(getattr(trainer, "world_size", 1)) if trainer is not None else 1
    rank = int(getattr(trainer, "global_rank", 0)) if trainer is not None else 0
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1)) if trainer is not None else 1
    div = world * accumulate
    if batch_size % div:
        raise ValueError(f"data.batch_size={batch_size} (global) is not divisible by world_size "
                         f"{world} x accumulate_grad_batches {accumulate} = {div}")
    return world, rank, batch_size // div, accumulate


def check_full_batch(num_samples: int, batch_size: int) -> None:
    """Training drops incomplete optimizer steps: fail clearly when not one full global batch fits."""
    if num_samples < batch_size:
        raise ValueError(f"data.batch_size={batch_size} is larger than the {num_samples} training samples: "
                         f"no full batch (lower data.batch_size)")


def make_loader(dataset, batch_size: int, collate, num_workers: int, pin_memory: bool,
                persistent_workers: bool, sampler=None) -> DataLoader:
    """The DataLoader settings every data module shares (seeded workers, pinning only with CUDA).

    Workers start from a forkserver, not a fork of the training process: by then that process runs
    threads (gloo, OpenMP, decord after the readability probe), and a fork taken while one of them
    holds a lock leaves a worker deadlocked forever. Persistent workers start once per fit."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=functools.partial(start_worker, training_pid=os.getpid()),
        multiprocessing_context="forkserver" if num_workers > 0 else None,
    )
