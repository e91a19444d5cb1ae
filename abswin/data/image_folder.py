"""ImageNet-style folders (``ROOT/SPLIT/CLASS/*.JPEG``) as a LightningDataModule.

Training batches are ``(images, labels)``: float32 ``[B, 3, H, W]`` normalised with the ImageNet
mean/std, int64 ``[B]``; evaluation batches add ``missing`` (int64 ``[M]``: the data-set indices of
the batch's unreadable images, which ``val/missing`` counts). ``batch_size`` is GLOBAL; each rank
loads its own shard (the trainer runs with ``use_distributed_sampler: false``): train through the
resumable sampler, val/test through :class:`~abswin.data.loading.ShardSampler` (see
:mod:`abswin.data.loading`). The data rules (README "Data") are checked when the index is built.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .loading import SampleKey, ShardedDataModule, sample_rng, split_key
from .transforms import IMAGENET_MEAN, IMAGENET_STD, decode, eval_transform, mode_train_transform, randaug_settings

log = logging.getLogger("abswin.data")

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ROOT_HINT = "set data.root=/path/to/imagenet"


# ---------------------------------------------------------------------------- classes and files
def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a symlinked class folder is a folder
    except OSError:  # a symlink loop
        return False


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if _is_dir(e) and not e.name.startswith("."))


def _files(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Sorted names ending in ``extensions`` that are not folders. Broken links and symlink loops
    are listed too: reading them fails, and that is logged and counted, never silently dropped."""
    return sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(extensions) and not _is_dir(e))


def list_split(split_dir: Path) -> dict[str, list[str]]:
    """Class folder -> its image file names, for the class folders of ``split_dir`` that hold at
    least one image; empty ones are logged (one line) and are not classes. One-line
    FileNotFoundError when no class folder holds an image."""
    listing = {name: _files(split_dir / name, IMG_EXTENSIONS) for name in _class_dirs(split_dir)}
    empty = [name for name, files in listing.items() if not files]
    if empty:
        log.warning("%d class folder(s) in %s hold no images and are not classes: %s",
                    len(empty), split_dir, ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else ""))
    listing = {name: files for name, files in listing.items() if files}
    if not listing:
        raise FileNotFoundError(f"no images in {split_dir} ({ROOT_HINT} with CLASS/*.JPEG files)")
    return listing


PROBE_FILES = 16  # files per split decoded at setup: a split none of which decodes is an error


def check_readable(dataset, where: str | os.PathLike) -> None:
    """Decode up to :data:`PROBE_FILES` files spread evenly over ``dataset`` (its ``probe(i)``
    raises for an unreadable file), stopping at the first that decodes. One-line ValueError naming
    ``where`` (the split's folder or CSV) when none does."""
    n = len(dataset)
    probed = np.unique(np.linspace(0, n - 1, min(PROBE_FILES, n)).round().astype(int))
    for i in probed:
        try:
            dataset.probe(int(i))
            return
        except Exception as e:  # noqa: BLE001 - any failure: try the next one
            error = f"{dataset.path(int(i))}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    which = f"all {n} files" if len(probed) == n else f"all {len(probed)} files probed (spread over {n})"
    raise ValueError(f"{which} of {where} are unreadable, e.g. {error}")


def load_class_index(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, int]:
    """Class folder name -> index from a JSON object ``{folder: index}`` or a text file with one
    class folder per line (index = line number; blank lines and ``#`` comments skipped). A relative
    ``path`` that does not exist is looked up under ``root``."""
    p = Path(path).expanduser()
    if not p.exists() and root is not None and not p.is_absolute():
        p = Path(root) / p
    if not p.is_file():
        raise FileNotFoundError(f"class index file not found: {p} (set data.class_index=/path/to/file)")
    text = p.read_text()
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return {str(k): int(v) for k, v in json.loads(text).items()}
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return {name: i for i, name in enumerate(names)}


