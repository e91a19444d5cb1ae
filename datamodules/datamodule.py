"""The base of the image and video data modules: :class:`ShardedDataModule`.

It owns what both need: the settings every data config gives (size, batch, workers, training
augmentation, classes, seed), the GLOBAL batch split over devices and accumulation, the resumable
training loader and the sharded evaluation loaders (:mod:`datamodules.loading`), the training
position in checkpoints, the splits' readability probe and the count of skipped files. A subclass
supplies its index (:meth:`~ShardedDataModule._read_classes`, :meth:`~ShardedDataModule._dataset`,
:meth:`~ShardedDataModule._split_exists`), its decoding (its data set) and its collate functions.

The constructors take plain Python (``hydra.utils.instantiate(..., _convert_="all")``); every
recipe number has its only home in the data config (``conf/data/*.yaml``), so they have no
defaults here. Only what the configs never set has one (split names, ``pin_memory``,
``persistent_workers``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from abswin.batch import Batch
from abswin.seeding import derive_seed
from .files import FileDataset, check_readable
from .loading import (ResumableSampler, ShardSampler, batches_per_epoch, check_full_batch, make_loader,
                      split_global_batch)
from .on_device import to_model_input
from .transforms import randaug_settings, train_transform

log = logging.getLogger("datamodules")

__all__ = ["MODES", "ShardedDataModule", "check_same_classes"]

MODES = ("finetune", "pretrain")
TRAIN_SUBSET_TAG = 0x7F2AC710  # derive_seed(seed, TRAIN_SUBSET_TAG): the train_fraction subset's stream


def batches_done(trainer) -> int:
    """Training batches done in the current epoch, the one being finished included. Lightning's
    private API (the one use in the data modules, which do not import training/): the count is kept
    by ``trainer.fit_loop.epoch_loop.batch_progress``, attributes of private classes (``_FitLoop``,
    ``_TrainingEpochLoop``, ``_BatchProgress``); no public Trainer property gives it.
    tests/test_lightning_private.py checks it for every Lightning release."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def mode_scale(scale: Sequence[float] | Mapping[str, Sequence[float]], mode: str) -> tuple[float, float]:
    """The RandomResizedCrop area range: ``scale`` itself, or ``scale[mode]`` for a mapping
    ``{finetune: [lo, hi], pretrain: [lo, hi]}``."""
    if isinstance(scale, Mapping):
        if mode not in scale:
            raise ValueError(f"data.scale has no entry for mode {mode!r}: {dict(scale)}")
        scale = scale[mode]
    lo, hi = (float(s) for s in scale)
    return lo, hi


