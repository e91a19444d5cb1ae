"""Peak memory and step time of a Hiera training step, with and without activation checkpointing
(a benchmark, not a test).

One step is forward + cross-entropy loss + backward (+ an AdamW step with ``--adamw``) of a
classifier in train mode. Cases:

* images, ``hiera_base_224`` at ``--sizes`` (224, 256, 320, 384, 448 px): step time vs. size,
  and memory with and without ``grad_ckpt`` at the smallest and largest size;
* video, ``hiera_base_16x224`` at 16 frames x 224 px: the same, ``grad_ckpt`` on and off.

Every case runs in two fresh subprocesses, one for memory and one for time, so that no case
inherits another's heap, caches or compiled kernels. Each starts with a warm-up step (lazy
initialisation, AdamW state). The first then measures one step's memory; the second times
``--steps`` steps (median).

How memory is measured:

* CUDA: ``torch.cuda.reset_peak_memory_stats`` before the step and ``max_memory_allocated``
  after it: the peak of live tensor memory. Allocator cache and the CUDA context are not counted.
* CPU: PyTorch keeps no statistics for CPU tensors, so we measure what the process really has
  resident (Linux). Before the step, free heap pages go back to the OS (glibc ``malloc_trim``)
  and the kernel's resident-set high-water mark is reset (``5`` into ``/proc/self/clear_refs``);
  after it, the mark (``VmHWM``) is read. That counts everything the step touches (activations,
  gradients, oneDNN scratch) and adds no work to the step, unlike the profiler's memory
  tracking, which records every allocation and sees only tensors. The memory process fixes
  glibc's mmap threshold (see :func:`run`), so that the number is live memory, not the heap's
  history. Where the mark cannot be reset, the first step is measured with ``ru_maxrss``.

``step MiB`` is the peak during the step above what was held just before it (weights, inputs,
optimizer state): activations, gradients and temporaries. ``peak MiB`` is the absolute peak
(CUDA: all tensors; CPU: the whole process, the Python and PyTorch libraries included, and
``torch.utils.checkpoint`` imports about 175 MiB of modules on first use, so on a CPU compare
``step MiB``, not ``peak MiB``).

The attention kernel that ``F.scaled_dot_product_attention`` dispatches to is read from the
profiler's op names during one step (flash / efficient / cudnn / math). bf16 on a CPU prints
"explicit matmuls": the model skips SDPA there (see ``abswin/models/layers.py``).

    python bench/memory.py                                   # CPU: batch 2 images, 1 video, bf16 autocast
    python bench/memory.py --device cuda --batch-size 64 --video-batch-size 8
    python bench/memory.py --quick --json                    # smoke run, hiera_atto at small sizes
    python bench/memory.py --json docs/results/memory.json   # the tables, and the JSON written there
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# the bench modules: Python puts the script's folder (bench/) on sys.path
from common import busy_cpu_seconds, table, wait_until_quiet, write_results  # noqa: E402
from memory_case import run_case  # noqa: E402

BUSY = 0.05  # share of the CPUs other processes may use while a case is timed


# ---------------------------------------------------------------------------------- driver
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="bf16 autocast or fp32")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 2 CPU, 32 CUDA; --quick 1)")
    p.add_argument("--video-batch-size", type=int, default=None, help="clips per step (default 1 CPU, 4 CUDA)")
    p.add_argument("--sizes", default=None, help="image sizes, comma-separated (default 224,256,320,384,448)")
    p.add_argument("--frames", type=int, default=None, help="video frames (default 16)")
    p.add_argument("--video-size", type=int, default=None, help="video frame size (default 224)")
    p.add_argument("--adamw", action="store_true", help="include an AdamW step (its state is held before the step)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default 3 CPU, 10 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 3 CUDA)")
    p.add_argument("--retries", type=int, default=0,
                   help="time a case again (after waiting for a quiet machine) while other processes used "
                        f"{BUSY * 100:.0f}%% or more of the CPUs, up to this many times")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: hiera_atto at 64 and 128 px and 8x64 video, batch 1 (explicit options still win)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write the results as JSON to OUT, with the command and the machine; without OUT print "
                        "them (progress goes to stderr)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one case, as JSON: internal
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if args.quick:
        defaults = {"batch_size": 1, "video_batch_size": 1, "sizes": "64,128", "frames": 8, "video_size": 64,
                    "steps": 2, "warmup": 1}
    else:
        defaults = {"batch_size": 32 if cuda else 2, "video_batch_size": 4 if cuda else 1,
                    "sizes": "224,256,320,384,448", "frames": 16, "video_size": 224,
                    "steps": 10 if cuda else 3, "warmup": 3 if cuda else 1}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    return args


def plan(args) -> list[dict]:
    """Every case: each image size without grad_ckpt, the smallest and largest with it, video both ways."""
    image, video = ("hiera_atto_224", "hiera_atto_16x224") if args.quick else ("hiera_base_224", "hiera_base_16x224")
    common = {"device": args.device, "dtype": args.dtype, "adamw": args.adamw, "steps": args.steps,
              "warmup": args.warmup}
    cases = []
    for size in args.sizes:
        for ckpt in (False, True):
            if ckpt and size not in (args.sizes[0], args.sizes[-1]):
                continue
            cases.append({**common, "model": image, "size": size, "frames": None, "batch": args.batch_size,
                          "grad_ckpt": ckpt, "find_attention": size == args.sizes[0] and not ckpt})
    for ckpt in (False, True):
        cases.append({**common, "model": video, "size": args.video_size, "frames": args.frames,
                      "batch": args.video_batch_size, "grad_ckpt": ckpt, "find_attention": not ckpt})
    return cases


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_in_subprocess(spec: dict, env: dict | None = None) -> tuple[dict, float | None]:
    """One phase of a case in a fresh process; and the share of the machine other processes used
    meanwhile (on a shared machine they slow the step: its time is then not to be trusted)."""
    busy0, own0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                       capture_output=True, text=True, env=env)
    busy1, own1, wall = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter() - t0
    others = None
    if busy0 is not None:
        others = max(0.0, (busy1 - busy0 - (own1 - own0)) / (wall * (os.cpu_count() or 1)))
    if r.returncode != 0:
        why = "killed (out of memory?)" if r.returncode in (-9, 137) else (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": why}, others
    return json.loads(r.stdout.strip().splitlines()[-1]), others


def run(spec: dict, retries: int = 0) -> dict:
    """A case: its memory in one fresh process, its time in another.

    The memory process runs with glibc's mmap threshold fixed at 64 KiB: every tensor above that
    gets pages of its own and returns them when freed, so resident memory follows live memory.
    With glibc's default (a threshold that grows to 32 MiB), freed tensors stay resident in the
    heap, and the same step (Hiera-B 16x224, grad_ckpt, CPU) measured 517 to 793 MiB from run to
    run; with the fixed threshold, 329 MiB three times. The time process keeps the default, as
    training does."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)} if spec["device"] == "cpu" else None
    memory, _ = run_in_subprocess({**spec, "phase": "memory"}, env)
    for attempt in range(retries + 1):  # on a shared machine: time again when it is quiet
        timing, others = run_in_subprocess({**spec, "phase": "time"})
        if others is None or others < BUSY or attempt == retries:
            break
        wait_until_quiet(300, BUSY)
    case = {**spec, **memory, **timing, "others_cpu": others, "time_attempts": attempt + 1}
    if "error" in memory or "error" in timing:
        case["error"] = memory.get("error") or timing.get("error")
    return case