def check_split_dir(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` as a Path; a one-line FileNotFoundError when the root or the split folder is
    missing."""
    root_p = Path(root).expanduser()
    if not root_p.is_dir():
        raise FileNotFoundError(f"data root not found: {root_p} ({ROOT_HINT})")
    split_dir = root_p / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir} ({ROOT_HINT} with {split}/CLASS/*.JPEG)")
    return split_dir


class ImageFolderDataset(Dataset):
    """Images in ``split_dir/CLASS/*`` with labels from ``class_to_idx``.

    File paths are kept in one numpy bytes array (no per-sample Python objects, so forked workers
    do not copy them on access). An image that cannot be decoded is logged (one line, on
    ``abswin.data``), counted in :attr:`num_skipped` (per process: per worker with workers, the
    caller's count with ``num_workers=0``) and returned as ``(None, label, index)``:
    :func:`collate_skip_none` drops it, :func:`collate_eval` reports it in ``missing``.
    ``listing``: :func:`list_split` of ``split_dir`` when already done.
    """

    def __init__(self, split_dir: str | os.PathLike, class_to_idx: dict[str, int],
                 transform: Callable | None = None, listing: dict[str, list[str]] | None = None) -> None:
        self.split_dir = Path(split_dir)
        self.class_to_idx = dict(class_to_idx)
        self.transform = transform
        if listing is None:
            listing = list_split(self.split_dir)
        paths: list[bytes] = []
        labels: list[int] = []
        ignored = sorted(set(listing) - set(self.class_to_idx))
        if ignored:
            log.warning("%d class folder(s) in %s are not in the class index and are ignored: %s",
                        len(ignored), self.split_dir, ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
        for name in sorted(set(listing) & set(self.class_to_idx)):
            paths += [f"{name}/{f}".encode() for f in listing[name]]
            labels += [self.class_to_idx[name]] * len(listing[name])
        if not paths:
            raise FileNotFoundError(f"no images of the class index's classes in {self.split_dir} ({ROOT_HINT})")
        self.paths = np.array(paths)
        self.labels = np.array(labels, dtype=np.int64)
        self.num_skipped = 0
        self.seed: int | None = None  # set by the training loader: augmentation from (seed, epoch, index)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return self.split_dir / self.paths[index].decode()

    def probe(self, index: int) -> torch.Tensor:
        """The decoded image (uint8 ``[3, H, W]``); raises when the file is unreadable."""
        with open(self.path(index), "rb") as f:
            return decode(f.read())

    def __getitem__(self, key: int | SampleKey):
        index, sample = split_key(key)
        label = int(self.labels[index])
        try:
            img = self.probe(index)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            self.num_skipped += 1
            msg = " ".join(str(e).split())
            log.warning("skipping unreadable image %s (%s: %s)", self.path(index), type(e).__name__, msg)
            return None, label, index
        if self.transform is not None:
            if sample is None or self.seed is None:
                img = self.transform(img)
            else:  # the same whatever the worker count, and across resumes
                with sample_rng(self.seed, sample):
                    img = self.transform(img)
        return img, label


def _stack(ok: list) -> tuple[torch.Tensor, torch.Tensor]:
    if not ok:  # every image of the batch was unreadable (practically never at real batch sizes)
        return torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64)
    return torch.stack([b[0] for b in ok]), torch.tensor([b[1] for b in ok], dtype=torch.int64)


def collate_skip_none(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Training: ``(images, labels)`` of the readable images (an all-unreadable batch: empty
    ``images[0, 3, 0, 0]``, ``labels[0]``)."""
    return _stack([b for b in batch if b[0] is not None])


def collate_eval(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evaluation: ``(images, labels, missing)``; ``missing`` (int64 ``[M]``) holds the data-set
    indices of the batch's unreadable images: reported (``val/missing``), never replaced."""
    missing = torch.tensor([b[2] for b in batch if b[0] is None], dtype=torch.int64)
    return *_stack([b for b in batch if b[0] is not None]), missing


# ---------------------------------------------------------------------------- the data module
class ImageDataModule(ShardedDataModule):
    """ImageNet-style folders ``root/{train_split,val_split}/CLASS/*``.

    Args:
        root: data set folder.
        img_size: output size (square).
        batch_size: GLOBAL batch; per device = ``batch_size // (world_size * accumulate_grad_batches)``
            (from the attached trainer, in :meth:`setup`); must divide exactly.
        num_workers: loader processes per rank.
        mode: ``"finetune"`` (RandAugment + RandomErasing) or ``"pretrain"`` (MAE: crop + flip only,
            the val split optional).
        crop_pct: eval resize to ``int(img_size / crop_pct)`` then center crop.
        scale: RandomResizedCrop area range; None: (0.08, 1) finetune, (0.2, 1) pretrain.
        ratio: RandomResizedCrop aspect range.
        hflip: horizontal flip probability.
        randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob, randaug_num_bins:
            :class:`~abswin.data.transforms.RandAugmentMstd` (finetune only; ``randaug_mstd=None`` off).
        random_erasing: RandomErasing probability (finetune only).
        train_split, val_split: split folder names (``test_dataloader`` uses ``val_split``).
        class_index: optional JSON ``{folder: index}`` or text file (one folder per line).
        pin_memory (only when CUDA is available), persistent_workers (None: ``num_workers > 0``).
        seed: loader seed: shuffling and the workers' augmentation seeds (offset by the rank; the
            DistributedSampler uses it as is, 0 when None); None: drawn from the global torch RNG
            (``seed_everything``). With ``num_workers=0`` augmentation uses the global torch RNG.
    """

    def __init__(
        self,
        root: str | None,
        img_size: int = 224,
        batch_size: int = 1024,
        num_workers: int = 8,
        mode: str = "finetune",
        crop_pct: float = 0.875,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        randaug_num_ops: int = 2,
        randaug_magnitude: float = 9,
        randaug_mstd: float | None = 0.5,
        randaug_op_prob: float = 0.5,
        randaug_num_bins: int = 11,
        random_erasing: float = 0.25,
        train_split: str = "train",
        val_split: str | None = "val",
        class_index: str | None = None,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if mode not in ("finetune", "pretrain"):
            raise ValueError(f"mode must be 'finetune' or 'pretrain', got {mode!r}")
        if root is None:
            raise FileNotFoundError(f"data root not set ({ROOT_HINT})")
        self.root = Path(root).expanduser()
        self.img_size = int(img_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.mode = mode
        self.crop_pct = float(crop_pct)
        if scale is None:
            scale = (0.2, 1.0) if mode == "pretrain" else (0.08, 1.0)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.hflip = float(hflip)
        self.randaug = randaug_settings(randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob,
                                        randaug_num_bins)
        self.random_erasing = float(random_erasing)
        self.train_split = train_split
        self.val_split = val_split
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = self.num_workers > 0 if persistent_workers is None else bool(persistent_workers)
        self.seed = seed

        self._train_listing = list_split(check_split_dir(self.root, train_split))  # until setup uses it
        if class_index is not None:
            self.class_to_idx = load_class_index(class_index, self.root)
        else:  # the class folders that hold images
            self.class_to_idx = {name: i for i, name in enumerate(sorted(self._train_listing))}
        self.num_classes = max(self.class_to_idx.values()) + 1
        self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)

        self.train_set: ImageFolderDataset | None = None
        self.val_set: ImageFolderDataset | None = None
        self.per_device_batch_size = self.batch_size

    # ------------------------------------------------------------------ transforms
    def train_transform(self):
        return mode_train_transform(self.mode, self.img_size, self.scale, self.ratio, self.hflip, self.randaug,
                                    self.random_erasing)

    def eval_transform(self):
        return eval_transform(self.img_size, self.crop_pct, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        self._split_batch()
        if self.train_set is None:
            self.train_set = self._split_set(self.train_split, self.train_transform(), self._train_listing)
            self._train_listing = None
        if self.val_set is None and self.val_split is not None:
            val_dir = self.root / self.val_split
            if self.mode == "pretrain" and not val_dir.is_dir():
                log.info("no %s split at %s: pretraining without validation", self.val_split, val_dir)
            else:
                self.val_set = self._split_set(self.val_split, self.eval_transform())

    def _split_set(self, split: str, transform, listing=None) -> ImageFolderDataset:
        """The split's data set, after a probe that some of its files decode (:func:`check_readable`)."""
        dataset = ImageFolderDataset(check_split_dir(self.root, split), self.class_to_idx, transform, listing)
        check_readable(dataset, dataset.split_dir)
        return dataset

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._train_loader(collate_skip_none)

    def val_dataloader(self):
        if self.train_set is None:
            self.setup("validate")
        return self._eval_loader(self.val_set, self.per_device_batch_size, collate_eval)

    def test_dataloader(self):
        return self.val_dataloader()

    @property
    def num_skipped(self) -> int:
        """Unreadable images skipped in this process (all of them with ``num_workers=0``; with
        workers each worker counts and logs its own)."""
        return sum(d.num_skipped for d in (self.train_set, self.val_set) if d is not None)
