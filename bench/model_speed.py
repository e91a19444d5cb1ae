"""Training-step speed of our Hiera vs the official ``hiera`` package (a benchmark, not a test).

One step is forward + loss + backward + ``zero_grad`` (no optimizer). Cases:

* ``cls``: the classifier (``--model``, e.g. ``hiera_base_224``), cross-entropy loss, train mode
  for both (the official head applies softmax only in eval mode);
* ``mae``: the MAE model of the same size (``mae_<size>``), mask ratio 0.6, the same mask for both.

Both models get identical weights (ours loads the official state dict, ``pos_embed="absolute"``)
and the same input tensors. Ours and official are timed in interleaved rounds (the order
alternates each round) and the median is reported, which keeps a shared or thermally drifting
machine from favouring one side. FLOPs of one step are counted once (untimed) with
``FlopCounterMode`` and compared with a measured matmul peak in the same dtype.

Examples::

    python bench/model_speed.py                      # CPU: fp32 + bf16, eager
    python bench/model_speed.py --compile            # + torch.compile (eager and compiled ratios)
    python bench/model_speed.py --device cuda --batch-size 64
    python bench/model_speed.py --model hiera_tiny_224 --dtypes bf16 --cases cls
    python bench/model_speed.py --json docs/results/model_speed.json   # also the results as JSON
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import abswin  # noqa: E402
# bench/common.py: Python puts the script's folder (bench/) on sys.path
from common import classifier_step, table, table_lines, timed, write_results  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------- models
def official_factory(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hiera
    fn = getattr(hiera, name, None)
    if fn is None:
        raise SystemExit(f"the official hiera package has no model {name!r}")
    return fn


def build_pair(name: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(ours, official) with identical weights, in train mode."""
    official = official_factory(name)(pretrained=False)
    ours = abswin.create_model(name, pos_embed="absolute")
    ours.load_state_dict(official.state_dict())
    return ours.to(device).train(), official.to(device).train()


def case_names(model: str) -> dict[str, str]:
    """The classifier and MAE names of ``model``'s size that both packages have."""
    if model not in abswin.list_models():
        raise SystemExit(f"unknown model {model!r}; choose from {', '.join(abswin.list_models())}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hiera
    base = model[4:] if model.startswith("mae_") else model
    names = {"cls": base, "mae": "mae_" + base}
    out = {}
    for case, name in names.items():
        if name not in abswin.list_models():
            continue
        if not hasattr(hiera, name):
            print(f"skipping {name}: the official hiera package has no such model")
            continue
        out[case] = name
    return out


# ---------------------------------------------------------------------------------- steps
def make_inputs(ours: nn.Module, case: str, batch: int, device: torch.device, mask_ratio: float):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, ours.in_chans, *ours.input_size, generator=g).to(device)
    if case == "cls":
        y = torch.randint(0, max(ours.num_classes, 1), (batch,), generator=g).to(device)
        return {"x": x, "y": y}
    torch.manual_seed(0)
    mask = ours.get_random_mask(x, mask_ratio)  # True = keep; the same tensor for both models
    return {"x": x, "mask": mask}


def make_step(model: nn.Module, fwd: nn.Module, case: str, inputs: dict, dtype: torch.dtype, device: torch.device):
    """``fwd`` is the module to call (``model`` or its compiled wrapper)."""
    if case == "cls":
        return classifier_step(model, inputs["x"], inputs["y"], dtype, fwd=fwd)
    x, mask = inputs["x"], inputs["mask"]

    def step():
        with torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext():
            loss = fwd(x, mask=mask)[0]
        loss.float().backward()
        model.zero_grad(set_to_none=True)

    return step


