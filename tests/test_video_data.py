"""Video data layer: real small H.264 MP4s written with PyAV, decoded through decord / PyAV."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import av
import decord  # noqa: F401  the test extra installs it: a missing one fails, never skips

from datamodules.clip_sampling import eval_clip_indices, train_clip_indices  # noqa: E402
from datamodules.collate import collate_video_eval, collate_video_train  # noqa: E402
from datamodules.loading import SampleKey  # noqa: E402
from abswin.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from datamodules.video_decoding import _read_pyav, read_frames  # noqa: E402
from datamodules.video_index import read_index  # noqa: E402
from recipe_data_modules import data_module  # noqa: E402

STEP = 6  # frame i = x-gradient (0..80) + STEP * i: the frame number reads back from the intensity


def frame_pattern(i: int, w: int, h: int) -> np.ndarray:
    grad = np.linspace(0, 80, w)[None, :].repeat(h, 0)
    return np.clip(grad + STEP * i, 0, 255).astype(np.uint8)[..., None].repeat(3, -1)


def write_video(path, num_frames: int, w: int, h: int, fps: int = 25) -> None:
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"crf": "0", "preset": "ultrafast", "g": "8"}
    for i in range(num_frames):
        for p in s.encode(av.VideoFrame.from_ndarray(frame_pattern(i, w, h), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


# (name, frames, w, h)
GOOD = [("a0", 30, 96, 72), ("a1", 20, 64, 64), ("b0", 10, 80, 112), ("b1", 30, 96, 72)]  # b0 too short, portrait


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    root = tmp_path_factory.mktemp("k400")
    (root / "videos").mkdir()
    for name, n, w, h in GOOD:
        write_video(root / "videos" / f"{name}.mp4", n, w, h)
    data = (root / "videos" / "a0.mp4").read_bytes()
    (root / "videos" / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (root / "videos" / "text.mp4").write_text("this is not a video\n")
    # train: spaces; val: commas (with a header)
    (root / "train.csv").write_text("videos/a0.mp4 0\nvideos/a1.mp4 0\nvideos/b0.mp4 1\nvideos/b1.mp4 1\n"
                                    "videos/trunc.mp4 0\nvideos/text.mp4 1\n")
    (root / "val.csv").write_text("path,label\nvideos/a0.mp4,0\nvideos/trunc.mp4,0\nvideos/b0.mp4,1\n"
                                  "videos/text.mp4,1\nvideos/b1.mp4,1\n")
    return root


def unnorm(x: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] uint8 as the loader gives it, or normalised as the model gets it -> [T, H, W]
    intensity (0..255), channel mean."""
    if not x.is_floating_point():
        return x.float().mean(0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return ((x * std + mean) * 255).mean(0)


def dm(root, **kw):
    args = dict(img_size=32, num_frames=4, sampling_rate=3, batch_size=8, eval_batch_size=None, num_workers=0,
                seed=0, repeated_sampling=1, num_temporal_views=5, num_spatial_views=3, decode_timeout=20)
    args.update(kw)
    m = data_module("video", root, **args)
    m.setup("fit")
    return m


# ---------------------------------------------------------------------------- index
def test_csv_spaces_commas_and_missing_root(kinetics, tmp_path):
    paths, labels = read_index(kinetics, "train")
    assert paths[0] == "videos/a0.mp4" and labels[:4] == ["0", "0", "1", "1"] and len(paths) == 6
    paths, labels = read_index(kinetics, "val")  # commas + header
    assert paths == ["videos/a0.mp4", "videos/trunc.mp4", "videos/b0.mp4", "videos/text.mp4", "videos/b1.mp4"]
    assert labels == ["0", "0", "1", "1", "1"]
    with pytest.raises(FileNotFoundError, match=r"data root not found: .*nope.*data\.root="):
        data_module("video", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"train\.csv.*data\.root="):
        data_module("video", tmp_path)
    msg = ""
    try:
        data_module("video", tmp_path)
    except FileNotFoundError as e:
        msg = str(e)
    assert "\n" not in msg


def test_folder_tree(kinetics, tmp_path):
    import shutil

    for split in ("train", "val"):
        for cls, names in (("cat", ["a0", "a1"]), ("dog", ["b1"])):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for n in names:
                shutil.copy(kinetics / "videos" / f"{n}.mp4", d / f"{n}.mp4")
    m = dm(tmp_path, num_temporal_views=1, num_spatial_views=1)
    assert m.classes == ["cat", "dog"] and m.num_classes == 2
    assert len(m.train_set) == 3 and m.train_set.labels.tolist() == [0, 0, 1]
    batch = collate_video_train([m.train_set[i] for i in range(3)])
    assert batch.images.shape == (3, 3, 4, 32, 32) and batch.labels.tolist() == [0, 0, 1]


# ---------------------------------------------------------------------------- decoding
def test_decode_frame_indices_and_pyav_fallback(kinetics):
    path = kinetics / "videos" / "a0.mp4"
    idx = np.array([0, 3, 7, 29, 12])
    for frames in (read_frames(path, lambda n: idx), _read_pyav(str(path), lambda n: idx)):
        assert frames.shape == (5, 72, 96, 3) and frames.dtype == np.uint8
        got = np.round(frames[:, :, 0].mean(axis=(1, 2)) / STEP).astype(int)  # x=0 column: STEP * i
        assert got.tolist() == idx.tolist()
    with pytest.raises(OSError, match="decord.*PyAV"):
        read_frames(kinetics / "videos" / "text.mp4", lambda n: np.arange(4))
    with pytest.raises(OSError):
        read_frames(kinetics / "videos" / "trunc.mp4", lambda n: np.arange(4))


def test_pyav_first_reads_the_same_frames(kinetics):
    path = kinetics / "videos" / "b1.mp4"
    idx = lambda n: np.array([1, 5, 9, 28])  # noqa: E731
    np.testing.assert_array_equal(read_frames(path, idx, decoder="pyav"), read_frames(path, idx))
    with pytest.raises(OSError, match="PyAV.*decord"):
        read_frames(kinetics / "videos" / "text.mp4", idx, decoder="pyav")
    with pytest.raises(ValueError, match="decoder='opencv' is not one of"):
        read_frames(path, idx, decoder="opencv")
    with pytest.raises(ValueError, match="data.decoder='opencv'"):
        data_module("video", kinetics, decoder="opencv")


def torchcodec_or_skip() -> None:
    """torchcodec (in the test extra) decodes with the system's FFmpeg libraries; where they are
    missing it cannot load, and only then are its tests skipped (.ci/run and the Dockerfile install
    FFmpeg)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, RuntimeError, OSError) as e:
        pytest.skip(f"torchcodec cannot load FFmpeg's libraries (apt-get install ffmpeg): {str(e)[:120]}")


def test_torchcodec_reads_decords_frames_and_falls_back_to_pyav(kinetics, monkeypatch):
    torchcodec_or_skip()
    import datamodules.video_decoding as video

    path = kinetics / "videos" / "b1.mp4"
    idx = lambda n: np.array([1, 5, 9, 28, 5])  # noqa: E731
    np.testing.assert_array_equal(read_frames(path, idx, decoder="torchcodec"), read_frames(path, idx))

    def broken(path, choose):
        raise RuntimeError("no FFmpeg")

    monkeypatch.setattr(video, "_read_torchcodec", broken)
    np.testing.assert_array_equal(read_frames(path, idx, decoder="torchcodec"), read_frames(path, idx))
    with pytest.raises(OSError, match="torchcodec: RuntimeError: no FFmpeg; PyAV"):
        read_frames(kinetics / "videos" / "text.mp4", idx, decoder="torchcodec")


@pytest.mark.slow
def test_torchcodec_frames_equal_decords_on_the_bundled_clips(tmp_path):
    """Every third frame of every clip of the video demo set, bit for bit."""
    torchcodec_or_skip()
    from datamodules.video_decoding import _read_decord, _read_torchcodec
    from datamodules.video_demo import build_video_demo_dataset

    clips = sorted(build_video_demo_dataset(tmp_path / "demo_video").rglob("*.mp4"))
    every_third = lambda n: np.arange(0, n, 3)  # noqa: E731
    differ = [c.name for c in clips if not np.array_equal(_read_decord(str(c), every_third),
                                                         _read_torchcodec(str(c), every_third))]
    assert len(clips) > 50 and differ == []


def test_decord_timeout_falls_back_to_pyav(kinetics, monkeypatch):
    import time

    import datamodules.video_decoding as video

    calls = []

    def hang(path, choose):
        calls.append(path)
        time.sleep(3)
        raise AssertionError("should have been abandoned")

    monkeypatch.setattr(video, "_read_decord", hang)
    before = video.num_abandoned_reads
    t0 = time.monotonic()
    frames = read_frames(kinetics / "videos" / "a1.mp4", lambda n: np.array([2, 4]), timeout=0.5)
    assert time.monotonic() - t0 < 2.5 and calls and video.num_abandoned_reads == before + 1
    assert np.round(frames[:, :, 0].mean(axis=(1, 2)) / STEP).astype(int).tolist() == [2, 4]


def test_clip_index_functions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        i = train_clip_indices(30, 4, 3, rng)
        assert (np.diff(i) == 3).all() and 0 <= i[0] <= 30 - 10
    assert train_clip_indices(5, 4, 3, rng).tolist() == [0, 3, 4, 4]  # padded with the last frame
    e = eval_clip_indices(30, 4, 3, 5)
    assert e.shape == (5, 4) and e[0, 0] == 0 and e[-1, -1] == 29 and (np.diff(e, axis=1) == 3).all()
    assert eval_clip_indices(30, 4, 3, 1)[0, 0] == 10  # centre


# ---------------------------------------------------------------------------- training
def test_train_clips_stride_same_crop_padding_and_skip(kinetics, caplog):
    m = dm(kinetics, repeated_sampling=2, mode="finetune", randaug_mstd=None, random_erasing=0.0)
    ds = m.train_set
    for index, (_, n, _, _) in enumerate(GOOD):
        clips, label, _ = ds[index]
        assert clips.shape == (2, 3, 4, 32, 32) and clips.dtype == torch.uint8  # normalised on the device
        for clip in clips:
            inten = unnorm(clip)  # [T, H, W]
            diff = inten - inten[0]  # uniform iff every frame got the same crop and flip
            # (x264 + bicubic rounding noise is a few levels; another crop/flip of the 0..80
            # gradient would differ by tens)
            assert (diff.amax(dim=(1, 2)) - diff.amin(dim=(1, 2))).abs().max() < 5
            steps = np.round(diff.mean(dim=(1, 2)).numpy() / STEP).astype(int)
            assert steps.tolist() == [0, 3, 6, 9]  # temporal stride = sampling_rate (b0: exactly fits)
    # a too-short video: 4 frames at rate 3 need 10 frames; 5-frame one pads with its last frame
    short_root = kinetics.parent / "short"
    short_root.mkdir(exist_ok=True)
    write_video(short_root / "s.mp4", 5, 64, 48)
    (short_root / "train.csv").write_text("s.mp4 0\n")
    s = dm(short_root, randaug_mstd=None, random_erasing=0.0, val_split=None).train_set
    clip = s[0][0][0]
    inten = unnorm(clip)
    assert np.round(((inten - inten[0]).mean(dim=(1, 2)) / STEP).numpy()).astype(int).tolist() == [0, 3, 4, 4]
    # corrupt ones: None, logged, counted; the collate drops them (reports them) and repeats labels
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        assert ds[4] == (None, 0, 4) and ds[5] == (None, 1, 5)
    assert ds.num_skipped == 2 and "trunc.mp4" in caplog.text and "text.mp4" in caplog.text
    batch = collate_video_train([ds[i] for i in range(6)])
    assert batch.images.shape == (8, 3, 4, 32, 32) and batch.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batch.clips_per_sample == 2 and batch.num_samples == 4 and batch.missing.tolist() == [4, 5]


def test_train_crop_shared_and_seeded(kinetics):
    m = dm(kinetics, batch_size=2, random_erasing=0.0)
    ds = m.train_set
    m.train_dataloader()  # the training loader hands the seed to the data set
    a = ds[SampleKey(0, 0)][0]
    torch.manual_seed(123)  # per-sample seeding: independent of the global RNG
    b = ds[SampleKey(0, 0)][0]
    assert torch.equal(a, b)
    assert not torch.equal(ds[SampleKey(0, 1)][0], a)  # another epoch, another crop
    # the workers' transform on [T, 3, H, W]: identical frames stay identical (same crop and flip
    # for every frame), over many draws; RandAugment: tests/test_randaugment.py
    t = m.train_transform()
    frame = torch.from_numpy(frame_pattern(5, 96, 72)).permute(2, 0, 1)
    frame[1] = torch.arange(72)[:, None].expand(72, 96).to(torch.uint8)  # 2-D structure
    torch.manual_seed(0)
    for _ in range(20):
        out = t(frame.expand(4, 3, 72, 96).clone())
        assert out.shape == (4, 3, 32, 32) and torch.allclose(out, out[:1].expand_as(out))


def test_train_loader_with_worker(kinetics):
    m = dm(kinetics, batch_size=3, num_workers=1, randaug_mstd=None)
    batches = list(m.train_dataloader())
    assert len(batches) == 2  # 6 videos, drop_last
    assert sum(len(b.images) for b in batches) == 4  # the 2 corrupt ones skipped
    assert all(b.images.shape[1:] == (3, 4, 32, 32) for b in batches)


# ---------------------------------------------------------------------------- evaluation
def test_eval_multiview_and_missing_reported(kinetics, caplog):
    m = dm(kinetics, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        batches = list(m.val_dataloader())
    assert len(batches) == 1
    batch = batches[0]
    views, labels, index, missing = batch.views, batch.labels, batch.video_index, batch.missing
    assert batch.images is None and views.shape == (3, 15, 3, 4, 32, 32)
    assert index.tolist() == [0, 2, 4] and labels.tolist() == [0, 1, 1]
    assert missing.tolist() == [1, 3]  # reported, not replaced
    assert m.val_set.num_skipped == 2 and "MISSING" in caplog.text
    # temporal views: evenly spaced starts, stride 3 inside each view (a0: 30 frames -> starts 0..20)
    v = views[0].view(5, 3, 3, 4, 32, 32)
    starts = []
    for t in range(5):
        inten = unnorm(v[t, 1])  # centre crop
        d = (inten - inten[0]).mean(dim=(1, 2)) / STEP
        assert np.round(d.numpy()).astype(int).tolist() == [0, 3, 6, 9]
        starts.append(inten[0].mean().item())
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert round((starts[-1] - starts[0]) / STEP) == 20
    # spatial views: left < centre < right along the x gradient (landscape), same frames
    left, centre, right = (unnorm(v[0, s]).mean().item() for s in range(3))
    assert left < centre < right
    # a short video (b0: 10 frames = one clip) -> all temporal views equal
    v2 = views[1].view(5, 3, 3, 4, 32, 32)
    assert torch.allclose(v2[0], v2[4], atol=1e-4)


def test_eval_collate_all_missing():
    batch = collate_video_eval([(None, 0, 7)])
    assert batch.views.shape[0] == 0 and batch.missing.tolist() == [7] and batch.video_index.numel() == 0
    assert batch.num_samples == 0


@pytest.mark.parametrize("arg", ["num_frames", "sampling_rate", "repeated_sampling", "num_temporal_views",
                                 "num_spatial_views"])
def test_nonpositive_clip_settings_are_one_line_errors(kinetics, arg):
    with pytest.raises(ValueError, match=f"data.{arg} must be >= 1, got 0"):
        data_module("video", kinetics, **{arg: 0})


def test_batch_larger_than_the_data_set_is_a_clear_error(kinetics):
    with pytest.raises(ValueError, match="data.batch_size=64 is larger than the 6 training samples"):
        dm(kinetics, batch_size=64).train_dataloader()