class ShardedDataModule(pl.LightningDataModule):
    """Files of one data set as training, validation and test loaders.

    Args (every data config sets them: no defaults):
        root: data set folder.
        img_size: output size (square).
        batch_size: GLOBAL batch (images, or videos); per device = ``batch_size // (world_size *
            accumulate_grad_batches)`` (from the attached trainer, in :meth:`setup`); must divide exactly.
        num_workers: loader processes per rank.
        mode: ``"finetune"`` (RandAugment + RandomErasing, on the device) or ``"pretrain"`` (MAE: crop + flip only,
            the val split optional).
        crop_pct: evaluation resize of the short side to ``int(img_size / crop_pct)``.
        scale: RandomResizedCrop area range, or ``{finetune: range, pretrain: range}``.
        ratio: RandomResizedCrop aspect range.
        hflip: horizontal flip probability.
        randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob, randaug_num_bins:
            RandAugment on the device (:mod:`datamodules.randaugment`; finetune only; ``randaug_mstd=None`` off).
        random_erasing: RandomErasing probability (finetune only).
        class_index: None, or a JSON ``{name: index}`` / text file (one name per line).
        num_classes: None (from the class index or the train split), or the model's class count
            (every label must be below it).
        seed: loader seed: the training order and each sample's augmentation follow ``(seed, epoch,
            index)``; None: drawn from the global torch RNG (``seed_everything``).
    Keyword-only (no config sets them): ``train_split``, ``val_split``, ``test_split`` (None: test
    on the val split), ``pin_memory`` (only when CUDA is available), ``persistent_workers`` (None:
    ``num_workers > 0``).
    """

    root_hint = "set data.root=/path/to/data"
    collate_train: Callable
    collate_eval: Callable

    def __init__(self, root: str | None, img_size: int, batch_size: int, num_workers: int, mode: str,
                 crop_pct: float, scale: Sequence[float] | Mapping[str, Sequence[float]], ratio: Sequence[float],
                 hflip: float, randaug_num_ops: int, randaug_magnitude: float, randaug_mstd: float | None,
                 randaug_op_prob: float, randaug_num_bins: int, random_erasing: float, class_index: str | None,
                 num_classes: int | None, seed: int | None, train_fraction: float, *, train_split: str = "train",
                 val_split: str | None = "val", test_split: str | None = None, pin_memory: bool = True,
                 persistent_workers: bool | None = None) -> None:
        super().__init__()
        try:
            fraction = float(train_fraction)
        except (TypeError, ValueError):
            fraction = float("nan")
        if isinstance(train_fraction, bool) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"data.train_fraction={train_fraction} must be a number in (0, 1], e.g. 0.1 for 10%")
        if mode not in MODES:
            raise ValueError(f"mode must be 'finetune' or 'pretrain', got {mode!r}")
        if root is None:
            raise FileNotFoundError(f"data root not set ({self.root_hint})")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root not found: {self.root} ({self.root_hint})")
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.mode = mode
        self.crop_pct = float(crop_pct)
        self.scale = mode_scale(scale, mode)
        self.ratio = tuple(float(r) for r in ratio)
        self.hflip = float(hflip)
        self.randaug = randaug_settings(randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob,
                                        randaug_num_bins) if mode == "finetune" else None  # MAE: crop and flip
        self.random_erasing = float(random_erasing)
        self.class_index = class_index
        self.seed = seed
        self.train_fraction = float(train_fraction)
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = self.num_workers > 0 if persistent_workers is None else bool(persistent_workers)

        self.class_to_idx, implied = self._read_classes()
        if num_classes is not None:
            self.num_classes = int(num_classes)
        elif self.class_to_idx is not None:
            self.num_classes = max(self.class_to_idx.values()) + 1
        else:
            self.num_classes = int(implied)
        if self.class_to_idx is None:
            self.classes = [str(i) for i in range(self.num_classes)]
        else:
            self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)
            for name, index in self.class_to_idx.items():
                if not 0 <= index < self.num_classes:
                    raise ValueError(f"class {name!r} has index {index}, out of range [0, {self.num_classes}) "
                                     f"(data.num_classes={num_classes}, data.class_index={class_index})")

        self.per_device_batch_size = self.batch_size
        self.world_size, self.rank = 1, 0
        self.train_set: FileDataset | None = None
        self.val_set: FileDataset | None = None
        self.test_set: FileDataset | None = None
        self._train_sampler: ResumableSampler | None = None
        self._resume_position: dict | None = None

    # ------------------------------------------------------------------ what a subclass gives
    def _read_classes(self) -> tuple[dict[str, int] | None, int | None]:
        """Read the train split's index (an error now, not at setup); return the class mapping
        (None: integer labels used as they are) and, without a mapping, the class count they imply."""
        raise NotImplementedError

    def _dataset(self, split: str, train: bool) -> FileDataset:
        """The split's data set (``train``: with the training transform)."""
        raise NotImplementedError

    def _split_exists(self, split: str) -> bool:
        raise NotImplementedError

    def _eval_batch_size(self) -> int:
        return self.per_device_batch_size

    def evaluation_set(self, split: str) -> FileDataset | None:
        """Split ``"train"`` or ``"val"`` with the evaluation transform (None: no such split): what
        a k-NN monitor embeds. Its loader collates with :attr:`collate_eval`."""
        name = {"train": self.train_split, "val": self.val_split}[split]
        if name is None or not self._split_exists(name):
            return None
        return self._dataset(name, train=False)

    def train_transform(self):
        """The workers' crop and flip (RandAugment and erasing run on the device: :meth:`model_input`)."""
        return train_transform(self.img_size, self.scale, self.ratio, self.hflip)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Lightning's hook, on the device: the loader's uint8 batch normalised, and RandAugmented and
        erased when training a finetuning run (:mod:`datamodules.on_device`)."""
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        return self.model_input(batch, trainer.current_epoch if training else None)

    def model_input(self, batch: Batch, epoch: int | None = None) -> Batch:
        """A loader's batch as the model takes it; ``epoch``: a training batch of that epoch (RandAugment
        and random erasing, finetuning only). For code that reads the loaders without a Trainer."""
        if self.mode != "finetune":
            return to_model_input(batch, seed=self._seed(), epoch=epoch)
        return to_model_input(batch, self.random_erasing, self._seed(), epoch, self.randaug)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Split the batch over the trainer's devices; build (and probe) the splits once."""
        self.world_size, self.rank, self.per_device_batch_size, self.accumulation = split_global_batch(
            getattr(self, "trainer", None), self.batch_size)
        if self.train_set is None:
            self.train_set = self._probed(self.train_split, train=True)
        if self.val_set is None and self.val_split is not None:
            if self.mode == "pretrain" and not self._split_exists(self.val_split):
                log.info("no %s split in %s: pretraining without validation", self.val_split, self.root)
            else:
                self.val_set = self._probed(self.val_split, train=False)
        if self.test_set is None and self.test_split is not None and self._split_exists(self.test_split):
            self.test_set = self._probed(self.test_split, train=False)

    def _probed(self, split: str, train: bool) -> FileDataset:
        """The split's data set, after a probe that some of its files decode (:func:`check_readable`)."""
        dataset = self._dataset(split, train)
        if train and self.train_fraction < 1.0:
            self._keep_fraction(dataset)
        check_readable(dataset)
        return dataset

    def _seed(self) -> int:
        """``seed``, or with ``seed=None`` one from torch's current seed (read at each call: the
        training step reseeds torch)."""
        return int(self.seed) if self.seed is not None else int(torch.initial_seed() % 2**31)

    def _keep_fraction(self, dataset: FileDataset) -> None:
        """Keep ``train_fraction`` of each class of the training split, in place (see the class doc);
        the kept samples stay in their original order."""
        seed = self._seed()
        rng = np.random.default_rng(derive_seed(seed, TRAIN_SUBSET_TAG))
        keep = []
        for label in np.unique(dataset.labels):
            members = np.flatnonzero(dataset.labels == label)
            k = max(1, int(round(self.train_fraction * len(members))))
            keep.append(rng.permutation(members)[:k])
        keep = np.sort(np.concatenate(keep))
        log.info("training on %d of %d %s samples (data.train_fraction=%g, stratified by class)", len(keep),
                 len(dataset), self.train_split, self.train_fraction)
        dataset.paths, dataset.labels = dataset.paths[keep], dataset.labels[keep]

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        """Full batches only, in the resumable order; the data set seeds each sample's augmentation
        from ``(seed, epoch, index)``."""
        if self.train_set is None:
            self.setup("fit")
        dataset = self.train_set
        check_full_batch(len(dataset), self.batch_size)
        dataset.seed = self._seed()
        sampler = ResumableSampler(len(dataset), self.world_size, self.rank, self.per_device_batch_size,
                                   dataset.seed, self.accumulation)
        if self._resume_position is not None:
            sampler.start(*self._resume_at(self._resume_position, len(dataset)))
            log.info("training data resumes at epoch %d, batch %d", sampler.epoch, sampler._skip_batches)
            self._resume_position = None
        self._train_sampler = sampler
        return make_loader(dataset, self.per_device_batch_size, self.collate_train, self.num_workers,
                           self.pin_memory, self.persistent_workers, sampler=sampler)

    def _eval_loader(self, dataset: FileDataset | None):
        if dataset is None:
            return []
        return make_loader(dataset, self._eval_batch_size(), self.collate_eval, self.num_workers,
                           self.pin_memory, self.persistent_workers,
                           sampler=ShardSampler(dataset, self.world_size, self.rank))

    def val_dataloader(self):
        if self.train_set is None:
            self.setup("validate")
        return self._eval_loader(self.val_set)

    def test_dataloader(self):
        """The test split when it exists, else the val split."""
        if self.train_set is None:
            self.setup("test")
        return self._eval_loader(self.test_set if self.test_set is not None else self.val_set)

    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped in this process (all of them with ``num_workers=0``; with
        workers each worker counts and logs its own)."""
        return sum(d.num_skipped for d in (self.train_set, self.val_set, self.test_set) if d is not None)

    # ------------------------------------------------------------------ checkpoint state
    def _batch_split(self) -> list[int]:
        return [self.world_size, self.per_device_batch_size, self.accumulation]

    def _resume_at(self, position: dict, num_samples: int) -> tuple[int, int]:
        """``(epoch, batches_done)`` to continue from. A mid-epoch position counts its own split's
        batches (and so does Lightning's loop): continuing it with another split (devices,
        per_device_batch, accumulation) would skip or repeat samples, so that is refused; an
        epoch-end position continues with any split."""
        split = list(position.get("split") or self._batch_split())
        epoch, done = position["epoch"], position["batches_done"]
        if done >= batches_per_epoch(num_samples, *split):
            return epoch + 1, 0
        if split == self._batch_split() or done == 0:
            return epoch, done
        raise ValueError(f"the checkpoint was written mid-epoch with {split[0]} device(s) x {split[1]} per device "
                         f"x accumulation {split[2]}; this run splits the batch as {self._batch_split()[0]} x "
                         f"{self._batch_split()[1]} x {self._batch_split()[2]}: resume with the same devices and "
                         f"per_device_batch={split[1]}, or from an epoch-end checkpoint")

    def state_dict(self) -> dict:
        """The training position when the checkpoint is written: the epoch, how many of its batches
        were trained (the batch being finished counts: checkpoints are written after it) and the
        batch split those batches were counted in."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._train_sampler is None:
            return {}
        done = batches_done(trainer)
        return {"train_position": {"epoch": int(trainer.current_epoch), "batches_done": int(done),
                                   "split": self._batch_split()},
                "classes": list(self.classes)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_position = state_dict.get("train_position")

    def check_resume(self, path: str) -> None:
        """Refuse, before the run starts, a training checkpoint this run cannot continue exactly: one
        trained on other classes (a class folder renamed, removed or added would permute the labels)
        or written mid-epoch in another batch split. Lightning stores this state under the class name
        (read without loading the weights: memory-mapped)."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state = checkpoint.get(type(self).__qualname__) or {}
        check_same_classes(state.get("classes"), self.classes, f"data.root={self.root}")
        if state.get("train_position") is not None and self.train_set is not None:
            self._resume_at(state["train_position"], len(self.train_set))


def check_same_classes(trained: list[str] | None, here: list[str], where: str) -> None:
    """A one-line error naming the first class that differs between a checkpoint's class list (in
    label order; None: not recorded) and the data's."""
    if trained is None or list(trained) == list(here):
        return
    first = next((i for i, (a, b) in enumerate(zip(trained, here)) if a != b), min(len(trained), len(here)))
    was = repr(trained[first]) if first < len(trained) else "no class"
    now = repr(here[first]) if first < len(here) else "no class"
    raise ValueError(f"the checkpoint was trained on {len(trained)} classes and {where} has {len(here)}: label "
                     f"{first} is {was} in the checkpoint and {now} here (a class folder renamed, added or removed "
                     f"would permute the labels)")
