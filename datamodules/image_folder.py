"""ImageNet-style folders (``ROOT/SPLIT/CLASS/*.JPEG``) as a LightningDataModule.

Batches (:class:`~abswin.batch.Batch`, built by :func:`~datamodules.collate.collate_images`):
``images`` uint8 ``[B, 3, H, W]`` (normalised with the ImageNet mean/std on the device), ``labels`` int64 ``[B]``,
``missing`` the data-set indices of the batch's unreadable images (which ``val/missing`` counts).
The batch split, loaders, sharding and resuming are :class:`~datamodules.datamodule.ShardedDataModule`'s.
The data rules (docs/data.md) are checked when the index is built.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import torch

from .collate import collate_images
from .datamodule import ShardedDataModule
from .files import FileDataset, class_dirs, list_files, load_class_index
from .transforms import decode, eval_transform

log = logging.getLogger("datamodules")

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# what one image may cost before it is decoded: a photo is a few MB and under 50 megapixels; a
# decompression bomb (a 1 MB PNG of 1e9 pixels) or a link to /dev/zero would exhaust the memory
MAX_IMAGE_BYTES = 100 * 2**20
MAX_IMAGE_PIXELS = 100_000_000
ROOT_HINT = "set data.root=/path/to/imagenet"


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def list_split(split_dir: Path) -> dict[str, list[str]]:
    """Class folder -> its image file names, for the class folders of ``split_dir`` that hold at
    least one image; empty ones are logged (one line) and are not classes. One-line
    FileNotFoundError when no class folder holds an image."""
    listing = {name: list_files(split_dir / name, IMG_EXTENSIONS) for name in class_dirs(split_dir)}
    empty = [name for name, files in listing.items() if not files]
    if empty:
        log.warning("%d class folder(s) in %s hold no images and are not classes: %s", len(empty), split_dir,
                    _names(empty))
    listing = {name: files for name, files in listing.items() if files}
    if not listing:
        raise FileNotFoundError(f"no images in {split_dir} ({ROOT_HINT} with CLASS/*.JPEG files)")
    return listing


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


class ImageFolderDataset(FileDataset):
    """Images in ``split_dir/CLASS/*`` with labels from ``class_to_idx``; items ``(image [3, S, S]
    or None, label, index)`` (see :class:`~datamodules.files.FileDataset`). Class folders not in
    ``class_to_idx`` are logged and ignored. ``listing``: :func:`list_split` of ``split_dir`` when
    already done."""

    kind = "image"

    def __init__(self, split_dir: str | os.PathLike, class_to_idx: dict[str, int], transform: Callable | None,
                 *, train: bool, listing: dict[str, list[str]] | None = None) -> None:
        split_dir = Path(split_dir)
        if listing is None:
            listing = list_split(split_dir)
        ignored = sorted(set(listing) - set(class_to_idx))
        if ignored:
            log.warning("%d class folder(s) in %s are not in the class index and are ignored: %s", len(ignored),
                        split_dir, _names(ignored))
        paths: list[str] = []
        labels: list[int] = []
        for name in sorted(set(listing) & set(class_to_idx)):
            paths += [f"{name}/{f}" for f in listing[name]]
            labels += [class_to_idx[name]] * len(listing[name])
        if not paths:
            raise FileNotFoundError(f"no images of the class index's classes in {split_dir} ({ROOT_HINT})")
        super().__init__(split_dir, paths, labels, train=train, source=split_dir)
        self.split_dir = split_dir
        self.class_to_idx = dict(class_to_idx)
        self.transform = transform

    def read(self, index: int) -> torch.Tensor:
        return read_image(self.path(index))

    def process(self, image: torch.Tensor) -> torch.Tensor:
        return image if self.transform is None else self.transform(image)


def read_image(path: Path) -> torch.Tensor:
    """The decoded image (uint8 ``[3, H, W]``); raises when the file is unreadable, is not a
    regular file (a named pipe would block the read forever, a device never end) or is larger
    than :data:`MAX_IMAGE_BYTES` or :data:`MAX_IMAGE_PIXELS`."""
    info = os.stat(path)  # of what a link points at
    if not stat.S_ISREG(info.st_mode):
        raise OSError("not a regular file (a named pipe, a device or a socket)")
    if info.st_size > MAX_IMAGE_BYTES:
        raise OSError(f"{info.st_size} bytes, more than the {MAX_IMAGE_BYTES} an image may have")
    with open(path, "rb") as f:
        data = f.read(MAX_IMAGE_BYTES + 1)
    width, height, frames = image_size(data)
    if width * height * frames > MAX_IMAGE_PIXELS:
        raise OSError(f"{frames} frame(s) of {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} an image "
                      f"may have (a decompression bomb?)")
    return decode(data)


def image_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) from the file's headers, without decoding its pixels (an animated GIF
    is decoded whole); (0, 0, 1) when PIL cannot tell (the decoder then decides)."""
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit, in our words
        try:
            with Image.open(io.BytesIO(data)) as im:
                return (*im.size, int(getattr(im, "n_frames", 1)))
        except Exception:  # noqa: BLE001 - not an image PIL knows: left to decode()
            return 0, 0, 1
        finally:
            Image.MAX_IMAGE_PIXELS = limit


class ImageDataModule(ShardedDataModule):
    """ImageNet-style folders ``root/{train_split,val_split}/CLASS/*``; ``test_dataloader`` uses the
    val split. Arguments: :class:`~datamodules.datamodule.ShardedDataModule`'s. Without a
    ``class_index`` the classes are the train split's class folders that hold images (sorted)."""

    root_hint = ROOT_HINT
    collate_train = staticmethod(collate_images)
    collate_eval = staticmethod(collate_images)

    def _read_classes(self) -> tuple[dict[str, int], None]:
        self._train_listing = list_split(check_split_dir(self.root, self.train_split))  # until setup uses it
        if self.class_index is not None:
            return load_class_index(self.class_index, self.root), None
        return {name: i for i, name in enumerate(sorted(self._train_listing))}, None

    def _split_exists(self, split: str) -> bool:
        return (self.root / split).is_dir()

    def eval_transform(self):
        return eval_transform(self.img_size, self.crop_pct)

    def _dataset(self, split: str, train: bool) -> ImageFolderDataset:
        listing = None
        if train:  # the listing read at construction, used once
            listing, self._train_listing = self._train_listing, None
        transform = self.train_transform() if train else self.eval_transform()
        return ImageFolderDataset(check_split_dir(self.root, split), self.class_to_idx, transform, train=train,
                                  listing=listing)
