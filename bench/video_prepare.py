"""Clips per second per loader worker: decord vs torchcodec, on original videos vs the same videos
after ``python -m datamodules.prepare`` (short side 320, a keyframe a second).

Originals are generated like YouTube uploads (1280x720, 25 fps, a keyframe every 10 s, libx264
veryfast crf 23: ``bench/clips.py``'s moving texture) unless ``--video-dir`` holds videos. Each read
is one training clip (16 frames, 4 apart, ``train_clip_indices``) by one thread, as a loader worker
reads it; the four (decoder, files) pairs read the same windows, interleaved, order alternating.

    python bench/video_prepare.py
    python bench/video_prepare.py --videos 2 --seconds 3 --reads 4     # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from datamodules.clip_sampling import train_clip_indices  # noqa: E402
from datamodules.prepare import prepare  # noqa: E402
from datamodules.video_decoding import _read_decord, _read_torchcodec  # noqa: E402

from clips import FPS, find_videos, make_video, video_info  # noqa: E402
from common import table, write_results  # noqa: E402

T, RATE = 16, 4  # a Kinetics training clip: 16 frames, 4 apart
READERS = {"decord": _read_decord, "torchcodec": _read_torchcodec}


def originals(folder: Path, video_dir: Path | None, count: int, seconds: float) -> list[Path]:
    """Videos to prepare, under ``folder/train/clips`` (the layout ``datamodules.prepare`` reads)."""
    target = folder / "train" / "clips"
    target.mkdir(parents=True, exist_ok=True)
    found = find_videos(video_dir, count) if video_dir is not None else []
    for k, path in enumerate(found):
        (target / f"{k:03d}{path.suffix}").symlink_to(path.resolve())
    for k in range(len(found), count):
        make_video(target / f"{k:03d}.mp4", k, int(round(seconds * FPS)), 1280, 720, 10 * FPS)
    return sorted(target.iterdir())


def clips_per_second(files: dict[str, list[Path]], reads: int) -> dict[str, float]:
    """(decoder files) -> clips per second, the median over ``reads`` interleaved reads (one warm-up)."""
    times: dict[str, list[float]] = {}
    for r in range(reads + 1):
        pairs = [(d, f) for d in READERS for f in files]
        for decoder, which in (pairs if r % 2 == 0 else pairs[::-1]):
            path = str(files[which][r % len(files[which])])
            choose = lambda n, r=r: train_clip_indices(n, T, RATE, np.random.default_rng(r))  # noqa: E731
            started = time.perf_counter()
            READERS[decoder](path, choose)
            if r:
                times.setdefault(f"{decoder} {which}", []).append(time.perf_counter() - started)
    return {k: 1 / statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video-dir", type=Path, default=None, help="your own videos instead of generated ones")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0, help="length of generated videos")
    p.add_argument("--reads", type=int, default=24, help="timed reads per (decoder, files) pair")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a loader worker
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "original", Path(tmp) / "prepared"
        files = {"original": originals(src, args.video_dir, args.videos, args.seconds)}
        started = time.perf_counter()
        done = prepare(src, dst, "video", 320, workers=os.cpu_count() or 1, progress=False)
        prepare_s = time.perf_counter() - started
        files["prepared"] = sorted((dst / "train" / "clips").iterdir())
        info = {k: video_info(v) for k, v in files.items()}
        speed = clips_per_second(files, args.reads)
    rows = [[name, speed[name], speed[name] / speed["decord original"]] for name in speed]
    print(f"\n{T}x{RATE} training clips, one thread; original {info['original']['sizes']}, "
          f"prepared {info['prepared']['sizes']} (prepared in {prepare_s:.1f} s, {done['broken']} broken)")
    table(["decoder, files", "clips/s per worker", "vs decord on the originals"], rows)
    if args.json:
        write_results(args.json, {"settings": {"videos": args.videos, "seconds": args.seconds, "reads": args.reads,
                                               "frames": T, "rate": RATE, "video_dir": bool(args.video_dir)},
                                  "videos": info, "prepare_s": prepare_s,
                                  "clips_per_s": speed}, __file__, argv)


if __name__ == "__main__":
    main()
