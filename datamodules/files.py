"""What the image and video data sets share: folder listing, class index files, and
:class:`FileDataset`, the base that reads one file per sample, skips and counts unreadable files,
seeds each training sample's randomness from its :class:`~datamodules.loading.SampleKey`, and
probes a split when it is built (:func:`check_readable`).

A data set item is ``(x, label, index)``: ``x`` the sample's tensor, or None when its file could not
be decoded (logged once, counted in ``num_skipped``); the collate functions (:mod:`datamodules.collate`)
drop such items from the inputs and report their indices in ``Batch.missing``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .loading import SampleKey, sample_rng, split_key

log = logging.getLogger("datamodules")

__all__ = ["FileDataset", "PROBE_FILES", "check_readable", "class_dirs", "list_files", "load_class_index"]

PROBE_FILES = 16  # files per split decoded at setup: a split none of which decodes is an error


# ---------------------------------------------------------------------------- folders
def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a symlinked class folder is a folder
    except OSError:  # a symlink loop
        return False


def class_dirs(split_dir: Path) -> list[str]:
    """The sorted names of the (non-hidden) folders in ``split_dir``: the candidate classes."""
    return sorted(e.name for e in os.scandir(split_dir) if _is_dir(e) and not e.name.startswith("."))


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Sorted names ending in ``extensions`` that are not folders. Broken links and symlink loops
    are listed too: reading them fails, and that is logged and counted, never silently dropped."""
    return sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(extensions) and not _is_dir(e))


def load_class_index(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, int]:
    """Class name -> index from a JSON object ``{name: index}`` or a text file with one class name
    per line (index = line number; blank lines and ``#`` comments skipped). A relative ``path``
    that does not exist is looked up under ``root``."""
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


# ---------------------------------------------------------------------------- data sets
class FileDataset(Dataset):
    """Files ``root / paths[i]`` (or ``paths[i]`` when absolute) with class ``labels[i]``.

    Subclasses give :meth:`read` (decode one file: raises when it is unreadable; for a training
    sample it runs with the sample's seeded RNG) and :meth:`process` (the decoded file to the
    sample's tensor: augmentation or evaluation views). ``source`` names the split (its folder or
    index file) in errors. File paths are kept in one numpy bytes array (no per-sample Python
    objects, so forked workers do not copy them on access). ``num_skipped`` counts this process's
    unreadable files (per worker with workers, the caller's with ``num_workers=0``).
    """

    kind = "file"  # "image" or "video": in log lines

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], labels: Sequence[int], *, train: bool,
                 source: str | os.PathLike) -> None:
        self.root = Path(root)
        self.paths = np.array([p.encode() for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.train = bool(train)
        self.source = Path(source)
        self.num_skipped = 0
        self.seed: int | None = None  # set by the training loader: randomness from (seed, epoch, index)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        p = Path(self.paths[index].decode())
        return p if p.is_absolute() else self.root / p

    def read(self, index: int):
        raise NotImplementedError

    def process(self, raw) -> torch.Tensor:
        raise NotImplementedError

    def probe(self, index: int):
        """Decode file ``index`` (raises when it is unreadable): :func:`check_readable`."""
        return self.read(index)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor | None, int, int]:
        index, sample = split_key(key)
        label = int(self.labels[index])
        seeded = self.train and sample is not None and self.seed is not None
        # a training sample's randomness: the same whatever the worker count, and across resumes
        with sample_rng(self.seed, sample) if seeded else contextlib.nullcontext():
            try:
                raw = self.read(index)
            except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
                self._skip(index, e)
                return None, label, index
            return self.process(raw), label, index

    def _skip(self, index: int, e: Exception) -> None:
        self.num_skipped += 1
        log.warning("%s unreadable %s %s (%s: %s)", "skipping" if self.train else "MISSING in evaluation:",
                    self.kind, self.path(index), type(e).__name__, " ".join(str(e).split()))


def check_readable(dataset: FileDataset) -> None:
    """Decode up to :data:`PROBE_FILES` files spread evenly over ``dataset``, stopping at the first
    that decodes. One-line ValueError naming the split (``dataset.source``) when none does."""
    n = len(dataset)
    probed = np.unique(np.linspace(0, n - 1, min(PROBE_FILES, n)).round().astype(int))
    for i in probed:
        try:
            dataset.probe(int(i))
            return
        except Exception as e:  # noqa: BLE001 - any failure: try the next one
            error = f"{dataset.path(int(i))}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    which = f"all {n} files" if len(probed) == n else f"all {len(probed)} files probed (spread over {n})"
    raise ValueError(f"{which} of {dataset.source} are unreadable, e.g. {error}")
