"""Kinetics-style video data sets as a LightningDataModule (Hiera / MAE-ST video models).

The index (``root/{split}.csv`` or class folders) is :mod:`datamodules.video_index`'s, decoding
:mod:`datamodules.video_decoding`'s, the frame and crop maths :mod:`datamodules.clip_sampling`'s;
the batch split, loaders, sharding and resuming :class:`~datamodules.datamodule.ShardedDataModule`'s.

Batches (:class:`~abswin.batch.Batch`, built by :mod:`datamodules.collate`):

* train: ``images`` float32 ``[B*R, 3, T, H, W]``, ``labels`` int64 ``[B*R]``,
  ``clips_per_sample`` R = ``repeated_sampling`` clips drawn from each decoded video (labels
  repeated); unreadable videos are dropped (logged, counted).
* val/test: ``views`` float32 ``[B, V, 3, T, H, W]``, ``labels`` int64 ``[B]``, ``video_index`` int64
  ``[B]``, ``missing`` int64 ``[M]``: V = ``num_temporal_views * num_spatial_views`` views per video
  (temporal major; average the softmax over V per video), and the data-set indices in this batch that
  could not be decoded: they are REPORTED, never replaced by another video.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from .clip_sampling import eval_clip_indices, spatial_crops, train_clip_indices
from .collate import collate_video_eval, collate_video_train
from .datamodule import ShardedDataModule
from .files import FileDataset, load_class_index
from .transforms import BICUBIC
from .video_decoding import DECODERS, read_frames
from .video_index import ROOT_HINT, SplitIndex, class_labels, is_int, read_split


class VideoDataset(FileDataset):
    """Videos ``root/paths[i]`` with ``labels[i]``; items ``(x or None, label, index)`` (None:
    unreadable, see :class:`~datamodules.files.FileDataset`).

    ``train=True``: ``x`` = ``[R, 3, T, S, S]``, R random clips of one decoded video, each with its
    own crop and flip (``transform``, shared by all its frames; None: the frames as they are).
    uint8 throughout (normalised on the device, :mod:`datamodules.on_device`).
    ``train=False``: ``x`` = ``[Vt*Vs, 3, T, S, S]`` evaluation views: ``Vt`` evenly spaced windows,
    each resized to a short side of ``int(img_size / crop_pct)`` and cut into ``Vs`` square crops.
    """

    kind = "video"

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], labels: Sequence[int], *, train: bool,
                 source: str | os.PathLike, num_frames: int, sampling_rate: int, transform: Callable | None,
                 repeated_sampling: int, img_size: int, crop_pct: float, num_temporal_views: int,
                 num_spatial_views: int, decode_timeout: float | None, decoder: str) -> None:
        super().__init__(root, paths, labels, train=train, source=source)
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.transform = transform
        self.repeated_sampling = int(repeated_sampling)
        self.img_size = int(img_size)
        self.crop_pct = float(crop_pct)
        self.num_temporal_views = int(num_temporal_views)
        self.num_spatial_views = int(num_spatial_views)
        self.decode_timeout = decode_timeout
        self.decoder = decoder

    def probe(self, index: int) -> np.ndarray:
        """The video's first frame; raises when neither decoder reads it."""
        return read_frames(self.path(index), lambda n: np.zeros(1, dtype=np.int64), self.decode_timeout, self.decoder)

    def read(self, index: int) -> torch.Tensor:
        """uint8 ``[R*T, 3, H, W]`` (training: R random windows) or ``[Vt*T, 3, H, W]`` (evaluation)."""
        T, rate = self.num_frames, self.sampling_rate
        if self.train:
            rng = np.random.default_rng(int(torch.randint(2**62, ())))  # the sample's seeded torch RNG
            R = self.repeated_sampling
            choose = lambda n: np.concatenate([train_clip_indices(n, T, rate, rng) for _ in range(R)])  # noqa: E731
        else:
            Vt = self.num_temporal_views
            choose = lambda n: eval_clip_indices(n, T, rate, Vt).reshape(-1)  # noqa: E731
        frames = read_frames(self.path(index), choose, self.decode_timeout, self.decoder)
        return torch.from_numpy(frames).permute(0, 3, 1, 2)

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        if self.train:
            return torch.stack([self._train_clip(c) for c in frames.split(self.num_frames)])
        return self._eval_views(frames)

    def _train_clip(self, frames: torch.Tensor) -> torch.Tensor:
        # v2 treats the leading T as a batch dim: the same crop and flip for every frame
        out = frames if self.transform is None else self.transform(frames)
        return out.permute(1, 0, 2, 3).contiguous()  # [3, T, S, S]

    def _eval_views(self, frames: torch.Tensor) -> torch.Tensor:
        short = int(self.img_size / self.crop_pct)
        frames = v2.functional.resize(frames, short, interpolation=BICUBIC, antialias=True)
        frames = frames.view(self.num_temporal_views, self.num_frames, *frames.shape[1:])  # [Vt, T, 3, h, w]
        crops = spatial_crops(frames, self.img_size, self.num_spatial_views)  # Vs x [Vt, T, 3, S, S]
        views = torch.stack(crops, dim=1).flatten(0, 1)  # [Vt*Vs, T, 3, S, S], temporal major
        return views.permute(0, 2, 1, 3, 4).contiguous()


