"""Video loading vs. compute: is a video run bound by decoding or by the model?

Measures, on 320p H.264 videos (Kinetics' usual short side):

1. decode only, one process: 16x4 training clips/s read by decord, by PyAV, and by
   ``read_frames`` (decord inside its time-limit thread: the guard's cost);
2. the whole per-sample pipeline of one loader worker (``VideoDataset``: decode + crop/flip/
   RandAugment of every frame to 224 px), with repeated sampling 1 and 2;
3. a real DataLoader with 0..N workers;
4. a training step (forward + backward) of the video model on a batch of clips,

and prints the workers each device needs to keep its model fed. Videos are generated (moving
texture, 25 fps, GOP 50, libx264) unless ``--video-dir`` holds real ones.

    python bench/video_loader.py                # hiera_base_16x224, CPU bf16 (and CUDA if present)
    python bench/video_loader.py --quick        # 30-second smoke run with hiera_atto
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from abswin import create_model
from datamodules import video
from datamodules.video import (VIDEO_EXTENSIONS, VideoDataModule, VideoDataset, _read_decord, _read_pyav,
                               collate_video_train, read_frames, train_clip_indices)


def make_videos(folder: Path, count: int, seconds: float, width: int = 568, height: int = 320) -> list[Path]:
    """``count`` H.264 MP4s of moving noise texture (incompressible enough to make the decoder work)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"v{k}.mp4"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(k)
        n = int(seconds * 25)
        texture = rng.integers(0, 255, (height // 4 + n, width // 4 + n, 3), dtype=np.uint8)
        texture = np.kron(texture, np.ones((4, 4, 1), np.uint8))  # 4x4 blocks: real-looking bit rates
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            s.options = {"crf": "23", "preset": "veryfast", "g": "50"}
            for i in range(n):
                frame = texture[4 * i:4 * i + height, 4 * i:4 * i + width]
                c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            c.mux(s.encode())
    return paths


def per_second(fn, repeats: int, warmup: int = 1) -> float:
    """Calls of ``fn`` per second: the median over ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1.0 / statistics.median(times)


def decode_rates(paths: list[Path], repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    choose = lambda n: train_clip_indices(n, 16, 4, rng)  # noqa: E731
    state = {"i": 0}

    def reader(read):
        def one():
            read(str(paths[state["i"] % len(paths)]), choose)
            state["i"] += 1
        return one

    return {
        "decord": per_second(reader(_read_decord), repeats),
        "PyAV": per_second(reader(_read_pyav), repeats),
        "read_frames (decord + time-limit thread)": per_second(reader(lambda p, c: read_frames(p, c, 30.0)), repeats),
    }


def dataset(root: Path, repeated: int, decoder: str = "decord") -> VideoDataset:
    dm = VideoDataModule(str(root), img_size=224, num_frames=16, sampling_rate=4, batch_size=1, num_workers=0,
                         repeated_sampling=repeated, seed=0, val_split=None, decoder=decoder)
    dm.setup("fit")
    return dm.train_set


def pipeline_rate(root: Path, repeated: int, repeats: int, decoder: str) -> tuple[float, float]:
    """(clips/s of ``__getitem__``, share of its time spent in ``read_frames``) for one worker."""
    ds = dataset(root, repeated, decoder)
    state = {"i": 0, "decode": 0.0}
    original = video.read_frames

    def timed_read(*a, **kw):
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            state["decode"] += time.perf_counter() - t

    def one():
        ds[state["i"] % len(ds)]
        state["i"] += 1

    video.read_frames = timed_read
    try:
        one()  # warm-up
        state["decode"] = 0.0
        t = time.perf_counter()
        for _ in range(repeats):
            one()
        total = time.perf_counter() - t
    finally:
        video.read_frames = original
    return repeats * repeated / total, state["decode"] / total


def loader_rate(root: Path, workers: int, batches: int, batch_size: int) -> float:
    ds = dataset(root, 1)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch_size * (batches + 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, sampler=sampler,
                                         collate_fn=collate_video_train)
    it = iter(loader)
    next(it)  # worker start-up excluded
    t = time.perf_counter()
    clips = sum(next(it)[0].shape[0] for _ in range(batches))
    return clips / (time.perf_counter() - t)


def model_rate(name: str, batch: int, device: str, dtype: str, repeats: int, num_frames: int, img_size: int) -> float:
    """Clips/s of a forward + backward step (bf16 autocast or fp32)."""
    model = create_model(name, num_frames=num_frames, img_size=img_size, num_classes=400).to(device).train()
    x = torch.randn(batch, 3, num_frames, img_size, img_size, device=device)
    y = torch.randint(0, 400, (batch,), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return batch * per_second(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video-dir", default=None, help="real videos to use (else generated 320p ones, cached)")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of generated videos")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--model", default="hiera_base_16x224")
    ap.add_argument("--batch", type=int, default=2, help="clips per model step")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--quick", action="store_true", help="2 short videos, few repeats, hiera_atto")
    args = ap.parse_args()
    if args.quick:
        args.videos, args.seconds, args.repeats, args.model = 2, 4.0, 3, "hiera_atto_16x224"
        args.workers = "0,1"

    if args.video_dir and any(p.suffix.lower() in VIDEO_EXTENSIONS for p in Path(args.video_dir).iterdir()):
        paths = sorted(p for p in Path(args.video_dir).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        source = f"{len(paths)} videos from {args.video_dir}"
    else:
        folder = Path(args.video_dir or Path(tempfile.gettempdir()) / "abswin_bench_videos")
        paths = make_videos(folder / f"{args.seconds:g}s", args.videos, args.seconds)
        source = f"{len(paths)} generated 568x320 H.264 videos of {args.seconds:g} s (25 fps, GOP 50)"
    root = paths[0].parent
    (root / "train.csv").write_text("".join(f"{p.name} 0\n" for p in paths))
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    print(f"clips: 16 frames x stride 4 -> 224 px; {source}; {os.cpu_count()} CPU cores")
    print("\n1. decode only (one process, one decoding thread), 16x4 training clips")
    rates = decode_rates(paths, args.repeats)
    for name, r in rates.items():
        print(f"   {name:42s} {r:7.1f} clips/s")
    print(f"   decord / PyAV: {rates['decord'] / rates['PyAV']:.2f}x")

    print("\n2. one loader worker: decode + crop/flip/RandAugment of every frame (VideoDataset)")
    per_worker = {}
    for decoder in ("decord", "pyav"):
        for repeated in (1, 2):
            clips, decode_share = pipeline_rate(root, repeated, args.repeats, decoder)
            per_worker[decoder, repeated] = clips
            print(f"   data.decoder={decoder:6s} repeated sampling {repeated}: {clips:6.1f} clips/s per worker "
                  f"({100 * decode_share:.0f}% of it decoding)")
    worker = max(per_worker[d, 1] for d in ("decord", "pyav"))

    print("\n3. DataLoader (whole machine)")
    for w in [int(x) for x in args.workers.split(",") if int(x) <= (os.cpu_count() or 1)]:
        print(f"   num_workers={w}: {loader_rate(root, w, max(2, args.repeats // 2), 4):6.1f} clips/s")

    print(f"\n4. model step ({args.model}, forward + backward, batch {args.batch})")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        dtype = args.dtype if device == "cpu" else "bf16"
        compute = model_rate(args.model, args.batch, device, dtype, max(2, args.repeats // 3), 16, 224)
        need = compute / worker
        bound = "loading" if need > 1 else "compute"
        print(f"   {device} {dtype}: {compute:7.2f} clips/s; one worker gives {worker:.1f} clips/s (faster decoder) "
              f"-> {need:.2f} workers per device keep it fed (with 1 worker: {bound}-bound)")


if __name__ == "__main__":
    main()
