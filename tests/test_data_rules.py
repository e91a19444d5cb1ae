"""The data rules (docs/data.md), enforced when the index is built, on real files:
each violation is a one-line error naming the file (and line); nothing is silently remapped,
dropped or left to fail after an epoch of work."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageDataModule, decode
from recipe_data_modules import data_module  # noqa: E402
from recipe_modules import finetune_module  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def _one_line(exc_info, *parts) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg


def _jpeg(path: Path, value: int = 128, size=(40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 60, 200 - value // 2)).save(path, "JPEG")


def _images(root: Path, split: str, per_class: dict[str, int]) -> None:
    for c, (name, n) in enumerate(per_class.items()):
        for i in range(n):
            _jpeg(root / split / name / f"{i}.jpg", value=80 * c + 10 * i)


def _dm(root: Path, **kw) -> ImageDataModule:
    return data_module("imagefolder", root, **{"img_size": 32, "batch_size": 2, "num_workers": 0, **kw})


# ---------------------------------------------------------------------------- video CSVs
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from datamodules.video_demo import write_mp4

    root = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_mp4(root / f"{name}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (root / "with space").mkdir()
    shutil.copy(root / "c.mp4", root / "with space" / "c.mp4")
    (root / "text.mp4").write_text("not a video\n")
    return root


def _video_dm(root: Path, train: str, val: str | None = None, **kw):
    (root / "train.csv").write_text(train)
    if val is not None:
        (root / "val.csv").write_text(val)
    elif (root / "val.csv").exists():
        (root / "val.csv").unlink()
    args = dict(img_size=32, num_frames=2, sampling_rate=1, batch_size=1, num_workers=0,
                num_temporal_views=1, num_spatial_views=1, val_split="val" if val is not None else None)
    return data_module("video", root, **{**args, **kw})


def test_csv_lines_must_be_path_label(videos, caplog):
    from datamodules.video_index import read_index

    # one line with three fields is an error naming it, not a switch to class-name mode
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "a.mp4 2\nb.mp4 10\nc.mp4 1 extra\n")
    _one_line(exc, f"{videos / 'train.csv'}:3", "c.mp4 1 extra")
    # without it the integer labels stay as written: 2 and 10, not class indices of sorted names
    dm = _video_dm(videos, "a.mp4 2\nb.mp4 10\n")
    dm.setup("fit")
    assert dm.num_classes == 11 and dm.train_set.labels.tolist() == [2, 10]
    # a comma separates a path with spaces from its label
    assert read_index(videos, "train") == (["a.mp4", "b.mp4"], ["2", "10"])
    (videos / "train.csv").write_text("with space/c.mp4, 1\n")
    assert read_index(videos, "train") == (["with space/c.mp4"], ["1"])
    # a known header is skipped with a log line
    with caplog.at_level(logging.INFO, logger="datamodules"):
        dm = _video_dm(videos, "video_path label_id\na.mp4 0\nb.mp4 1\n")
    assert dm.num_classes == 2 and "header line 'video_path label_id' skipped" in caplog.text
    # an unknown header, and mixed integer and class-name labels, are errors naming the line
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "clip,category\na.mp4,0\nb.mp4,1\n")
    _one_line(exc, f"{videos / 'train.csv'}:1", "unknown header")
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "# comment\na.mp4 0\nb.mp4 cat\nc.mp4 1\n")
    _one_line(exc, f"{videos / 'train.csv'}:3", "'cat'", "mixes integer and class-name labels")


def test_labels_out_of_range(videos, tmp_path):
    # the val split's labels must be classes of the train split
    dm = _video_dm(videos, "a.mp4 0\nb.mp4 1\n", "a.mp4 1\nb.mp4 5\n")
    with pytest.raises(ValueError) as exc:
        dm.setup("fit")
    _one_line(exc, f"{videos / 'val.csv'}:2", "label 5", "[0, 2)")
    # negative, or not below a given num_classes: already when the module is built
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "a.mp4 0\nb.mp4 -1\n")
    _one_line(exc, f"{videos / 'train.csv'}:2", "label -1", "[0, 1)")
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "a.mp4 0\nb.mp4 2\n", num_classes=2)
    _one_line(exc, f"{videos / 'train.csv'}:2", "label 2", "[0, 2)", "data.num_classes")
    # class names not in the class index
    index = tmp_path / "classes.txt"
    index.write_text("cat\ndog\n")
    with pytest.raises(ValueError) as exc:
        _video_dm(videos, "a.mp4 cat\nb.mp4 cow\n", class_index=str(index))
    _one_line(exc, f"{videos / 'train.csv'}:2", "'cow'", str(index))


def test_unreadable_video_split_is_an_error(videos):
    dm = _video_dm(videos, "a.mp4 0\nb.mp4 1\n", "text.mp4 0\nmissing.mp4 1\n")
    with pytest.raises(ValueError) as exc:
        dm.setup("fit")
    _one_line(exc, "all 2 files of", videos / "val.csv", "unreadable")


# ---------------------------------------------------------------------------- image folders
def test_empty_and_symlinked_class_folders(tmp_path, caplog):
    root = tmp_path / "data"
    _images(root, "train", {"cat": 2, "dog": 2})
    _images(tmp_path / "elsewhere", "x", {"fox": 2})
    (root / "train" / "empty").mkdir()
    (tmp_path / "elsewhere" / "x" / "void").mkdir()
    (root / "train" / "fox").symlink_to(tmp_path / "elsewhere" / "x" / "fox")  # a symlinked class: fine
    (root / "train" / "void").symlink_to(tmp_path / "elsewhere" / "x" / "void")  # symlinked and empty
    (root / "train" / "loopdir").symlink_to(root / "train" / "loopdir")  # neither class nor crash
    (root / "train" / "cat" / "loop.jpg").symlink_to(root / "train" / "cat" / "loop.jpg")
    _images(root, "val", {"cat": 1, "dog": 1, "fox": 1})
    caplog.set_level(logging.WARNING, logger="datamodules")
    dm = _dm(root, batch_size=7)
    assert dm.classes == ["cat", "dog", "fox"] and dm.num_classes == 3  # empty folders are no classes
    warnings = [r.getMessage() for r in caplog.records if "no images" in r.getMessage()]
    assert len(warnings) == 1 and "empty" in warnings[0] and "void" in warnings[0] and "fox" not in warnings[0]
    dm.setup("fit")
    assert len(dm.train_set) == 7  # the loop is listed: reading it fails, logged and counted
    assert sum(b.images.shape[0] for b in dm.train_dataloader()) == 6 and dm.num_skipped == 1
    assert "loop.jpg" in caplog.text


def test_multi_frame_images_use_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (30, 20), (v, v, v)) for v in (0, 120, 240)]
    for ext in ("gif", "tif"):
        frames[0].save(tmp_path / f"anim.{ext}", save_all=True, append_images=frames[1:])
        img = decode((tmp_path / f"anim.{ext}").read_bytes())
        assert img.shape == (3, 20, 30) and int(img.max()) == 0  # the first (black) frame
    root = tmp_path / "data"
    _images(root, "train", {"cat": 2, "dog": 2})
    _images(root, "val", {"cat": 1, "dog": 1})
    frames[0].save(root / "val" / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    dm = _dm(root, batch_size=4)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (3, 3, 32, 32) and batch.labels.tolist() == [0, 1, 1] and batch.missing.numel() == 0


@pytest.mark.parametrize("n", [3, 20])
def test_unreadable_image_split_is_an_error(tmp_path, n):
    root = tmp_path / "data"
    _images(root, "train", {"cat": 2, "dog": 2})
    (root / "val" / "cat").mkdir(parents=True)
    for i in range(n):
        (root / "val" / "cat" / f"{i:02d}.jpg").write_bytes(b"not a jpeg" * (i + 1))
    dm = _dm(root)
    with pytest.raises(ValueError) as exc:
        dm.setup("fit")
    which = "all 3 files of" if n == 3 else "all 16 files probed (spread over 20) of"
    _one_line(exc, which, root / "val", "unreadable")


def test_unreadable_val_images_count_as_missing(tmp_path):
    root = tmp_path / "data"
    _images(root, "train", {"c0": 4, "c1": 4, "c2": 4})
    _images(root, "val", {"c0": 2, "c1": 2, "c2": 2})
    (root / "val" / "c0" / "1.jpg").write_bytes(b"corrupt")
    (root / "val" / "c2" / "0.jpg").write_bytes((root / "val" / "c1" / "0.jpg").read_bytes()[:100])
    dm = _dm(root, img_size=64, batch_size=4, randaug_mstd=None, random_erasing=0.0)
    module = finetune_module("hiera_atto_224", {"img_size": 64}, num_classes=3, lr=1e-3, batch_size=4,
                            mixup=0.0, cutmix=0.0, warmup_epochs=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="2 video.s. or image.s. could not be decoded"):
        metrics = trainer.validate(module, datamodule=dm)[0]
    assert (metrics["val/samples"], metrics["val/missing"]) == (4, 2)
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
