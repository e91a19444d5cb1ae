"""Prepare a data set for fast loading: ``python -m datamodules.prepare SRC DST``.

Decoding is what loader workers spend their time on (docs/benchmarks.md), and Kinetics' originals
are large and often broken. This writes a copy that trains with the same config (``data.root=DST``):

* **videos** (a Kinetics-style root: ``SPLIT.csv`` or ``SPLIT/CLASS/*.mp4``): each re-encoded to
  H.264 with a short side of ``--short-side`` (320; never enlarged) and a keyframe every second (quick
  seeks), listed with its label in ``DST/SPLIT.csv``;
* **images** (an ImageNet-style ``SPLIT/CLASS/*.JPEG`` folder): copied, or with ``--short-side``
  resized (bicubic, antialiased) and written as JPEG, in the same layout.

Every written file is decoded again before it counts. Files that cannot be read are left out and
listed in ``DST/broken.csv`` (split, path, error). The work runs on ``--workers`` processes with a
progress bar and is resumable: outputs are written under a temporary name and renamed when checked,
so a killed run, run again, skips what is done. The index files are written last.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import numpy as np

__all__ = ["prepare", "prepare_image", "prepare_video"]

SPLITS = ("train", "val", "test")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def prepare_video(src: str, dst: str, short_side: int, crf: int) -> str | None:
    """Re-encode video ``src`` to ``dst`` (H.264, short side at most ``short_side``, a keyframe a
    second), check that it decodes; None, or why it failed (nothing is left at ``dst`` then)."""
    import av

    from .video_decoding import read_frames

    out = Path(dst)
    tmp = _temporary(out)
    try:
        with av.open(src) as source:
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25  # a Fraction: 30000/1001 stays exact
            h, w = stream.codec_context.height, stream.codec_context.width
            scale = min(1.0, short_side / min(h, w))
            size = (max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2))
            out.parent.mkdir(parents=True, exist_ok=True)
            frames = 0
            with av.open(str(tmp), "w", format="mp4") as target:
                encoder = target.add_stream("libx264", rate=rate)
                encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], "yuv420p"
                encoder.codec_context.gop_size = max(1, round(float(rate)))
                encoder.options = {"crf": str(crf), "preset": "veryfast"}
                for frame in source.decode(stream):
                    rgb = frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
                    target.mux(encoder.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                    frames += 1
                target.mux(encoder.encode())
        if frames == 0:
            raise OSError("no frames")
        read_frames(tmp, lambda n: np.array([0, n - 1]), 60.0)  # the copy decodes, first to last frame
        os.replace(tmp, out)
        return None
    except Exception as e:  # noqa: BLE001 - any failure: reported in broken.csv, never fatal
        tmp.unlink(missing_ok=True)
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def prepare_image(src: str, dst: str, short_side: int | None, quality: int) -> str | None:
    """Copy image ``src`` to ``dst`` after checking that it decodes, or (``short_side``) resize it
    and write it as JPEG; None, or why it failed."""
    from torchvision.io import encode_jpeg
    from torchvision.transforms import v2

    from .image_folder import read_image
    from .transforms import BICUBIC, decode

    out = Path(dst)
    tmp = _temporary(out)
    try:
        image = read_image(Path(src))  # with the loader's limits: no pipes, no decompression bombs
        out.parent.mkdir(parents=True, exist_ok=True)
        if short_side and min(image.shape[-2:]) > short_side:
            small = v2.functional.resize(image, short_side, interpolation=BICUBIC, antialias=True)
            tmp.write_bytes(encode_jpeg(small.contiguous(), quality=quality).numpy().tobytes())
        else:
            shutil.copyfile(src, tmp)
        decode(tmp.read_bytes())  # the copy decodes
        os.replace(tmp, out)
        return None
    except Exception as e:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def video_jobs(src: Path, dst: Path) -> tuple[list[tuple], dict[str, list[tuple[str, str]]]]:
    """(jobs ``(split, source path, output path)``, the index ``{split: [(output rel path, label)]}``)."""
    from .video_index import read_split

    jobs, index = [], {}
    for split in SPLITS:
        try:
            found = read_split(src, split)
        except FileNotFoundError:
            continue
        index[split] = []
        for path, label in zip(found.paths, found.labels):
            source = Path(path) if Path(path).is_absolute() else src / path
            rel = (Path(split) / Path(path).name if Path(path).is_absolute() else Path(path)).with_suffix(".mp4")
            jobs.append((split, str(source), str(dst / rel)))
            index[split].append((rel.as_posix(), label))
    return jobs, index


def image_jobs(src: Path, dst: Path, short_side: int | None) -> list[tuple]:
    from .image_folder import list_split

    jobs = []
    for split in SPLITS:
        if not (src / split).is_dir():
            continue
        for name, files in list_split(src / split).items():
            for f in files:
                out = Path(f).with_suffix(".jpg") if short_side else Path(f)
                jobs.append((split, str(src / split / name / f), str(dst / split / name / out)))
    return jobs


def kind_of(src: Path) -> str:
    """"video" when a split CSV or a video file is there, else "images"."""
    from .video_index import VIDEO_EXTENSIONS

    if any((src / f"{s}.csv").is_file() for s in SPLITS):
        return "video"
    for split in SPLITS:
        if (src / split).is_dir() and any(p.suffix.lower() in VIDEO_EXTENSIONS for p in (src / split).glob("*/*")):
            return "video"
    return "images"


def prepare(src: Path, dst: Path, kind: str, short_side: int | None, workers: int, crf: int = 23,
            quality: int = 90, progress: bool = True) -> dict:
    """Prepare ``src`` into ``dst`` (module docstring); returns counts and the broken files."""
    from tqdm import tqdm

    if not src.is_dir():
        raise FileNotFoundError(f"source data set not found: {src}")
    if dst.resolve() == src.resolve():
        raise ValueError(f"the destination {dst} is the source: give another folder")
    kind = kind_of(src) if kind == "auto" else kind
    index = None
    if kind == "video":
        jobs, index = video_jobs(src, dst)
        work, settings = prepare_video, (short_side or 320, crf)
    else:
        jobs, work, settings = image_jobs(src, dst, short_side), prepare_image, (short_side, quality)
    if not jobs:
        raise FileNotFoundError(f"no {kind} found in {src} (splits {', '.join(SPLITS)})")
    todo = [j for j in jobs if not Path(j[2]).is_file()]  # an output exists only once it was checked
    broken: dict[str, tuple[str, str]] = {}
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(max(1, workers), mp_context=context) as pool:
        futures = {pool.submit(work, source, out, *settings): (split, source, out) for split, source, out in todo}
        bar = tqdm(concurrent.futures.as_completed(futures), total=len(jobs), initial=len(jobs) - len(todo),
                   desc=f"preparing {kind}", unit="file", disable=not progress)
        for future in bar:
            split, source, out = futures[future]
            error = future.result()
            if error is not None:
                broken[out] = (split, source, error)
    dst.mkdir(parents=True, exist_ok=True)
    lines = ["split,path,error"] + [f"{s},{p},{e.replace(',', ';')}" for s, p, e in broken.values()]
    (dst / "broken.csv").write_text("\n".join(lines) + "\n")
    if index is not None:  # written last: the set is complete once its index is there
        for split, rows in index.items():
            kept = [f"{rel} {label}" for rel, label in rows if (dst / rel).is_file()]
            (dst / f"{split}.csv").write_text("\n".join(kept) + "\n")
    return {"kind": kind, "files": len(jobs), "done_before": len(jobs) - len(todo), "broken": len(broken)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m datamodules.prepare", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="the data set's root")
    p.add_argument("dst", type=Path, help="the prepared copy's root (data.root= for training)")
    p.add_argument("--kind", choices=["auto", "video", "images"], default="auto")
    p.add_argument("--short-side", type=int, default=None, help="pixels (videos: 320 by default; images: kept)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--crf", type=int, default=23, help="H.264 quality (lower: better, larger)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of resized images")
    args = p.parse_args(argv)
    if args.short_side is not None and args.short_side < 2:
        print(f"error: --short-side={args.short_side} must be at least 2", file=sys.stderr)
        return 2
    try:
        done = prepare(args.src, args.dst, args.kind, args.short_side, args.workers, args.crf, args.quality)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prepared {done['files'] - done['broken']} of {done['files']} {done['kind']} files in {args.dst} "
          f"({done['done_before']} done before); {done['broken']} broken, listed in {args.dst / 'broken.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
