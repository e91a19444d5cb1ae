"""The videos that ``bench/video_loader.py`` reads: found in a folder, or generated and cached.

Generated videos are meant to cost a decoder what real footage does: a panning multi-scale
texture plus a moving textured disc, H.264 (libx264 veryfast crf 23, 25 fps), about 0.57 Mbit/s
at 568x320 (a flat colour would decode for free). :func:`video_info` reads the resolution and
bit rate to print, so that a reader compares them with their own files.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.video_index import VIDEO_EXTENSIONS

FPS = 25


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """[h, w, 3] float noise in [0, 1] with features about ``cell`` px wide (bicubic upsampling)."""
    low = torch.from_numpy(rng.random((1, 3, h // cell + 2, w // cell + 2), dtype=np.float32))
    return F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()


def make_video(path: Path, seed: int, frames: int, width: int, height: int, gop: int) -> None:
    """One H.264 MP4: a multi-scale texture panning 3 px/frame plus a textured disc on its own path,
    so that the encoder spends real bits on motion and detail (a flat colour would decode for free)."""
    import av

    rng = np.random.default_rng(seed)
    speed, obj = 3, 128
    bh, bw = height + speed * frames, width + speed * frames
    texture = 0.5 * _smooth_noise(rng, bh, bw, 64) + 0.35 * _smooth_noise(rng, bh, bw, 12) + 0.15 * _smooth_noise(rng, bh, bw, 3)
    texture = (np.clip(texture, 0, 1) * 255).astype(np.uint8)
    patch = (_smooth_noise(rng, obj, obj, 8) * 255).astype(np.uint8)
    yy, xx = np.mgrid[:obj, :obj]
    disc = (yy - obj / 2) ** 2 + (xx - obj / 2) ** 2 < (obj / 2 - 4) ** 2
    tmp = path.with_suffix(".part.mp4")  # renamed when complete: an interrupted run leaves no half file
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast", "g": str(gop)}
        for i in range(frames):
            f = texture[speed * i // 2:speed * i // 2 + height, speed * i:speed * i + width].copy()
            oy = int((height - obj) * (0.5 + 0.5 * np.sin(i / 17 + seed)))
            ox = int((width - obj) * (0.5 + 0.5 * np.sin(i / 29 + 2 * seed)))
            f[oy:oy + obj, ox:ox + obj][disc] = patch[disc]
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    tmp.rename(path)


def find_videos(folder: Path, limit: int) -> list[Path]:
    """Up to ``limit`` videos below ``folder`` (sorted; half-written generated ones skipped)."""
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS
                   and not p.name.endswith(".part.mp4") and p.is_file())
    return found[:limit]


def get_videos(video_dir: Path | None, count: int, seconds: float, gop: int) -> tuple[list[Path], str]:
    """``count`` videos from ``video_dir``, or generated there (default: a cache folder in the temp
    dir) where it holds none; and a line saying which."""
    found = find_videos(video_dir, count) if video_dir is not None else []
    if found:
        return found, f"from {video_dir}"
    frames = int(round(seconds * FPS))
    width, height = 568, 320
    folder = video_dir or Path(tempfile.gettempdir()) / "abswin_bench_videos" / f"{width}x{height}_{frames}f_g{gop}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    paths, made = [], 0
    for k in range(count):
        path = folder / f"clip{k:03d}.mp4"
        if not path.exists():
            make_video(path, k, frames, width, height, gop)
            made += 1
        paths.append(path)
    how = f"generated in {time.perf_counter() - t:.1f} s" if made else "cached"
    return paths, f"generated (libx264 veryfast crf 23, GOP {gop}; {how}) in {folder}"


def video_info(paths: list[Path]) -> dict:
    """Resolution, fps, frames and bit rate (metadata only) of the videos used."""
    import av

    sizes, rates, frames, kbps = set(), set(), [], []
    for p in paths:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            sizes.add(f"{s.width}x{s.height}")
            rates.add(round(float(s.average_rate or 0), 2))
            frames.append(int(s.frames or 0))
            seconds = float(c.duration or 0) / 1e6
            kbps.append(p.stat().st_size * 8 / 1e3 / seconds if seconds else 0.0)
    return {"count": len(paths), "sizes": sorted(sizes), "fps": sorted(rates),
            "frames_median": statistics.median(frames), "kbps_median": statistics.median(kbps)}