class VideoDataModule(ShardedDataModule):
    """Kinetics-style videos (``root/{split}.csv`` or ``root/{split}/CLASS/*.mp4``).

    Args (every video data config sets them: no defaults):
        root: data set folder (CSV paths are relative to it).
        num_frames, sampling_rate: T frames ``sampling_rate`` apart.
        eval_batch_size: videos per device in val/test (each gives V views); None: the per-device batch.
        repeated_sampling: clips per decoded training video (MAE-ST ``repeat_aug``); a training batch
            holds ``per_device_batch_size * repeated_sampling`` clips (``batch_size`` counts videos).
        num_temporal_views, num_spatial_views: evaluation views (``mode="pretrain"`` uses one centre
            view: MAE validation only tracks the loss).
        decode_timeout: seconds per read attempt (the decoder, then its fallback); None/0: no limit.
        decoder: ``"decord"`` or ``"torchcodec"`` (PyAV as fallback), or ``"pyav"`` (decord as
            fallback): ``bench/video_loader.py`` tells which is faster for your files.
        settings: :class:`~datamodules.datamodule.ShardedDataModule`'s arguments (``img_size``,
            ``batch_size``, augmentation, ``class_index``, ``num_classes``, ``seed``, ...). Classes:
            integer CSV labels are used as they are (``num_classes`` None: the train split's largest
            + 1); class names map through ``class_index`` (None: the train split's sorted names).
        test_split: ``test_dataloader`` uses it when its CSV/folder exists, else the val split.
    """

    root_hint = ROOT_HINT
    collate_train = staticmethod(collate_video_train)
    collate_eval = staticmethod(collate_video_eval)

    def __init__(self, root: str | None, num_frames: int, sampling_rate: int, eval_batch_size: int | None,
                 repeated_sampling: int, num_temporal_views: int, num_spatial_views: int,
                 decode_timeout: float | None, decoder: str, *, test_split: str | None = "test", **settings) -> None:
        for name, value in (("num_frames", num_frames), ("sampling_rate", sampling_rate),
                            ("repeated_sampling", repeated_sampling), ("num_temporal_views", num_temporal_views),
                            ("num_spatial_views", num_spatial_views)):
            if int(value) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        if decoder not in DECODERS:
            raise ValueError(f"data.decoder={decoder!r} is not one of {sorted(DECODERS)}")
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.eval_batch_size = None if eval_batch_size is None else int(eval_batch_size)
        self.repeated_sampling = int(repeated_sampling)
        self.num_temporal_views = int(num_temporal_views)
        self.num_spatial_views = int(num_spatial_views)
        self.decode_timeout = decode_timeout
        self.decoder = decoder
        super().__init__(root, test_split=test_split, **settings)  # reads the train split (_read_classes)
        self._range_source = "data.num_classes" if settings.get("num_classes") is not None else self._class_source
        self._labels(self._train_index)  # out-of-range labels: an error now, not mid-training

    # ------------------------------------------------------------------ index
    def _read_classes(self) -> tuple[dict[str, int] | None, int | None]:
        self._train_index = read_split(self.root, self.train_split)
        raw = self._train_index.labels
        if self.class_index is not None:
            self._class_source = f"the class index {self.class_index}"
            return load_class_index(self.class_index, self.root), None
        self._class_source = f"the {self.train_split} split"
        if all(is_int(x) for x in raw):
            return None, max(int(x) for x in raw) + 1  # integer labels
        return {name: i for i, name in enumerate(sorted(set(raw)))}, None

    def _labels(self, index: SplitIndex) -> list[int]:
        return class_labels(index, self.class_to_idx, self.num_classes, self._class_source, self._range_source)

    def _split_exists(self, split: str) -> bool:
        return (self.root / f"{split}.csv").is_file() or (self.root / split).is_dir()

    def _eval_batch_size(self) -> int:
        return self.eval_batch_size or self.per_device_batch_size

    def _dataset(self, split: str, train: bool) -> VideoDataset:
        index = self._train_index if train else read_split(self.root, split)
        # MAE validation only tracks the loss: one centre view per video, not the 5x3 protocol
        views = (1, 1) if self.mode == "pretrain" else (self.num_temporal_views, self.num_spatial_views)
        return VideoDataset(self.root, index.paths, self._labels(index), train=train, source=index.source,
                            num_frames=self.num_frames, sampling_rate=self.sampling_rate,
                            transform=self.train_transform() if train else None,
                            repeated_sampling=self.repeated_sampling, img_size=self.img_size,
                            crop_pct=self.crop_pct, num_temporal_views=views[0], num_spatial_views=views[1],
                            decode_timeout=self.decode_timeout, decoder=self.decoder)