def interleaved(steps: dict, warmup: int, iters: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step for each entry, timed in alternating order each round."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + iters):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            dt = timed(steps[n], device)
            if r >= warmup:
                times[n].append(dt)
    return {n: (statistics.median(v), max(v) / min(v)) for n, v in times.items()}


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, repeats: int) -> float:
    """Best-of-``repeats`` FLOP/s of an ``n x n`` matmul in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up
    best = min(timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="hiera_base_224", help="a name from abswin.list_models()")
    p.add_argument("--cases", default="cls,mae", help="cls, mae or both")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="timed rounds (default 3 on CPU, 20 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds (default 1 on CPU, 5 on GPU)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16 (autocast), fp16 (autocast)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--mask-ratio", type=float, default=0.6)
    p.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (default 4096 CPU, 8192 GPU)")
    p.add_argument("--peak-repeats", type=int, default=None)
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the peak")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    peak_n = args.peak_size or (8192 if gpu else 4096)
    peak_reps = args.peak_repeats or (10 if gpu else 4)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            raise SystemExit(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    cases = {c: n for c, n in case_names(args.model).items() if c in wanted}
    if not cases:
        raise SystemExit(f"no case to run for --model {args.model} --cases {args.cases}")
    modes = ["eager", "compiled"] if args.compile else ["eager"]
    if args.compile:
        # the official MAE decoder cannot be compiled (boolean index_put): dynamo falls back to
        # eager for it and logs a long traceback per graph; keep the table readable
        import logging

        torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
        warnings.filterwarnings("ignore", message="Error detected in")
        # every block shape is its own graph where a model graph-breaks (boolean masking)
        for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 256))

    dev_name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} | {dev_name} | batch {args.batch_size} | {warmup} warmup + {steps} timed "
          f"rounds (interleaved, median) | models: {', '.join(cases.values())}", flush=True)

    rows, flop_rows = [], []
    peaks: dict[str, float] = {}
    t_start = time.perf_counter()
    for case, name in cases.items():
        torch.manual_seed(0)
        ours, official = build_pair(name, device)
        inputs = make_inputs(ours, case, args.batch_size, device, args.mask_ratio)
        flops = None
        for mode in modes:
            for dname in dtypes:
                dtype = DTYPES[dname]
                if mode == "compiled":  # a fresh compile per dtype: autocast is part of the guards
                    torch._dynamo.reset()
                    fwd = {"ours": torch.compile(ours), "official": torch.compile(official)}
                else:
                    fwd = {"ours": ours, "official": official}
                step = {k: make_step(m, fwd[k], case, inputs, dtype, device)
                        for k, m in (("ours", ours), ("official", official))}
                t0 = time.perf_counter()
                if mode == "compiled":  # compile outside the timed rounds
                    for k in step:
                        step[k]()
                res = interleaved(step, warmup, steps, device)
                med = {k: v[0] for k, v in res.items()}
                spread = max(v[1] for v in res.values())
                ratio = med["ours"] / med["official"]
                label = f"{case} {name} {dname} {mode}"
                rows.append((label, med["ours"], med["official"], ratio, args.batch_size / med["ours"],
                             args.batch_size / med["official"], spread, case, name, dname, mode))
                print(f"  {label}: ours {med['ours'] * 1e3:.0f} ms, official {med['official'] * 1e3:.0f} ms, "
                      f"ratio {ratio:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
                if not args.no_flops and mode == "eager":
                    if flops is None:
                        flops = count_flops(make_step(ours, ours, case, inputs, torch.float32, device))
                    if dname not in peaks:
                        peaks[dname] = matmul_peak(dtype, device, peak_n, peak_reps)
                    flop_rows.append([label, flops, flops / med["ours"], flops / med["official"], dname])
        del ours, official, fwd, step
        if gpu:
            torch.cuda.empty_cache()

    # the peak again at the end, keeping the best: one taken while the machine was busy would
    # understate it (and overstate the share)
    for dname in peaks:
        peaks[dname] = max(peaks[dname], matmul_peak(DTYPES[dname], device, peak_n, peak_reps))

    w = max(len(r[0]) for r in rows)
    print()
    lines = table_lines(["case", "ours ms/step", "official ms/step", "ours/official", "ours img/s", "official img/s",
                         "spread"],
                        [[label, f"{to * 1e3:.1f}", f"{tf * 1e3:.1f}", f"{ratio:.3f}", f"{io:.2f}", f"{iff:.2f}",
                          f"{spread:.2f}"] for label, to, tf, ratio, io, iff, spread, *_ in rows],
                        widths=[w, 12, 16, 13, 10, 14, 6])
    print(lines[0])
    for line, (label, _, _, ratio, *_) in zip(lines[1:], rows):
        flag = "" if ratio <= (0.8 if label.endswith("compiled") else 1.0) else "  <- above target"
        print(line + flag)
    print("target: ours/official <= 1.0 eager, <= 0.8 compiled; spread = slowest/fastest timed round "
          "(well above ~1.1 means a busy machine: rerun that case)")
    if flop_rows:
        print()
        print(f"matmul peak: {peak_n}x{peak_n} mm, best of {peak_reps}; FLOPs of one step counted once (fp32, ours)")
        table(["case", "GFLOP/step", "achieved TFLOP/s", "official TFLOP/s", "peak TFLOP/s", "share"],
              [[label, f"{flops / 1e9:.1f}", f"{ao / 1e12:.3f}", f"{af / 1e12:.3f}", f"{peaks[dname] / 1e12:.3f}",
                f"{ao / peaks[dname]:.1%}"] for label, flops, ao, af, dname in flop_rows],
              widths=[w, 10, 16, 16, 12, 6])
    if args.json:
        write_results(args.json, {
            "settings": {"device": args.device, "device_name": dev_name, "batch_size": args.batch_size,
                         "steps": steps, "warmup": warmup, "mask_ratio": args.mask_ratio,
                         "threads": torch.get_num_threads(),
                         "peak_size": peak_n, "peak_repeats": peak_reps},
            "steps": [{"case": case, "model": name, "dtype": dname, "mode": mode, "ours_ms": 1e3 * to,
                       "official_ms": 1e3 * tf, "ours_over_official": ratio, "ours_img_s": io, "official_img_s": iff,
                       "spread": spread}
                      for _, to, tf, ratio, io, iff, spread, case, name, dname, mode in rows],
            "flops": [{"case": label, "dtype": dname, "gflop_per_step": flops / 1e9, "ours_tflop_s": ao / 1e12,
                       "official_tflop_s": af / 1e12, "peak_tflop_s": peaks[dname] / 1e12,
                       "share_of_peak": ao / peaks[dname]} for label, flops, ao, af, dname in flop_rows],
            "seconds": time.perf_counter() - t_start}, __file__, argv)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
