"""Kinetics-style video data sets as a LightningDataModule (Hiera / MAE-ST video models).

Index: ``root/{split}.csv`` with one ``relative/path.mp4 LABEL`` per line (space or comma
separated: the MAE-ST / SlowFast format; integer labels, or class names mapped through the sorted
names or ``class_index``), or class-per-folder trees ``root/{split}/CLASS/*.mp4``. The data rules
(README "Video data": two fields per line, known headers only, one kind of label, labels in range,
not every probed video unreadable) are checked when the index is built: one-line errors naming
``file:line``.

Batches:

* train: ``(clips float32 [B*R, 3, T, H, W], labels int64 [B*R])``, R = ``repeated_sampling`` clips
  drawn from each decoded video (labels repeated); unreadable videos are dropped (logged, counted).
* val/test: ``(views float32 [B, V, 3, T, H, W], labels int64 [B], index int64 [B],
  missing int64 [M])``: V = ``num_temporal_views * num_spatial_views`` views per video (temporal
  major), ``index`` the data-set index of each video (average the softmax over V per video) and
  ``missing`` the data-set indices in this batch that could not be decoded: they are REPORTED, never
  replaced by another video.

Decoding (:func:`read_frames`): decord ``VideoReader`` on the CPU, opened per video and released
right after one ``get_batch`` call (decord leaks memory/threads when readers are kept around, issues
dmlc/decord#197/#208/#220/#373); on any decord failure or time-out PyAV retries (seek + decode only
the needed frames). Each read runs in a fresh daemon *thread* joined with a time-out
(``decode_timeout``), not ``signal.alarm``: (1) decord's calls go through ctypes, which releases the
GIL, so the waiting thread gets control back on time even when decord hangs inside C code, whereas a
SIGALRM handler only runs between Python bytecodes, i.e. never while the hung C call lasts; (2)
``signal.alarm`` only works in a process's main thread and would clobber any other SIGALRM user
(with ``num_workers=0`` that is the trainer's process). The cost: a hung read's thread cannot be
killed and is abandoned (counted in ``num_abandoned_reads``, logged); training workers
(non-persistent with a seed) are re-created each epoch, which reclaims them.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .image_folder import _class_dirs, _files, check_readable, load_class_index
from .loading import SampleKey, ShardedDataModule, sample_rng, split_key
from .transforms import BICUBIC, IMAGENET_MEAN, IMAGENET_STD, mode_train_transform, randaug_settings

log = logging.getLogger("abswin.data")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
ROOT_HINT = "set data.root=/path/to/kinetics"


# ---------------------------------------------------------------------------- index
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
    ValueError naming ``csv:line`` (see the README's data rules)."""
    rows: list[tuple[int, str, str]] = []
    for n, line in enumerate(csv.read_text().splitlines(), 1):
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
        elif not _is_int(label) and len(rows) > 1 and all(_is_int(r[2]) for r in rows[1:]):
            raise ValueError(f"{csv}:{n}: unknown header line {path!r} {label!r} (known: a first field in "
                             f"{'/'.join(HEADER_PATHS)} and a second in {'/'.join(HEADER_LABELS)}; or remove it)")
    if rows:
        first_int = _is_int(rows[0][2])
        for n, path, label in rows:
            if _is_int(label) != first_int:
                raise ValueError(f"{csv}:{n}: label {label!r} mixes integer and class-name labels "
                                 f"(line {rows[0][0]} has {rows[0][2]!r}); use one kind per CSV")
    return SplitIndex([r[1] for r in rows], [r[2] for r in rows], csv, [r[0] for r in rows])


def _read_split(root: str | os.PathLike, split: str) -> SplitIndex:
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
    for name in _class_dirs(split_dir):  # an empty class folder is no class: its name is never a label
        files = _files(split_dir / name, VIDEO_EXTENSIONS)
        paths += [f"{split}/{name}/{f}" for f in files]
        labels += [name] * len(files)
    if not paths:
        raise FileNotFoundError(f"no videos in {split_dir} ({ROOT_HINT} with {split}/CLASS/*.mp4)")
    return SplitIndex(paths, labels, split_dir, [])


def read_index(root: str | os.PathLike, split: str) -> tuple[list[str], list[str]]:
    """``(paths, raw labels)`` of a split (:func:`_read_split`)."""
    index = _read_split(root, split)
    return index.paths, index.labels


