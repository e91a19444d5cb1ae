"""The data-preparation command (python -m datamodules.prepare): real videos and JPEGs, a broken file
of each, a resumed run, and the shipped configs training on what it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

from launching import write_image_folder, write_video_set
from recipe_data_modules import data_module

ROOT = Path(__file__).resolve().parents[1]


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datamodules.prepare", *args, "--workers", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def video_size(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        return c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height, frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = write_video_set(tmp_path_factory.mktemp("videos"))  # 48x64, 12 frames
    (root / "train7.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")  # broken
    return root


@pytest.mark.slow
def test_videos_are_reencoded_checked_indexed_and_train_as_they_are(videos, tmp_path):
    out = tmp_path / "prepared"
    done = prepare(str(videos), str(out), "--short-side", "24")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared 11 of 12 video files" in done.stdout and "1 broken" in done.stdout
    assert video_size(out / "train0.mp4") == (32, 24, 12)  # short side 24, aspect and every frame kept
    lines = (out / "train.csv").read_text().split("\n")
    assert lines[:2] == ["train0.mp4 0", "train1.mp4 1"] and "train7.mp4 1" not in lines
    broken = (out / "broken.csv").read_text().splitlines()
    assert len(broken) == 2 and broken[1].startswith(f"train,{videos / 'train7.mp4'},")
    dm = data_module("video", out, img_size=16, num_frames=4, sampling_rate=2, batch_size=2, num_workers=0,
                     eval_batch_size=2, num_temporal_views=1, num_spatial_views=1)
    dm.setup("fit")
    batch = dm.model_input(next(iter(dm.train_dataloader())), epoch=0)
    assert batch.images.shape[1:] == (3, 4, 16, 16) and batch.images.dtype == torch.float32


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(videos, tmp_path):
    out = tmp_path / "prepared"
    assert prepare(str(videos), str(out), "--short-side", "24").returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    (out / "val2.mp4").unlink()  # as if the run was killed before this file was done
    again = prepare(str(videos), str(out), "--short-side", "24")
    assert again.returncode == 0 and "(10 done before)" in again.stdout, again.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name != "val2.mp4")  # not redone
    assert (out / "val2.mp4").is_file() and "val2.mp4 0" in (out / "val.csv").read_text()


@pytest.mark.slow
def test_images_are_resized_checked_and_train_as_they_are(tmp_path):
    src = write_image_folder(tmp_path / "images", train_per_class=4, size=(40, 48))
    (src / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "prepared"
    done = prepare(str(src), str(out), "--short-side", "20")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 broken" in done.stdout and not (out / "train" / "class0" / "broken.jpg").exists()
    written = sorted(out.glob("train/*/*.jpg"))
    assert len(written) == 12 and all(Image.open(p).size == (24, 20) for p in written)
    dm = data_module("imagefolder", out, img_size=16, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.classes == ["class0", "class1", "class2"] and len(dm.train_set) == 12


def test_bad_arguments_are_one_line(tmp_path):
    missing = prepare(str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: source data set not found: {tmp_path / 'nothing'}"]
    same = prepare(str(tmp_path), str(tmp_path))
    assert same.returncode == 2 and "is the source" in same.stderr
