"""Video loading vs. compute: is a video training run bound by its loader or by its model?

Clips/s of 16x4 training clips at 224 px from 320p H.264 videos, per loader worker (one process,
one thread), decord vs. PyAV, against the clips/s of a training step of the video model, so that
you see how many workers each device needs. All in this process (DataLoader workers are forked
from it), warm-up first, medians of timed rounds in alternating order:

1. decode only: one 16x4 training read (``train_clip_indices``) by decord, by PyAV (the same
   windows for both), and by ``read_frames`` (decord inside its time-limit thread: the guard's cost);
2. one worker's whole sample: ``VideoDataset.__getitem__`` with the finetune transform (crop 224 +
   flip + RandAugment), split into decode and augmentation, repeated sampling 1 and 2;
3. a real DataLoader with 0, 1, 2, ... workers (no more than the machine's cores);
4. a training step (forward + backward) of ``--model`` on CPU (bf16 autocast or fp32) and on CUDA
   when present, then the workers per device that keep it fed and which side bounds the step.

Videos: generated (panning multi-scale texture plus a moving object, 568x320, 25 fps, GOP 50,
libx264 veryfast crf 23: about 0.57 Mbit/s; the header prints the bit rate to compare with your
files) and cached, unless ``--video-dir`` holds videos: then up to ``--videos`` of those are used.

    python bench/video_loader.py                          # hiera_base_16x224, about 1-2 min on 2 cores
    python bench/video_loader.py --quick                  # smoke run: 2 short videos, hiera_atto
    python bench/video_loader.py --video-dir ~/k400/train --num-workers 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from abswin import create_model  # noqa: E402
from abswin.data import video  # noqa: E402
from abswin.data.loading import SampleKey  # noqa: E402
from abswin.data.video import (VIDEO_EXTENSIONS, VideoDataModule, _read_decord, _read_pyav,  # noqa: E402
                               collate_video_train, read_frames, train_clip_indices)

T, RATE, SIZE = 16, 4, 224  # the paper's 16x4 clips at 224 px
FPS = 25
CORES = os.cpu_count() or 1


# ---------------------------------------------------------------------------------- videos
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
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS
                   and not p.name.endswith(".part.mp4") and p.is_file())
    return found[:limit]


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


# ---------------------------------------------------------------------------------- timing helpers
def cpu_busy(seconds: float = 0.5) -> float | None:
    """Share of all cores busy over ``seconds`` (Linux ``/proc/stat``; None elsewhere), taken before
    the run: on a shared machine another job lowers every number here."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError):
        return None
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def ms(seconds: float) -> float:
    return 1e3 * seconds


def summary(times: list[float], clips_per_call: int = 1) -> dict:
    """Median and 90th-percentile ms per call, and clips/s from the median."""
    med = statistics.median(times)
    return {"median_ms": ms(med), "p90_ms": ms(float(np.percentile(times, 90))), "clips_per_s": clips_per_call / med,
            "n": len(times)}


