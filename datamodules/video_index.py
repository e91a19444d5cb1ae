"""The index of a Kinetics-style video split, and its checks.

``root/{split}.csv`` with one ``relative/path.mp4 LABEL`` per line (space or comma separated: the
MAE-ST / SlowFast format; integer labels, or class names mapped through the sorted names or a class
index file), or class-per-folder trees ``root/{split}/CLASS/*.mp4``. The data rules (docs/data.md, "Video
data": two fields per line, known headers only, one kind of label, labels in range) are checked when
the index is read: one-line errors naming ``file:line`` (or the class folder).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from .files import class_dirs, list_files

log = logging.getLogger("datamodules")

__all__ = ["SplitIndex", "VIDEO_EXTENSIONS", "class_labels", "is_int", "read_index", "read_split"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
ROOT_HINT = "set data.root=/path/to/kinetics"


HEADER_PATHS = ("path", "video", "video_path", "filename", "file", "youtube_id")
HEADER_LABELS = ("label", "labels", "label_id", "class", "class_id", "label_name")


class SplitIndex(NamedTuple):
    """A split's videos: ``paths`` (relative to the root, or absolute) and raw ``labels`` (integers
    or class names, as written); ``source`` is the CSV (``lines``: the line of each video) or the
    split folder (``lines`` empty)."""

    paths: list[str]
    labels: list[str]
    source: Path
    lines: list[int]

    def where(self, i: int) -> str:
        """``file:line`` (CSV) or the class folder that lists video ``i``."""
        return f"{self.source}:{self.lines[i]}" if self.lines else f"{self.source / self.labels[i]}"


def _fields(line: str) -> list[str]:
    """Comma separated when the line has a comma (the path may then hold spaces), else whitespace."""
    return [f.strip() for f in line.split(",")] if "," in line else line.split()


def _read_csv(csv: Path) -> SplitIndex:
    """Every line ``path label``; a known header line is skipped, anything else is a one-line
    ValueError naming ``csv:line`` (see the data rules in docs/data.md)."""
    rows: list[tuple[int, str, str]] = []
    for n, line in enumerate(csv.read_text(encoding="utf-8-sig").splitlines(), 1):  # -sig: a BOM is no text
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _fields(line)
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{csv}:{n}: expected 'path label' (2 fields, space or comma separated), "
                             f"got {len(fields)}: {line.strip()!r}")
        rows.append((n, fields[0], fields[1]))
    if rows:
        n, path, label = rows[0]
        if path.lower() in HEADER_PATHS and label.lower() in HEADER_LABELS:
            log.info("%s:%d: header line '%s %s' skipped", csv, n, path, label)
            rows = rows[1:]
        elif not is_int(label) and len(rows) > 1 and all(is_int(r[2]) for r in rows[1:]):
            raise ValueError(f"{csv}:{n}: unknown header line {path!r} {label!r} (known: a first field in "
                             f"{'/'.join(HEADER_PATHS)} and a second in {'/'.join(HEADER_LABELS)}; or remove it)")
    if rows:
        first_int = is_int(rows[0][2])
        for n, path, label in rows:
            if is_int(label) != first_int:
                raise ValueError(f"{csv}:{n}: label {label!r} mixes integer and class-name labels "
                                 f"(line {rows[0][0]} has {rows[0][2]!r}); use one kind per CSV")
    seen: dict[str, int] = {}
    repeated = [(n, seen.setdefault(path, n)) for n, path, _ in rows if seen.setdefault(path, n) != n]
    if repeated:
        n, first = repeated[0]
        log.warning("%s: %d line(s) repeat a video listed before (e.g. line %d repeats line %d): each counts once "
                    "more in training and in the validation metrics", csv, len(repeated), n, first)
    return SplitIndex([r[1] for r in rows], [r[2] for r in rows], csv, [r[0] for r in rows])


def read_split(root: str | os.PathLike, split: str) -> SplitIndex:
    """The split's :class:`SplitIndex`: ``root/split.csv`` when it exists, else the class folders
    of ``root/split``. One-line FileNotFoundError naming the path and ``data.root=`` when neither
    exists or it is empty."""
    root_p = Path(root).expanduser()
    if not root_p.is_dir():
        raise FileNotFoundError(f"data root not found: {root_p} ({ROOT_HINT})")
    csv = root_p / f"{split}.csv"
    split_dir = root_p / split
    if csv.is_file():
        index = _read_csv(csv)
        if not index.paths:
            raise FileNotFoundError(f"no videos listed in {csv} ({ROOT_HINT} with {split}.csv lines 'path label')")
        return index
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split index not found: {csv} (nor {split_dir}/CLASS/) ({ROOT_HINT})")
    paths: list[str] = []
    labels: list[str] = []
    for name in class_dirs(split_dir):  # an empty class folder is no class: its name is never a label
        files = list_files(split_dir / name, VIDEO_EXTENSIONS)
        paths += [f"{split}/{name}/{f}" for f in files]
        labels += [name] * len(files)
    if not paths:
        raise FileNotFoundError(f"no videos in {split_dir} ({ROOT_HINT} with {split}/CLASS/*.mp4)")
    return SplitIndex(paths, labels, split_dir, [])


def read_index(root: str | os.PathLike, split: str) -> tuple[list[str], list[str]]:
    """``(paths, raw labels)`` of a split (:func:`read_split`)."""
    index = read_split(root, split)
    return index.paths, index.labels


def is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def class_labels(index: SplitIndex, class_to_idx: dict[str, int] | None, num_classes: int, class_source: str,
                 range_source: str) -> list[int]:
    """Raw labels -> class indices: integers as written (``class_to_idx`` None: the train split has
    integer labels), else class names through ``class_to_idx``. One-line ValueError naming the CSV
    line (or class folder) of the first label that is not a class in ``[0, num_classes)``;
    ``class_source`` / ``range_source`` say where the classes and the class count come from."""
    out = []
    for i, raw in enumerate(index.labels):
        if class_to_idx is None:
            if not is_int(raw):
                raise ValueError(f"{index.where(i)}: class-name label {raw!r} but {class_source} has "
                                 f"integer labels (set data.class_index= to map names)")
            y = int(raw)
        elif raw in class_to_idx:
            y = class_to_idx[raw]
        else:
            raise ValueError(f"{index.where(i)}: label {raw!r} is not a class of {class_source} "
                             f"(set data.class_index=)")
        if not 0 <= y < num_classes:
            raise ValueError(f"{index.where(i)}: label {y} is out of range [0, {num_classes}) "
                             f"(classes from {range_source})")
        out.append(y)
    return out