def label(case: dict) -> str:
    kind = f"video {case['frames']}x{case['size']}" if case["frames"] else f"image {case['size']}px"
    return f"{kind} ({case['model']}, batch {case['batch']})"


def summarise(cases: list[dict]) -> tuple[list[dict], list[dict]]:
    """grad_ckpt vs. not (memory and time), and time relative to the smallest image size."""
    ok = [c for c in cases if "error" not in c]
    pairs = []
    for off in (c for c in ok if not c["grad_ckpt"]):
        on = next((c for c in ok if c["grad_ckpt"] and c["model"] == off["model"] and c["size"] == off["size"]), None)
        if on is None:
            continue
        pairs.append({"case": label(off), "step_mib": off["step_mib"], "step_mib_grad_ckpt": on["step_mib"],
                      "memory_ratio": on["step_mib"] / off["step_mib"] if off["step_mib"] > 0 else None,
                      "peak_mib": off["peak_mib"], "peak_mib_grad_ckpt": on["peak_mib"],
                      "grad_ckpt_uses_less": on["step_mib"] <= off["step_mib"],
                      "time_ratio": on["ms_per_step"] / off["ms_per_step"]})
    images = [c for c in ok if not c["grad_ckpt"] and c["frames"] is None]
    base = images[0]["ms_per_step"] / images[0]["batch"] if images else None  # per sample: video batches differ
    scaling = [{"case": label(c), "ms_per_step": c["ms_per_step"], "per_sample_ms": c["ms_per_step"] / c["batch"],
                "time_vs_smallest": c["ms_per_step"] / c["batch"] / base if base else None}
               for c in ok if not c["grad_ckpt"]]
    return pairs, scaling


