"""The data modules on real (small) files: shapes, eval transform, class index, corrupt images,
one-line errors, global -> per-device batch, eval sharding, the bundled MNIST demo set."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from abswin.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DemoDataModule,
    ImageDataModule,
    ResumableSampler,
    ShardSampler,
    build_demo_dataset,
    eval_transform,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

CLASSES = ("cat", "dog")


def _save(path: Path, rng, size=(40, 56), fmt="JPEG", mode="RGB") -> None:
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, fmt)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,dog}: JPEG, jpg, PNG and grayscale images of varying sizes, plus a
    corrupt (random bytes) and a truncated JPEG in train."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 3)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                ext, fmt = [("JPEG", "JPEG"), ("jpg", "JPEG"), ("png", "PNG")][i % 3]
                _save(d / f"{c}_{i}.{ext}", rng, size=(30 + 7 * i, 60 - 3 * i), fmt=fmt,
                      mode="L" if i == 1 else "RGB")
    (root / "train/cat/corrupt.JPEG").write_bytes(rng.bytes(2000))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "train/dog/truncated.JPEG").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "train/dog/notes.txt").write_text("not an image")
    return root


def _dm(root, **kw) -> ImageDataModule:
    kw = {"img_size": 32, "batch_size": 2, "num_workers": 0, **kw}
    return ImageDataModule(str(root), **kw)


def test_train_and_val_batches_and_corrupt_images_are_skipped(folder, caplog):
    caplog.set_level(logging.WARNING, logger="abswin.data")
    dm = _dm(folder)
    assert dm.num_classes == 2 and dm.classes == list(CLASSES)
    dm.setup("fit")
    assert len(dm.train_set) == 14 and len(dm.val_set) == 6  # notes.txt is not an image

    seen = 0
    for images, labels in dm.train_dataloader():  # the whole epoch completes
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
        seen += images.shape[0]
    assert seen == 12 and dm.num_skipped == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "abswin.data"]
    for bad in ("corrupt.JPEG", "truncated.JPEG"):
        hits = [m for m in lines if bad in m]
        assert len(hits) == 1 and "\n" not in hits[0] and str(folder) in hits[0]

    images, labels, missing = next(iter(dm.val_dataloader()))  # evaluation batches report unreadable images
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0] and missing.tolist() == []
    all_labels = torch.cat([y for _, y, _ in dm.val_dataloader()])
    assert all_labels.tolist() == [0, 0, 0, 1, 1, 1]
    # normalised with the ImageNet statistics: a gray-ish random image is roughly centred
    assert -2.2 < images.min() and images.max() < 2.7


def test_pretrain_mode_val_optional(folder):
    import shutil

    shutil.rmtree(folder / "val")
    dm = _dm(folder, mode="pretrain")
    dm.setup("fit")
    assert dm.val_dataloader() == []
    assert dm.scale == (0.2, 1.0)
    names = [type(t).__name__ for t in dm.train_set.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    ft = [type(t).__name__ for t in _dm(folder).train_transform().transforms]
    assert ft == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugmentMstd", "ToDtype", "Normalize",
                  "RandomErasing"]


def test_eval_transform_resize_center_crop(folder):
    # 100x200 image, white 50x50 centre on black: crop_pct 0.5 at 20 px resizes the shorter side to
    # 40 and crops the central 20x20, i.e. exactly the white square
    x = torch.zeros(3, 100, 200, dtype=torch.uint8)
    x[:, 25:75, 75:125] = 255
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    t = eval_transform(20, crop_pct=0.5)
    y = t(x)
    assert y.shape == (3, 20, 20) and y.dtype == torch.float32
    assert torch.equal(y, t(x))  # deterministic
    assert torch.allclose(y[:, 2:-2, 2:-2], white[:, None, None].expand(3, 16, 16), atol=1e-5)
    # crop_pct 1.0: resize to 20 (the centre 100x100 of the original), the square is the middle half
    y = eval_transform(20, crop_pct=1.0)(x)
    assert torch.allclose(y[:, 0, 0], black, atol=1e-5) and torch.allclose(y[:, 10, 10], white, atol=1e-5)
    assert int(224 / 0.875) == 256  # the standard ImageNet numbers


@pytest.mark.parametrize("kind", ["json", "txt"])
def test_class_index_file(folder, tmp_path, kind):
    if kind == "json":
        path = tmp_path / "classes.json"
        path.write_text(json.dumps({"dog": 0, "cat": 1}))
    else:
        path = tmp_path / "classes.txt"
        path.write_text("dog\ncat\n")
    dm = _dm(folder, class_index=str(path))
    assert dm.num_classes == 2 and dm.classes == ["dog", "cat"]
    dm.setup("validate")
    labels = {p.decode().split("/")[0]: int(y) for p, y in zip(dm.val_set.paths, dm.val_set.labels)}
    assert labels == {"dog": 0, "cat": 1}


def _one_line_error(fn, path):
    with pytest.raises(FileNotFoundError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "data.root" in msg


def test_missing_or_empty_root_is_a_one_line_error(tmp_path):
    _one_line_error(lambda: _dm(tmp_path / "nope"), tmp_path / "nope")
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")  # no train/ folder
    (tmp_path / "train").mkdir()
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")  # no class folders
    (tmp_path / "train" / "cat").mkdir()  # a class folder without images is no class
    _one_line_error(lambda: _dm(tmp_path), tmp_path / "train")


def test_global_batch_to_per_device(folder):
    dm = _dm(folder, batch_size=8)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=1)
    dm.setup("fit")
    assert dm.per_device_batch_size == 2
    loader = dm.train_dataloader()
    assert loader.batch_size == 2
    assert isinstance(loader.sampler, ResumableSampler)
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    assert len(loader) == loader.sampler.batches_per_epoch == len(dm.train_set) // (2 * 2)  # full batches
    val = dm.val_dataloader()
    assert isinstance(val.sampler, ShardSampler) and list(val.sampler) == [1, 3, 5]

    dm = _dm(folder, batch_size=6)
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, global_rank=0)
    with pytest.raises(ValueError, match=r"batch_size=6.*\b4\b") as exc:
        dm.setup("fit")
    assert "\n" not in str(exc.value)

    dm = _dm(folder, batch_size=8)  # no trainer: the global batch on one device
    dm.setup("fit")
    assert dm.per_device_batch_size == 8


@pytest.mark.parametrize("n", [0, 1, 10, 11])
def test_shard_sampler_covers_each_index_once(n):
    shards = [list(ShardSampler(n, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(n))
    assert not set(shards[0]) & set(shards[1])
    assert [len(ShardSampler(list(range(n)), 2, r)) for r in range(2)] == [len(s) for s in shards]


def test_loader_is_reproducible_with_seed(folder):
    def first_batch(seed):
        dm = _dm(folder, seed=seed, num_workers=1, persistent_workers=False)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    (a, ya), (b, yb) = first_batch(3), first_batch(3)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, first_batch(4)[0])


def test_demo_set_builds_once(tmp_path):
    root = build_demo_dataset(tmp_path / "demo")
    for split, n in (("train", 4000), ("val", 1000)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        files = list((root / split).glob("*/*.png"))
        assert len(files) == n
        assert all(len(list((root / split / c).iterdir())) == n // 10 for c in classes)  # stratified
    with Image.open(files[0]) as im:
        assert im.size == (28, 28) and im.mode == "L"
    marker = root / ".complete.json"
    stamps = (marker.stat().st_mtime_ns, files[0].stat().st_mtime_ns)
    assert build_demo_dataset(root) == root
    assert (marker.stat().st_mtime_ns, files[0].stat().st_mtime_ns) == stamps  # not rewritten

    dm = DemoDataModule(root=str(root), num_workers=0)
    assert dm.num_classes == 10
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 3, 64, 64) and labels.dtype == torch.int64
    raw = images * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 0], raw[:, 2], atol=1e-5)


def test_demo_half_written_folder_is_rebuilt(tmp_path):
    root = tmp_path / "demo"
    (root / "train" / "3").mkdir(parents=True)
    (root / "train" / "3" / "junk.png").write_bytes(b"half")
    build_demo_dataset(root)
    assert not (root / "train" / "3" / "junk.png").exists()
    assert len(list(root.glob("*/*/*.png"))) == 5000
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # no temp folders left behind
