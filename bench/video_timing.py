"""What ``bench/video_loader.py`` times, one function per section of its report: decode only
(:func:`bench_decode`), one loader worker's sample (:func:`bench_worker`), a DataLoader
(:func:`bench_loader`) and the video model's training step (:func:`bench_model`). Kept apart from
the script, which chooses the settings and prints and judges the numbers.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from abswin import create_model
from datamodules import video
from datamodules.clip_sampling import train_clip_indices
from datamodules.collate import collate_video_train
from datamodules.loading import SampleKey
from datamodules.video_decoding import _read_decord, _read_pyav, read_frames
from training.config import config_arguments
from common import classifier_step, ms, timed

T, RATE, SIZE = 16, 4, 224  # the paper's 16x4 clips at 224 px


# ---------------------------------------------------------------------------------- timing helpers
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
    """The training set as ``data=video`` builds it (the shipped settings; the finetune worker
    transform: crop + flip; RandAugment runs on the device)."""
    kw = config_arguments("finetune", "data", [
        "data=video", f"data.root={root}", f"data.img_size={SIZE}", f"data.num_frames={T}",
        f"data.sampling_rate={RATE}", "data.batch_size=1", "data.num_workers=0",
        f"data.repeated_sampling={repeated}", f"data.decoder={decoder}"])
    del kw["_target_"]
    dm = video.VideoDataModule(**kw, val_split=None, test_split=None, pin_memory=False)
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
                if sample[0] is None:
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
    clips = sum(next(it).images.shape[0] for _ in range(batches))
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
    step = classifier_step(model, x, y, torch.bfloat16 if dtype == "bf16" else torch.float32)
    times = [timed(step, device) for _ in range(warmup + steps)][warmup:]
    return {"device": device, "dtype": dtype, "batch": batch, **summary(times, batch)}
