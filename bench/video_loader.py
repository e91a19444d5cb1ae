"""Video loading vs. compute: is a video training run bound by its loader or by its model?

Clips/s of 16x4 training clips at 224 px from 320p H.264 videos, per loader worker (one process,
one thread), decord vs. PyAV, against the clips/s of a training step of the video model, so that
you see how many workers each device needs. All in this process (DataLoader workers are forked
from it), warm-up first, medians of timed rounds in alternating order:

1. decode only: one 16x4 training read (``train_clip_indices``) by decord, by PyAV (the same
   windows for both), and by ``read_frames`` (decord inside its time-limit thread: the guard's cost);
2. one worker's whole sample: ``VideoDataset.__getitem__`` with the finetune worker transform (crop
   224 + flip; RandAugment runs on the device), split into decode and augmentation, repeated sampling 1 and 2;
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
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# the bench modules: Python puts the script's folder (bench/) on sys.path
from clips import get_videos, video_info  # noqa: E402
from common import cpu_busy, table, write_results  # noqa: E402
from video_timing import (RATE, SIZE, T, bench_decode, bench_loader, bench_model, bench_worker,  # noqa: E402
                          worker_threads)

CORES = os.cpu_count() or 1


# ---------------------------------------------------------------------------------- main
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
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write all results, with the command and the machine, to this JSON file")
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


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    busy = cpu_busy()  # before this run adds its own load
    paths, where = get_videos(args.video_dir, args.videos, args.seconds, args.gop)
    info = video_info(paths)
    workers = [w for w in (int(x) for x in args.workers.split(",") if x.strip()) if w <= CORES]
    cuda = torch.cuda.is_available() and not args.no_cuda
    # the machine (GPU name included) is read when the JSON is written: CUDA is not touched before the
    # loader workers are forked
    results: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "cpu_busy_at_start": busy, "videos": dict(info, where=where)}

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
          [[k, v["median_ms"], v["p90_ms"], v["clips_per_s"]] for k, v in decode.items()], indent="   ")
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
        # two classes: a finetuning data module refuses a single one; the labels change no timing
        (root / "train.csv").write_text("".join(f"{p.resolve()} {i % 2}\n" for i, p in enumerate(paths)))
        rs = sorted({1, 2, args.repeated_sampling})
        configs = [(d, r) for d in ("decord", "pyav") for r in rs]
        print(f"\n2. one loader worker (one thread): VideoDataset.__getitem__ = read_frames + crop {SIZE} / flip per clip "
              f"(RandAugment: on the device; {args.items} samples after {args.warmup} warm-up)", flush=True)
        worker = bench_worker(root, configs, args.items, args.warmup)
        table(["setting", "ms/video", "decode ms", "augment ms", "decode %", "clips/s per worker"],
              [[f"data.decoder={w['decoder']} repeated_sampling={w['repeated_sampling']}", w["median_ms"], w["decode_ms"],
                w["augment_ms"], 100 * w["decode_ms"] / w["median_ms"], w["clips_per_s"]] for w in worker], indent="   ")
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
    print(f"\n4. model step: {args.model}, forward + backward, [B, 3, {T}, {SIZE}, {SIZE}] random clips"
          f"{'; CUDA: ' + torch.cuda.get_device_name() if cuda else ''}", flush=True)
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
           "workers needed", f"with {W} workers"], rows, indent="   ")
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
        write_results(args.json, results, __file__, argv)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