def print_tables(header: str, cases: list[dict], pairs: list[dict], scaling: list[dict], smallest: int) -> None:
    print(header)
    for c in cases:
        if "error" in c:
            print(f"  {label(c)}, grad_ckpt={c['grad_ckpt']}: {c['error']}")
    print(f"\nmemory of one training step ({cases[0].get('method', '?')}):")
    table(["case", "step MiB", "+ckpt MiB", "ckpt/no", "peak MiB", "+ckpt peak", "ckpt time/no"],
          [[p["case"], f"{p['step_mib']:.0f}", f"{p['step_mib_grad_ckpt']:.0f}",
            f"{p['memory_ratio']:.2f}" if p["memory_ratio"] is not None else "-", f"{p['peak_mib']:.0f}",
            f"{p['peak_mib_grad_ckpt']:.0f}", f"{p['time_ratio']:.2f}"] for p in pairs],
          widths=[0, 9, 9, 7, 9, 10, 12])
    print(f"\nstep time without grad_ckpt (median); 'vs {smallest}': time per sample relative to a "
          f"{smallest} px image:")
    table(["case", "ms/step", "ms/sample", f"vs {smallest}"],
          [[s["case"], f"{s['ms_per_step']:.0f}", f"{s['per_sample_ms']:.0f}",
            f"{s['time_vs_smallest']:.2f}" if s["time_vs_smallest"] is not None else "-"] for s in scaling],
          widths=[0, 8, 9, 7])
    busy = max((c["others_cpu"] or 0 for c in cases), default=0)
    if busy >= BUSY:
        print(f"\nwarning: other processes used up to {busy:.0%} of the CPUs during a case: its time is too high "
              "(memory is not affected); rerun on a quiet machine")
    attention = [f"{label(c)}: {c['attention']}" for c in cases if c.get("attention") and "error" not in c]
    if attention:
        print("\nattention kernel (F.scaled_dot_product_attention backend):")
        for line in attention:
            print(f"  {line}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    log = sys.stderr if args.json == "-" else sys.stdout
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = (f"torch {torch.__version__} | {name} | {args.dtype}{' autocast' if args.dtype == 'bf16' else ''} | "
              f"{args.warmup} warm-up step, then 1 measured or {args.steps} timed steps; memory and time each "
              f"in a fresh process"
              f"{' | AdamW step included' if args.adamw else ''}")
    print(header, file=log, flush=True)
    t0 = time.perf_counter()
    cases = []
    for spec in plan(args):
        t = time.perf_counter()
        case = run(spec, args.retries)
        cases.append(case)
        what = case.get("error") or f"step {case['step_mib']:.0f} MiB, {case['ms_per_step']:.0f} ms/step"
        others = case["others_cpu"]
        others = f", other processes used {others:.0%} of the CPUs" if others is not None else ""
        print(f"  {label(case)}, grad_ckpt={case['grad_ckpt']}: {what} ({time.perf_counter() - t:.0f} s{others})",
              file=log, flush=True)
    pairs, scaling = summarise(cases)
    seconds = time.perf_counter() - t0
    if args.json != "-":
        print()
        print_tables(header, cases, pairs, scaling, args.sizes[0])
        print(f"\ntotal {seconds:.0f} s")
    if args.json:
        write_results(args.json, {"torch": torch.__version__, "device": args.device, "device_name": name,
                                  "dtype": args.dtype, "adamw": args.adamw, "seconds": seconds,
                                  "cases": cases, "grad_ckpt": pairs, "scaling": scaling}, __file__, argv)
        if args.json != "-":
            print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