@contextmanager
def worker_threads(n: int):
    """``torch.set_num_threads(n)`` inside (a DataLoader worker runs with 1), the old value after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def timed_reads(log: list[float]):
    """Append the seconds of every ``read_frames`` call that ``VideoDataset`` makes to ``log``
    (it looks the function up in its module at each call): the decode part of a sample."""
    original = video.read_frames

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            log.append(time.perf_counter() - t)

    video.read_frames = timed
    try:
        yield
    finally:
        video.read_frames = original


# ---------------------------------------------------------------------------------- 1. decode only
def bench_decode(paths: list[Path], reads: int, warmup: int) -> tuple[dict, float, int]:
    """Per-read seconds of the three readers on the same windows, interleaved (order alternates
    each round). Also the largest mean |decord - PyAV| over reads (0-255 scale): a few units is
    colour conversion, tens would mean one of them returns other frames."""
    readers = {
        "decord": _read_decord,
        "PyAV": _read_pyav,
        "read_frames (decord + time-limit thread)": lambda p, c: read_frames(p, c, timeout=30.0),
    }
    times: dict[str, list[float]] = {k: [] for k in readers}
    worst_diff, failures = 0.0, 0
    for r in range(warmup + reads):
        path = str(paths[r % len(paths)])
        choose = lambda n, r=r: train_clip_indices(n, T, RATE, np.random.default_rng(r))  # noqa: E731
        order = list(readers) if r % 2 == 0 else list(readers)[::-1]
        out, dt = {}, {}
        try:
            for name in order:
                t = time.perf_counter()
                out[name] = readers[name](path, choose)
                dt[name] = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - a broken real video: skip it, say so
            failures += 1
            print(f"   read failed ({type(e).__name__}: {e}) for {path}", flush=True)
            continue
        if r >= warmup:
            for name, d in dt.items():
                times[name].append(d)
        a, b = out["decord"], out["PyAV"]
        if a.shape == b.shape:
            worst_diff = max(worst_diff, float(np.abs(a.astype(np.int16) - b).mean()))
        else:
            worst_diff = float("inf")
    if not times["decord"]:
        raise SystemExit("no video could be read")
    return {k: summary(v) for k, v in times.items()}, worst_diff, failures


# ---------------------------------------------------------------------------------- 2. one worker
def make_dataset(root: Path, decoder: str, repeated: int):
    """The training set as ``data=video`` builds it (finetune transform: crop + flip + RandAugment)."""
    dm = VideoDataModule(str(root), img_size=SIZE, num_frames=T, sampling_rate=RATE, batch_size=1, num_workers=0,
                         mode="finetune", repeated_sampling=repeated, decoder=decoder, val_split=None,
                         test_split=None, pin_memory=False, seed=0)
    dm.setup("fit")
    return dm.train_set


def bench_worker(root: Path, configs: list[tuple[str, int]], items: int, warmup: int) -> list[dict]:
    """``__getitem__`` of each (decoder, repeated_sampling), one thread like a loader worker,
    interleaved; decode = the time inside ``read_frames``, augment = the rest."""
    sets = [make_dataset(root, d, r) for d, r in configs]
    total: list[list[float]] = [[] for _ in configs]
    decode: list[list[float]] = [[] for _ in configs]
    log: list[float] = []
    with worker_threads(1), timed_reads(log):
        for i in range(warmup + items):
            order = range(len(configs)) if i % 2 == 0 else reversed(range(len(configs)))
            for k in order:
                ds = sets[k]
                ds.seed = 0  # seeded per sample: every setting gets the same windows and ops
                log.clear()
                t = time.perf_counter()
                sample = ds[SampleKey(i % len(ds), i)]
                dt = time.perf_counter() - t
                if sample is None:
                    raise SystemExit(f"unreadable video {ds.path(i % len(ds))}")
                if i >= warmup:
                    total[k].append(dt)
                    decode[k].append(sum(log))
    rows = []
    for (d, r), tot, dec in zip(configs, total, decode):
        row = {"decoder": d, "repeated_sampling": r, **summary(tot, r)}
        row["decode_ms"] = ms(statistics.median(dec))
        row["augment_ms"] = ms(statistics.median([a - b for a, b in zip(tot, dec)]))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- 3. DataLoader
def bench_loader(root: Path, decoder: str, repeated: int, workers: int, videos_per_batch: int, batches: int) -> dict:
    """Clips/s of a real DataLoader once every worker has delivered its first batch (start-up excluded)."""
    ds = make_dataset(root, decoder, repeated)
    warm = max(workers, 1)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=videos_per_batch * (warm + batches),
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=videos_per_batch, sampler=sampler, num_workers=workers,
                                         collate_fn=collate_video_train)
    it = iter(loader)
    for _ in range(warm):
        next(it)
    t = time.perf_counter()
    clips = sum(next(it)[0].shape[0] for _ in range(batches))
    seconds = time.perf_counter() - t
    del it
    return {"num_workers": workers, "clips_per_s": clips / seconds, "clips": clips}


# ---------------------------------------------------------------------------------- 4. model step
def bench_model(name: str, batch: int, device: str, dtype: str, steps: int, warmup: int) -> dict:
    """Median seconds of forward + cross-entropy + backward + zero_grad (no optimizer) on random clips."""
    torch.manual_seed(0)
    model = create_model(name, num_frames=T, img_size=SIZE, num_classes=400).to(device).train()
    x = torch.randn(batch, 3, T, SIZE, SIZE, device=device)
    y = torch.randint(0, 400, (batch,), device=device)
    amp = torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    times = [step() for _ in range(warmup + steps)][warmup:]
    return {"device": device, "dtype": dtype, "batch": batch, **summary(times, batch)}


# ---------------------------------------------------------------------------------- main
def num(x: float) -> str:
    """Three significant digits or so: 0.58, 12.9, 3457.7."""
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def table(header: list[str], rows: list[list], indent: str = "   ") -> None:
    """Left-aligned first column, right-aligned numbers."""
    cells = [header] + [[num(c) if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))),
              flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--video-dir", type=Path, default=None,
                    help="videos to use (searched recursively); empty or missing: generate them there "
                         "(default: a cache folder in the temp dir)")
    ap.add_argument("--videos", type=int, default=None, help="how many videos (default 8; --quick 2)")
    ap.add_argument("--seconds", type=float, default=None, help="length of generated videos (default 10; --quick 4)")
    ap.add_argument("--gop", type=int, default=50, help="keyframe interval of generated videos (frames)")
    ap.add_argument("--reads", type=int, default=None, help="timed reads per decoder (default 60; --quick 8)")
    ap.add_argument("--items", type=int, default=None, help="timed samples per worker setting (default 20; --quick 4)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed reads/samples/steps first (default 2; --quick 1)")
    ap.add_argument("--decoder", choices=["decord", "pyav"], default="decord",
                    help="data.decoder for the DataLoader and the verdict")
    ap.add_argument("--repeated-sampling", type=int, default=1,
                    help="clips per decoded video for the DataLoader and the verdict (section 2 shows 1 and 2 too)")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader num_workers to try (those above the core count skipped)")
    ap.add_argument("--loader-batches", type=int, default=None, help="timed DataLoader batches (default 12; --quick 3)")
    ap.add_argument("--num-workers", type=int, default=CORES,
                    help="workers per device for the verdict 'loading- or compute-bound' (default: this machine's cores)")
    ap.add_argument("--model", default=None, help="video model (default hiera_base_16x224; --quick hiera_atto_16x224)")
    ap.add_argument("--batch", type=int, default=2, help="clips per model step (and per DataLoader batch)")
    ap.add_argument("--cuda-batch", type=int, default=None, help="clips per step on CUDA (default: --batch)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="CPU step: bf16 autocast or fp32 (CUDA: bf16)")
    ap.add_argument("--steps", type=int, default=None, help="timed model steps (default 3 CPU / 10 CUDA; --quick 2)")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA step even when a GPU is present")
    ap.add_argument("--quick", action="store_true", help="~30 s smoke run (explicit options still win)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write all results to this JSON file")
    args = ap.parse_args(argv)
    quick = {"videos": 2, "seconds": 4.0, "reads": 8, "items": 4, "warmup": 1, "loader_batches": 3,
             "model": "hiera_atto_16x224", "steps": 2}
    full = {"videos": 8, "seconds": 10.0, "reads": 60, "items": 20, "warmup": 2, "loader_batches": 12,
            "model": "hiera_base_16x224", "steps": None}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.batch < args.repeated_sampling or args.batch % args.repeated_sampling:
        raise SystemExit("--batch must be a multiple of --repeated-sampling (a batch holds whole videos' clips)")
    return args


def get_videos(args) -> tuple[list[Path], str]:
    """The videos (found or generated) and a line saying which."""
    found = find_videos(args.video_dir, args.videos) if args.video_dir is not None else []
    if found:
        return found, f"from {args.video_dir}"
    frames = int(round(args.seconds * FPS))
    width, height = 568, 320
    folder = args.video_dir or Path(tempfile.gettempdir()) / "abswin_bench_videos" / f"{width}x{height}_{frames}f_g{args.gop}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    paths, made = [], 0
    for k in range(args.videos):
        path = folder / f"clip{k:03d}.mp4"
        if not path.exists():
            make_video(path, k, frames, width, height, args.gop)
            made += 1
        paths.append(path)
    how = f"generated in {time.perf_counter() - t:.1f} s" if made else "cached"
    return paths, f"generated (libx264 veryfast crf 23, GOP {args.gop}; {how}) in {folder}"


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    busy = cpu_busy()  # before this run adds its own load
    paths, where = get_videos(args)
    info = video_info(paths)
    workers = [w for w in (int(x) for x in args.workers.split(",") if x.strip()) if w <= CORES]
    cuda = torch.cuda.is_available() and not args.no_cuda
    results: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "machine": {"cpu_cores": CORES, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "cpu_busy_at_start": busy,
                                 "cuda": None},  # the name is read in section 4: not before forking workers
                     "videos": dict(info, where=where)}

    print(f"{info['count']} videos {'/'.join(info['sizes'])}, {'/'.join(f'{r:g}' for r in info['fps'])} fps, "
          f"{info['frames_median']:g} frames, {info['kbps_median']:.0f} kbit/s (medians); {where}")
    if busy is not None and busy > 0.2:
        print(f"warning: the CPUs were {100 * busy:.0f}% busy before starting: something else is running, which "
              f"lowers every number here (rerun on an idle machine)")
    print(f"clips: {T} frames {RATE} apart (span {(T - 1) * RATE + 1} frames), {SIZE} px; torch {torch.__version__}; "
          f"{CORES} CPU cores{' (only ' + str(CORES) + ': every worker beyond that shares a core)' if CORES <= 4 else ''}"
          f"; CUDA: {'yes (section 4)' if cuda else 'none'}", flush=True)

    # 1 ------------------------------------------------------------------------------
    print(f"\n1. decode only: one {T}x{RATE} training read per call, one process, one decoding thread "
          f"({args.reads} reads after {args.warmup} warm-up, the same windows for all)", flush=True)
    with worker_threads(1):
        decode, diff, failures = bench_decode(paths, args.reads, args.warmup)
    table(["reader", "median ms", "p90 ms", "clips/s"],
          [[k, v["median_ms"], v["p90_ms"], v["clips_per_s"]] for k, v in decode.items()])
    ratio = decode["decord"]["clips_per_s"] / decode["PyAV"]["clips_per_s"]
    guard = decode["read_frames (decord + time-limit thread)"]["median_ms"] / decode["decord"]["median_ms"] - 1
    print(f"   decord / PyAV: {ratio:.2f}x ({'decord' if ratio >= 1 else 'PyAV'} faster); time-limit thread: "
          f"{100 * guard:+.1f}%; frames agree: mean |decord - PyAV| <= {diff:.2f} of 255"
          f"{'' if diff < 8 else '  <- DIFFERENT FRAMES'}{f'; {failures} failed reads' if failures else ''}")
    results["decode"] = dict(decode, decord_over_pyav=ratio, guard_overhead=guard, max_mean_abs_diff=diff,
                             failed_reads=failures)

    # 2 ------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="abswin_bench_") as tmp:
        root = Path(tmp)  # the index only: absolute paths, so a real video folder is never written to
        (root / "train.csv").write_text("".join(f"{p.resolve()} 0\n" for p in paths))
        rs = sorted({1, 2, args.repeated_sampling})
        configs = [(d, r) for d in ("decord", "pyav") for r in rs]
        print(f"\n2. one loader worker (one thread): VideoDataset.__getitem__ = read_frames + crop {SIZE} / flip / "
              f"RandAugment per clip ({args.items} samples after {args.warmup} warm-up)", flush=True)
        worker = bench_worker(root, configs, args.items, args.warmup)
        table(["setting", "ms/video", "decode ms", "augment ms", "decode %", "clips/s per worker"],
              [[f"data.decoder={w['decoder']} repeated_sampling={w['repeated_sampling']}", w["median_ms"], w["decode_ms"],
                w["augment_ms"], 100 * w["decode_ms"] / w["median_ms"], w["clips_per_s"]] for w in worker])
        results["worker"] = worker

        # 3 --------------------------------------------------------------------------
        videos_per_batch = args.batch // args.repeated_sampling
        print(f"\n3. DataLoader: data.decoder={args.decoder}, repeated_sampling={args.repeated_sampling}, {args.batch} clips "
              f"per batch, {args.loader_batches} timed batches after each worker's first; num_workers=0 runs in this "
              f"process with {torch.get_num_threads()} torch threads; at most {CORES} workers (the core count)", flush=True)
        loader = []
        for w in workers:
            row = bench_loader(root, args.decoder, args.repeated_sampling, w, videos_per_batch, args.loader_batches)
            loader.append(row)
            print(f"   num_workers={w}: {row['clips_per_s']:6.1f} clips/s", flush=True)
        results["loader"] = loader

    # 4 ------------------------------------------------------------------------------
    if cuda:
        results["machine"]["cuda"] = torch.cuda.get_device_name()
    print(f"\n4. model step: {args.model}, forward + backward, [B, 3, {T}, {SIZE}, {SIZE}] random clips"
          f"{'; CUDA: ' + results['machine']['cuda'] if cuda else ''}", flush=True)
    runs = [("cpu", args.dtype, args.batch, args.steps or 3, args.warmup)]
    if cuda:
        runs.append(("cuda", "bf16", args.cuda_batch or args.batch, args.steps or 10, max(args.warmup, 3)))
    model = []
    for device, dtype, batch, steps, warm in runs:
        row = bench_model(args.model, batch, device, dtype, steps, warm)
        model.append(row)
        print(f"   {device} {dtype} batch {batch}: {row['median_ms']:.0f} ms/step = {row['clips_per_s']:.2f} clips/s "
              f"({steps} steps after {warm} warm-up"
              f"{f', {torch.get_num_threads()} threads' if device == 'cpu' else ''})", flush=True)
    results["model"] = model

    # verdict -------------------------------------------------------------------------
    pick = next(w for w in worker if w["decoder"] == args.decoder and w["repeated_sampling"] == args.repeated_sampling)
    per_worker = pick["clips_per_s"]
    r = args.repeated_sampling
    W = args.num_workers
    measured = {row["num_workers"]: row["clips_per_s"] for row in loader}
    # the DataLoader's own number when it was measured (IPC and the main process included), else W x one worker
    supply = measured[W] if W in measured else W * per_worker
    how = "measured in section 3" if W in measured else f"{W} x one worker"
    print(f"\nloading vs. compute: one worker (data.decoder={args.decoder}, repeated_sampling={r}) makes "
          f"{per_worker:.1f} clips/s; workers needed = model clips/s / that; with num_workers={W} the loader "
          f"gives {supply:.1f} clips/s ({how})")
    verdict, rows = [], []
    for m in model:
        b = m["batch"]
        need = m["clips_per_s"] / per_worker
        bound = "loading" if supply < m["clips_per_s"] else "compute"
        # one worker's time to prepare one step's batch: b / r videos decoded, b clips augmented
        decode_ms, augment_ms = b / r * pick["decode_ms"], b / r * pick["augment_ms"]
        rows.append([f"{m['device']} {m['dtype']}", b, m["median_ms"], m["clips_per_s"], decode_ms, augment_ms,
                     f"{need:.2f}", f"{bound}-bound"])
        verdict.append(dict(device=m["device"], dtype=m["dtype"], batch=b, step_ms=m["median_ms"],
                            model_clips_per_s=m["clips_per_s"], worker_clips_per_s=per_worker,
                            worker_decode_ms_per_batch=decode_ms, worker_augment_ms_per_batch=augment_ms,
                            workers_needed=need, num_workers=W, loader_clips_per_s=supply, bound=bound))
    table(["device", "batch", "step ms", "model clips/s", "1 worker's ms per batch: decode", "augment",
           "workers needed", f"with {W} workers"], rows)
    for v in verdict:
        print(f"   {v['device']} {v['dtype']}: {v['workers_needed']:.2f} workers per device keep it fed; "
              f"{W} workers give {v['loader_clips_per_s']:.1f} clips/s vs. the model's "
              f"{v['model_clips_per_s']:.2f}: {v['bound']}-bound")
    if any(v["device"] == "cpu" for v in verdict):
        print("   (on CPU the workers and the model share the same cores, so a real run is slower than both numbers)")
    results["verdict"] = verdict
    results["seconds"] = time.perf_counter() - t_start
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