# ---------------------------------------------------------------------------- decoding
num_abandoned_reads = 0  # timed-out reads in this process (their threads cannot be killed)


def _run_with_timeout(fn: Callable, timeout: float | None):
    """``fn()`` in a fresh daemon thread; TimeoutError after ``timeout`` seconds (the thread is
    abandoned: it cannot be killed). See the module docstring for why a thread, not SIGALRM."""
    if timeout is None or timeout <= 0:
        return fn()
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=target, daemon=True, name="abswin-video-read")
    t.start()
    t.join(timeout)
    if t.is_alive():
        global num_abandoned_reads
        num_abandoned_reads += 1
        log.warning("video read exceeded %g s: thread abandoned (%d in this process)", timeout, num_abandoned_reads)
        raise TimeoutError(f"read took more than {timeout:g} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def _read_decord(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    try:
        n = len(vr)
        if n <= 0:
            raise ValueError("no frames")
        idx = np.asarray(choose(n), dtype=np.int64)
        uniq, inverse = np.unique(np.clip(idx, 0, n - 1), return_inverse=True)
        frames = vr.get_batch(uniq.tolist()).asnumpy()  # one call: [U, H, W, 3] uint8
    finally:
        del vr
    return frames[inverse]


def _read_pyav(path: str, choose: Callable[[int], np.ndarray]) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # as decord: one thread per read; loader workers are the parallelism
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and tb else 0.0
        n = int(stream.frames or 0)
        if n <= 0 and stream.duration and tb and fps:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if n <= 0 or fps <= 0 or not tb:  # no usable metadata: decode everything
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            if not frames:
                raise ValueError("no frames")
            idx = np.clip(np.asarray(choose(len(frames)), dtype=np.int64), 0, len(frames) - 1)
            return np.stack([frames[i] for i in idx])
        idx = np.clip(np.asarray(choose(n), dtype=np.int64), 0, n - 1)
        want = np.unique(idx)
        first, last = int(want[0]), int(want[-1])
        if first > 0:
            container.seek(int((start + first / fps) / tb), stream=stream, backward=True, any_frame=False)
        got: dict[int, np.ndarray] = {}
        wanted = set(want.tolist())
        for count, frame in enumerate(container.decode(stream)):
            i = int(round((frame.pts * tb - start) * fps)) if frame.pts is not None else first + count
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        if not got:
            raise ValueError(f"PyAV decoded none of frames {first}..{last}")
        keys = sorted(got)
        out = []
        for i in idx:  # a frame beyond the real end (metadata over-counts) -> the last decoded one
            j = keys[max(0, np.searchsorted(keys, i, side="right") - 1)]
            out.append(got[j])
        return np.stack(out)


DECODERS = {"decord": "decord", "pyav": "PyAV"}  # name -> display name


def _reader(decoder: str) -> Callable:
    return _read_decord if decoder == "decord" else _read_pyav  # looked up per call (tests patch them)


def read_frames(path: str | os.PathLike, choose: Callable[[int], np.ndarray],
                timeout: float | None = 30.0, decoder: str = "decord") -> np.ndarray:
    """uint8 ``[len(idx), H, W, 3]`` RGB frames ``idx = choose(num_frames)`` (indices clipped to
    the video). ``decoder`` first ("decord" or "pyav"), the other one when it fails or exceeds
    ``timeout`` seconds; raises when both fail (the message names both errors)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} is not one of {sorted(DECODERS)}")
    path = str(path)
    first, second = decoder, next(d for d in DECODERS if d != decoder)
    try:
        return _run_with_timeout(lambda: _reader(first)(path, choose), timeout)
    except Exception as first_error:  # noqa: BLE001 - any failure: retry with the other decoder
        try:
            return _run_with_timeout(lambda: _reader(second)(path, choose), timeout)
        except Exception as second_error:  # noqa: BLE001
            a = " ".join(str(first_error).split())[:200]
            b = " ".join(str(second_error).split())[:200]
            raise OSError(f"{DECODERS[first]}: {type(first_error).__name__}: {a}; {DECODERS[second]}: "
                          f"{type(second_error).__name__}: {b}") from second_error


# ---------------------------------------------------------------------------- frame indices
def clip_span(num_frames: int, sampling_rate: int) -> int:
    return (num_frames - 1) * sampling_rate + 1


def train_clip_indices(n: int, num_frames: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``num_frames`` frames ``sampling_rate`` apart in a video of ``n`` frames;
    a too-short video starts at 0 and repeats its last frame."""
    span = clip_span(num_frames, sampling_rate)
    start = int(rng.integers(0, n - span + 1)) if n >= span else 0
    return np.minimum(start + np.arange(num_frames) * sampling_rate, n - 1)


def eval_clip_indices(n: int, num_frames: int, sampling_rate: int, num_views: int) -> np.ndarray:
    """``[num_views, num_frames]``: windows evenly spaced from the first to the last possible start
    (one view: the centre window); short videos repeat their last frame."""
    span = clip_span(num_frames, sampling_rate)
    delta = max(n - span, 0)
    starts = np.linspace(0, delta, num_views) if num_views > 1 else np.array([delta / 2])
    idx = np.round(starts).astype(np.int64)[:, None] + np.arange(num_frames) * sampling_rate
    return np.minimum(idx, n - 1)


def spatial_crops(frames: torch.Tensor, size: int, num_views: int) -> list[torch.Tensor]:
    """``num_views`` square crops of ``[..., H, W]`` evenly spaced along the long side (3: left/
    centre/right, or top/centre/bottom), centred on the short side; 1: the centre crop."""
    h, w = frames.shape[-2:]
    if min(h, w) < size:
        raise ValueError(f"frames {h}x{w} are smaller than the crop {size}")
    long_len = max(h, w)
    pos = np.linspace(0, long_len - size, num_views) if num_views > 1 else np.array([(long_len - size) / 2])
    crops = []
    for p in np.round(pos).astype(int):
        if w >= h:
            y = (h - size) // 2
            crops.append(frames[..., y:y + size, p:p + size])
        else:
            x = (w - size) // 2
            crops.append(frames[..., p:p + size, x:x + size])
    return crops


# ---------------------------------------------------------------------------- data sets
class VideoDataset(Dataset):
    """Videos ``root/paths[i]`` with ``labels[i]``.

    ``train=True``: ``__getitem__`` -> ``(clips [R, 3, T, S, S], label)`` (R random clips of one
    decoded video, each with its own crop/flip/RandAugment, shared by all its frames); ``None``
    for an unreadable video (:func:`collate_video_train` drops it).
    ``train=False``: ``(views [Vt*Vs, 3, T, S, S] or None, label, index)`` (None: unreadable, kept so
    that evaluation reports it). Failures are logged (one line) and counted in :attr:`num_skipped`
    and :attr:`missing` (per process).
    """

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], labels: Sequence[int], *, train: bool,
                 num_frames: int = 16, sampling_rate: int = 4, transform: Callable | None = None,
                 repeated_sampling: int = 1, img_size: int = 224, crop_pct: float = 1.0,
                 num_temporal_views: int = 5, num_spatial_views: int = 3,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 decode_timeout: float | None = 30.0, decoder: str = "decord") -> None:
        self.root = Path(root)
        self.paths = np.array([p.encode() for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.train = bool(train)
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.transform = transform
        self.repeated_sampling = int(repeated_sampling)
        self.img_size = int(img_size)
        self.crop_pct = float(crop_pct)
        self.num_temporal_views = int(num_temporal_views)
        self.num_spatial_views = int(num_spatial_views)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1) * 255
        self.decode_timeout = decode_timeout
        self.decoder = decoder
        self.num_skipped = 0
        self.missing: list[int] = []
        self.seed: int | None = None  # set by the training loader: augmentation from (seed, epoch, index)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        p = Path(self.paths[index].decode())
        return p if p.is_absolute() else self.root / p

    def probe(self, index: int) -> np.ndarray:
        """The video's first frame; raises when neither decoder reads it."""
        return read_frames(self.path(index), lambda n: np.zeros(1, dtype=np.int64), self.decode_timeout, self.decoder)

    def _fail(self, index: int, e: Exception) -> None:
        self.num_skipped += 1
        self.missing.append(int(index))
        log.warning("%s unreadable video %s (%s: %s)", "skipping" if self.train else "MISSING in evaluation:",
                    self.path(index), type(e).__name__, " ".join(str(e).split()))

    def __getitem__(self, key: int | SampleKey):
        index, sample = split_key(key)
        if sample is None or self.seed is None or not self.train:
            return self._item(index, np.random.default_rng(int(torch.randint(2**62, ()))))
        with sample_rng(self.seed, sample):  # the same whatever the worker count, and across resumes
            return self._item(index, np.random.default_rng(int(torch.randint(2**62, ()))))

    def _item(self, index: int, rng: np.random.Generator):
        T, rate = self.num_frames, self.sampling_rate
        label = int(self.labels[index])
        if self.train:
            R = self.repeated_sampling
            choose = lambda n: np.concatenate([train_clip_indices(n, T, rate, rng) for _ in range(R)])  # noqa: E731
        else:
            Vt = self.num_temporal_views
            choose = lambda n: eval_clip_indices(n, T, rate, Vt).reshape(-1)  # noqa: E731
        try:
            frames = read_frames(self.path(index), choose, self.decode_timeout, self.decoder)
        except Exception as e:  # noqa: BLE001 - never fatal
            self._fail(index, e)
            return None if self.train else (None, label, index)
        frames = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [R*T or Vt*T, 3, H, W] uint8
        if self.train:
            clips = [self._train_clip(c) for c in frames.split(T)]
            return torch.stack(clips), label
        return self._eval_views(frames), label, index

    def _train_clip(self, frames: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            out = (frames.float() - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
        else:  # v2 treats the leading T as a batch dim: same crop/flip/RandAugment for every frame
            out = self.transform(frames)
        return out.permute(1, 0, 2, 3).contiguous()  # [3, T, S, S]

    def _eval_views(self, frames: torch.Tensor) -> torch.Tensor:
        short = int(self.img_size / self.crop_pct)
        frames = v2.functional.resize(frames, short, interpolation=BICUBIC, antialias=True)
        frames = frames.view(self.num_temporal_views, self.num_frames, *frames.shape[1:])  # [Vt, T, 3, h, w]
        crops = spatial_crops(frames, self.img_size, self.num_spatial_views)  # Vs x [Vt, T, 3, S, S]
        views = torch.stack(crops, dim=1).flatten(0, 1)  # [Vt*Vs, T, 3, S, S], temporal major
        views = views.permute(0, 2, 1, 3, 4).float()
        return ((views - self.mean) / self.std).contiguous()


def collate_video_train(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``None`` (unreadable videos); ``[R, 3, T, H, W]`` per video -> ``[B*R, 3, T, H, W]``,
    labels repeated R times. All unreadable: ``(empty [0, 3, 0, 0, 0], empty [0])``."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return torch.empty(0, 3, 0, 0, 0), torch.empty(0, dtype=torch.int64)
    clips = torch.cat([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch for _ in range(len(b[0]))], dtype=torch.int64)
    return clips, labels


def collate_video_eval(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(views [B, V, 3, T, H, W], labels [B], index [B], missing [M])``: ``missing`` are the
    data-set indices of this batch's unreadable videos (reported, not replaced)."""
    ok = [b for b in batch if b[0] is not None]
    missing = torch.tensor([b[2] for b in batch if b[0] is None], dtype=torch.int64)
    if not ok:
        return (torch.empty(0, 0, 3, 0, 0, 0), torch.empty(0, dtype=torch.int64),
                torch.empty(0, dtype=torch.int64), missing)
    return (torch.stack([b[0] for b in ok]), torch.tensor([b[1] for b in ok], dtype=torch.int64),
            torch.tensor([b[2] for b in ok], dtype=torch.int64), missing)


# ---------------------------------------------------------------------------- the data module
class VideoDataModule(ShardedDataModule):
    """Kinetics-style videos (``root/{split}.csv`` or ``root/{split}/CLASS/*.mp4``).

    Args (as :class:`~abswin.data.image_folder.ImageDataModule` where they apply):
        root: data set folder (CSV paths are relative to it).
        img_size: output size (square). num_frames, sampling_rate: T frames ``sampling_rate`` apart.
        batch_size: GLOBAL number of *videos* per step; per device = ``batch_size // (world_size *
            accumulate_grad_batches)``; a training batch holds ``per_device * repeated_sampling`` clips.
        eval_batch_size: videos per device in val/test (each gives V views); None: per-device batch.
        num_workers: loader processes per rank.
        mode: ``"finetune"`` (RandAugment + RandomErasing) or ``"pretrain"`` (crop + flip only,
            val split optional).
        repeated_sampling: clips per decoded training video (MAE-ST ``repeat_aug``).
        num_temporal_views, num_spatial_views: evaluation views (5 x 3 = 15 per video; ``mode=
            "pretrain"`` uses one centre view: MAE validation only tracks the loss).
        crop_pct: evaluation short-side resize to ``int(img_size / crop_pct)`` (1.0: ``img_size``).
        scale: RandomResizedCrop area range; None: (0.08, 1) finetune, (0.5, 1) pretrain (MAE-ST).
        ratio, hflip, randaug_*, random_erasing: training augmentation, as the image module
            (defaults: MAE-ST/Hiera video finetuning ``rand-m7-n4-mstd0.5-inc1``, reprob 0.25).
        train_split, val_split, test_split: split names (``test_dataloader`` uses ``test_split``
            when its CSV/folder exists, else ``val_split``).
        class_index: JSON ``{name: index}`` or text file; for CSVs with class-name labels or folder
            trees (default: sorted names of the train split). Integer CSV labels are used as is.
        num_classes: labels must lie in ``[0, num_classes)``; None: from the class index, or the
            train split's largest integer label + 1.
        decode_timeout: seconds per read attempt (decord, then PyAV); None/0: no limit.
        decoder: ``"decord"`` (default, PyAV as fallback) or ``"pyav"`` (decord as fallback):
            ``bench/video_loader.py`` tells which is faster for your files.
        pin_memory, persistent_workers, seed: as the image module.
    """

    def __init__(
        self,
        root: str | None,
        img_size: int = 224,
        num_frames: int = 16,
        sampling_rate: int = 4,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        mode: str = "finetune",
        repeated_sampling: int = 1,
        num_temporal_views: int = 5,
        num_spatial_views: int = 3,
        crop_pct: float = 1.0,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        randaug_num_ops: int = 4,
        randaug_magnitude: float = 7,
        randaug_mstd: float | None = 0.5,
        randaug_op_prob: float = 0.5,
        randaug_num_bins: int = 11,
        random_erasing: float = 0.25,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        class_index: str | None = None,
        num_classes: int | None = None,
        decode_timeout: float | None = 30.0,
        decoder: str = "decord",
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
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.batch_size = int(batch_size)
        self.eval_batch_size = None if eval_batch_size is None else int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.mode = mode
        for name, value in (("num_frames", num_frames), ("sampling_rate", sampling_rate),
                            ("repeated_sampling", repeated_sampling), ("num_temporal_views", num_temporal_views),
                            ("num_spatial_views", num_spatial_views)):
            if int(value) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        self.repeated_sampling = int(repeated_sampling)
        self.num_temporal_views = int(num_temporal_views)
        self.num_spatial_views = int(num_spatial_views)
        self.crop_pct = float(crop_pct)
        if scale is None:
            scale = (0.5, 1.0) if mode == "pretrain" else (0.08, 1.0)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.hflip = float(hflip)
        self.randaug = randaug_settings(randaug_num_ops, randaug_magnitude, randaug_mstd, randaug_op_prob,
                                        randaug_num_bins)
        self.random_erasing = float(random_erasing)
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.decode_timeout = decode_timeout
        if decoder not in DECODERS:
            raise ValueError(f"data.decoder={decoder!r} is not one of {sorted(DECODERS)}")
        self.decoder = decoder
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = self.num_workers > 0 if persistent_workers is None else bool(persistent_workers)
        self.seed = seed

        self._train_index = _read_split(self.root, train_split)
        raw = self._train_index.labels
        self._class_source = f"the {train_split} split" if class_index is None else f"the class index {class_index}"
        if class_index is not None:
            self.class_to_idx = load_class_index(class_index, self.root)
        elif all(_is_int(x) for x in raw):
            self.class_to_idx = None  # integer labels
        else:
            self.class_to_idx = {name: i for i, name in enumerate(sorted(set(raw)))}
        if num_classes is not None:
            self.num_classes = int(num_classes)
        elif self.class_to_idx is None:
            self.num_classes = max(int(x) for x in raw) + 1
        else:
            self.num_classes = max(self.class_to_idx.values()) + 1
        if self.class_to_idx is None:
            self.classes = [str(i) for i in range(self.num_classes)]
        else:
            self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)
        self._range_source = "data.num_classes" if num_classes is not None else self._class_source
        self._labels(self._train_index)  # out-of-range labels: an error now, not mid-training

        self.train_set: VideoDataset | None = None
        self.val_set: VideoDataset | None = None
        self.test_set: VideoDataset | None = None
        self.per_device_batch_size = self.batch_size

    # ------------------------------------------------------------------ helpers
    def _labels(self, index: SplitIndex) -> list[int]:
        """Raw labels -> class indices (integers as written when the train split has integer labels,
        else class names through the class index). One-line ValueError naming the CSV line (or class
        folder) of the first label that is not a class in ``[0, num_classes)``."""
        out = []
        for i, raw in enumerate(index.labels):
            if self.class_to_idx is None:
                if not _is_int(raw):
                    raise ValueError(f"{index.where(i)}: class-name label {raw!r} but {self._class_source} has "
                                     f"integer labels (set data.class_index= to map names)")
                y = int(raw)
            elif raw in self.class_to_idx:
                y = self.class_to_idx[raw]
            else:
                raise ValueError(f"{index.where(i)}: label {raw!r} is not a class of {self._class_source} "
                                 f"(set data.class_index=)")
            if not 0 <= y < self.num_classes:
                raise ValueError(f"{index.where(i)}: label {y} is out of range [0, {self.num_classes}) "
                                 f"(classes from {self._range_source})")
            out.append(y)
        return out

    def _split_exists(self, split: str | None) -> bool:
        return split is not None and ((self.root / f"{split}.csv").is_file() or (self.root / split).is_dir())

    def train_transform(self):
        return mode_train_transform(self.mode, self.img_size, self.scale, self.ratio, self.hflip, self.randaug,
                                    self.random_erasing)

    def _dataset(self, split: str, train: bool, index: SplitIndex | None = None) -> VideoDataset:
        """The split's data set, after a probe that some of its videos decode (:func:`check_readable`)."""
        index = index if index is not None else _read_split(self.root, split)
        # MAE validation only tracks the loss: one centre view per video, not the 5x3 protocol
        views = (1, 1) if self.mode == "pretrain" else (self.num_temporal_views, self.num_spatial_views)
        dataset = VideoDataset(self.root, index.paths, self._labels(index), train=train,
                               num_frames=self.num_frames, sampling_rate=self.sampling_rate,
                               transform=self.train_transform() if train else None,
                               repeated_sampling=self.repeated_sampling, img_size=self.img_size,
                               crop_pct=self.crop_pct, num_temporal_views=views[0], num_spatial_views=views[1],
                               decode_timeout=self.decode_timeout, decoder=self.decoder)
        check_readable(dataset, index.source)
        return dataset

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        self._split_batch()
        if self.train_set is None:
            self.train_set = self._dataset(self.train_split, True, self._train_index)
        if self.val_set is None and self.val_split is not None:
            if self.mode == "pretrain" and not self._split_exists(self.val_split):
                log.info("no %s split in %s: pretraining without validation", self.val_split, self.root)
            else:
                self.val_set = self._dataset(self.val_split, False)
        if self.test_set is None and self._split_exists(self.test_split):
            self.test_set = self._dataset(self.test_split, False)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._train_loader(collate_video_train)

    def _eval_videos(self, dataset):
        return self._eval_loader(dataset, self.eval_batch_size or self.per_device_batch_size, collate_video_eval)

    def val_dataloader(self):
        if self.train_set is None:
            self.setup("validate")
        return self._eval_videos(self.val_set)

    def test_dataloader(self):
        if self.train_set is None:
            self.setup("test")
        return self._eval_videos(self.test_set if self.test_set is not None else self.val_set)

    @property
    def num_skipped(self) -> int:
        """Unreadable videos in this process (all of them with ``num_workers=0``)."""
        return sum(d.num_skipped for d in (self.train_set, self.val_set, self.test_set) if d is not None)


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()
