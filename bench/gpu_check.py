"""The prepared GPU check (``make gpu-check OUT=DIR``): what the first GPU window must measure, in
one command of about 8 minutes on one H100, written to ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``.

GPU time comes rarely and in short windows, so everything is here, ready, and its CPU subset runs in
the test suite (``tests/test_gpu_check.py``: ``--device cpu --quick``) so that it cannot rot between
windows. Checks, each recorded even when another fails:

* ``parity``: fp32 logits and MAE loss of image and video Hiera on the device vs the CPU, the same
  weights, inputs and mask (TF32 off); they must agree within ``--tolerance`` (1e-4);
* ``kernels``: which SDPA kernel each attention call of ours, the official ``hiera`` package and timm
  dispatches to (flash, efficient, cudnn or math), asked of PyTorch's own dispatcher with the very
  arguments of each call. On a GPU any math fallback of ours fails the check;
* ``train_step``: bf16 forward, loss, backward and AdamW step of Hiera-B and Hiera-L at 224, ours vs
  official vs timm, the same batch, eager and ``torch.compile``'d; images per second, our model
  FLOPs per image (``FlopCounterMode``: forward and backward) and the MFU against the card's bf16
  dense peak (a table of known cards, else a measured matmul peak);
* ``memory``: peak memory of a bf16 training step with and without activation checkpointing, Hiera-L
  at 224 and 384, Hiera-H at 384, video Hiera-L at 16x224 and 32x320;
* ``runs``: ``train.py`` and ``finetune.py`` on the demo data, on the device, bf16, a few hundred
  steps: exit 0, ``train/throughput`` and ``train/data_wait`` from their CSV logs;
* ``loader``: samples per second of the demo's training loader alone with the machine's cores;
* ``device_augment``: the finetuning augmentation that runs on the device (RandAugment,
  normalisation, random erasing; ``datamodules/on_device.py``) on a batch of 224-px crops: images per
  second, and RandAugment's output on the device against the CPU path's for the same draws (bilinear
  sampling may round a pixel differently: more than 2 levels apart fails).

The status is 1 when a check fails (parity, a math fallback of ours on a GPU, a run that does not
exit 0); the speed targets are reported beside the numbers, not failed.

    make gpu-check OUT=/tmp/gpu              # = python bench/gpu_check.py --out /tmp/gpu
    python bench/gpu_check.py --device cpu --quick --out /tmp/cpu   # the CPU subset (the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import abswin  # noqa: E402

# bench/common.py and the other scripts: Python puts the script's folder (bench/) on sys.path
from common import ROOT, classifier_step, with_provenance  # noqa: E402
from memory_case import run_case  # noqa: E402
from model_speed import count_flops, interleaved, matmul_peak, official_factory  # noqa: E402

# bf16 dense (not sparse) tensor-core peaks from the vendors' data sheets, TFLOP/s; the first name
# found in torch.cuda.get_device_name() wins, so the specific names come first
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "GH200": 989.0,
                    "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}
MIB = 2**20


def card_peak(device: torch.device) -> tuple[float, str]:
    """(bf16 dense peak in FLOP/s, where the number comes from) for this device."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for card, tflops in BF16_PEAK_TFLOPS.items():
            if card in name:
                return tflops * 1e12, f"{card} data sheet, bf16 dense"
    n = 8192 if device.type == "cuda" else 2048
    return matmul_peak(torch.bfloat16, device, n, 5), f"measured {n}x{n} bf16 matmul"


# ---------------------------------------------------------------------------------- models
def official_model(name: str) -> torch.nn.Module:
    return official_factory(name)(pretrained=False)


def timm_model(name: str) -> torch.nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


IMPLEMENTATIONS = {"ours": lambda name: abswin.create_model(name), "official": official_model, "timm": timm_model}


# ---------------------------------------------------------------------------------- parity
@torch.no_grad()
def parity(device: torch.device, names: list[str], size: int | None, frames: int | None, tolerance: float) -> list[dict]:
    """fp32 outputs on ``device`` vs the CPU: logits for a classifier, the loss for an MAE model."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name in names:
        kwargs = {"img_size": size} if size else {}
        if frames and "16x" in name:
            kwargs["num_frames"] = frames
        torch.manual_seed(0)
        model = abswin.create_model(name, **kwargs).eval()
        x = torch.randn(2, model.in_chans, *model.input_size, generator=torch.Generator().manual_seed(0))
        mask = model.get_random_mask(x, 0.6) if name.startswith("mae_") else None

        def out(m, dev):
            if mask is None:
                return m(x.to(dev)).float().cpu()
            return m(x.to(dev), mask=mask.to(dev))[0].float().cpu()

        cpu = out(model, "cpu")
        there = out(model.to(device), device)
        diff = (cpu - there).abs().max().item()
        rows.append({"model": name, "output": "MAE loss" if mask is not None else "logits",
                     "max_abs_diff": diff, "max_abs_value": cpu.abs().max().item(), "ok": diff <= tolerance})
        del model
    return rows


# ---------------------------------------------------------------------------------- kernels
class SDPAChoices(TorchFunctionMode):
    """Records, for each ``scaled_dot_product_attention`` call, the query's shape and the kernel that
    PyTorch's dispatcher picks for exactly these arguments (``torch._fused_sdp_choice``, the function
    SDPA itself asks)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            from torch.nn.attention import SDPBackend

            choice = torch._fused_sdp_choice(*args, **kwargs)
            self.calls.append((tuple(args[0].shape), SDPBackend(choice).name.lower()))
        return func(*args, **kwargs)


def attention_kernels(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> dict:
    """The SDPA kernels of one forward pass of ``model`` under autocast to ``dtype``."""
    recorder = SDPAChoices()
    autocast = torch.autocast(x.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with torch.no_grad(), autocast, recorder:
        model(x)
    kernels = Counter(k for _, k in recorder.calls)
    math_shapes = sorted({str(list(s)) for s, k in recorder.calls if k == "math"})
    return {"calls": len(recorder.calls), "kernels": dict(kernels), "math_shapes": math_shapes}


def kernel_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU, as training runs; fp32 on a CPU, where ours computes bf16 attention with explicit
    matmuls (faster there than the CPU's fused kernel) and calls SDPA only in fp32."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def kernel_ok(impl: str, device_type: str, found: dict) -> bool:
    """False for a math fallback of ours on a GPU; the other implementations' are only reported."""
    return not (impl == "ours" and device_type == "cuda" and found.get("math"))


def kernels(device: torch.device, name: str) -> list[dict]:
    """:func:`attention_kernels` of each implementation of ``name`` at 224; a math fallback of ours on
    a GPU fails (the others' are reported: the official code's 5-D mask-unit attention has one)."""
    rows = []
    for impl, make in IMPLEMENTATIONS.items():
        row = {"impl": impl, "model": name}
        try:
            model = make(name).to(device).eval()
            row.update(attention_kernels(model, torch.randn(2, 3, 224, 224, device=device), kernel_dtype(device)))
            row["ok"] = kernel_ok(impl, device.type, row["kernels"])
        except Exception as e:  # noqa: BLE001 - a check that cannot run is reported, the others go on
            row.update(error=f"{type(e).__name__}: {e}"[:300], ok=impl != "ours")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- the training step
def train_step(device: torch.device, name: str, batch: int, compile_impls: set[str], steps: int, warmup: int,
               peak: float) -> list[dict]:
    """Images per second of a bf16 training step at 224 (AdamW included) of each implementation,
    eager and compiled, timed in interleaved rounds; FLOPs counted once on ours."""
    cuda = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    closures, rows, flops_per_image = {}, {}, None
    for impl, make in IMPLEMENTATIONS.items():
        try:
            model = make(name).to(device).train()
        except Exception as e:  # noqa: BLE001
            rows[f"{impl} eager"] = {"impl": f"{impl} eager", "model": name, "error": f"{type(e).__name__}: {e}"[:300]}
            continue
        y = torch.randint(0, model_classes(model), (batch,), generator=g).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        closures[f"{impl} eager"] = classifier_step(model, x, y, torch.bfloat16, optimizer)
        if impl == "ours":
            flops_per_image = count_flops(classifier_step(model, x, y, torch.bfloat16)) / batch
        if impl in compile_impls:
            what = f"{impl} compiled"
            rows[what] = {"impl": what, "model": name}
            step = classifier_step(model, x, y, torch.bfloat16, optimizer, fwd=torch.compile(model))
            try:
                started = time.perf_counter()
                step()  # compiles
                closures[what] = step
                rows[what]["compile_s"] = time.perf_counter() - started
            except Exception as e:  # noqa: BLE001
                rows[what]["error"] = f"{type(e).__name__}: {e}"[:300]
    for what, (seconds, spread) in interleaved(closures, warmup, steps, device).items():
        row = rows.setdefault(what, {"impl": what, "model": name})
        row.update(batch=batch, images_per_s=batch / seconds, spread=spread)
        if flops_per_image is not None:
            row.update(flops_per_image=flops_per_image, mfu=flops_per_image * batch / seconds / peak)
    return sorted(rows.values(), key=lambda r: r["impl"])


def model_classes(model: torch.nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 1000)


def step_targets(rows: list[dict]) -> dict:
    """The issue's targets for one model: ours eager at least as fast as the faster of official and
    timm, ours compiled faster than ours eager."""
    speed = {r["impl"]: r.get("images_per_s") for r in rows}
    others = [speed.get(k) for k in ("official eager", "timm eager") if speed.get(k)]
    ours = speed.get("ours eager")
    return {"ours_vs_fastest_other": ours / max(others) if ours and others else None,
            "compiled_vs_eager": speed["ours compiled"] / ours if ours and speed.get("ours compiled") else None}


# ---------------------------------------------------------------------------------- memory
def memory(device: torch.device, cases: list[tuple[str, int, int | None, int]]) -> list[dict]:
    """Peak memory of one bf16 step (AdamW included) with and without activation checkpointing."""
    rows = []
    for name, size, frames, batch in cases:
        for ckpt in (False, True):
            spec = {"device": str(device), "dtype": "bf16", "model": name, "size": size, "frames": frames,
                    "batch": batch, "grad_ckpt": ckpt, "adamw": True, "phase": "memory", "warmup": 1,
                    "steps": 1, "find_attention": False}
            try:
                out = run_case(spec)
            except Exception as e:  # noqa: BLE001
                out = {"error": f"{type(e).__name__}: {e}"[:300]}
            rows.append({"model": name, "size": size, "frames": frames, "batch": batch, "checkpointing": ckpt, **out})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------- real runs and the loader
def entry_point_run(script: str, experiment: str, out: Path, device: torch.device, steps: int, workers: int) -> dict:
    """``script experiment=...`` on the device as a process; its exit status, throughput and data wait."""
    name = f"gpu-check-{Path(script).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = ["trainer=gpu"] if device.type == "cuda" else ["trainer.accelerator=cpu"]
    args = [sys.executable, script, f"experiment={experiment}", *trainer, "trainer.precision=bf16-mixed",
            f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={max(1, min(10, steps // 4))}", f"data.num_workers={workers}",
            "logger=csv", f"run_name={name}"]
    env = {**os.environ, "ABSWIN_OUTPUT_ROOT": str(out / "runs"), "WANDB_MODE": "offline"}
    started = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    row = {"script": script, "experiment": experiment, "steps": steps, "workers": workers,
           "exit": done.returncode, "seconds": time.monotonic() - started, "ok": done.returncode == 0}
    if done.returncode != 0:
        row["stderr_tail"] = done.stderr[-1500:]
    logged = {"train/throughput": [], "train/data_wait": []}
    for metrics in (out / "runs").glob(f"*/{name}/csv/version_*/metrics.csv"):
        with open(metrics) as f:
            for r in csv.DictReader(f):
                for key in logged:
                    if r.get(key):
                        logged[key].append(float(r[key]))
    half = {k: v[len(v) // 2:] for k, v in logged.items()}  # the second half: warmed up
    row["samples_per_s"] = statistics.median(half["train/throughput"]) if half["train/throughput"] else None
    row["data_wait"] = statistics.median(half["train/data_wait"]) if half["train/data_wait"] else None
    return row


def loader_speed(workers: int, batches: int) -> dict:
    """Samples per second of the demo's finetuning and MAE training loaders alone (no model)."""
    from training.config import build_data, compose_config, register_resolvers

    register_resolvers()
    rows = {}
    for task, experiment in (("finetune", "demo_ft"), ("pretrain", "demo_mae")):
        cfg = compose_config("train" if task == "pretrain" else "finetune",
                             [f"experiment={experiment}", f"data.num_workers={workers}"])
        data = build_data(cfg)
        data.setup("fit")
        loader = data.train_dataloader()
        it = iter(loader)
        next(it)  # the workers start
        started, seen = time.perf_counter(), 0
        for _ in range(batches):
            try:
                seen += next(it).num_samples
            except StopIteration:
                break
        rows[task] = {"workers": workers, "samples_per_s": seen / (time.perf_counter() - started)}
        del it, loader
    return rows


# ---------------------------------------------------------------------------------- the report
def device_augment(device: torch.device, batch: int, size: int, rounds: int) -> dict:
    """RandAugment on ``device`` vs the CPU for the same per-sample draws, and the images per second
    of the whole device step (RandAugment, normalisation, erasing 0.25) on uint8 crops."""
    from abswin.batch import Batch
    from datamodules.on_device import to_model_input
    from datamodules.randaugment import RandAugmentSettings, draw_ops, rand_augment

    settings = RandAugmentSettings()  # the recipe's rand-m9-mstd0.5, 2 ops at probability 0.5
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 256, (batch, 3, size // 16, size // 16), generator=g).float()
    images = F.interpolate(coarse, size=(size, size), mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    every_sample = RandAugmentSettings(op_prob=1.0)  # compared: two ops on every sample
    draws = [draw_ops(torch.Generator().manual_seed(i), every_sample) for i in range(batch)]
    cpu = rand_augment(images, draws, every_sample).int()
    there = rand_augment(images.to(device), draws, every_sample).cpu().int()
    diff = (cpu - there).abs()
    moved = Batch(images.to(device), torch.zeros(batch, dtype=torch.long, device=device),
                  indices=torch.arange(batch, device=device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for epoch in range(rounds + 1):  # the first warms up
        sync()
        started = time.perf_counter()
        to_model_input(moved, 0.25, 0, epoch, settings)
        sync()
        if epoch:
            times.append(time.perf_counter() - started)
    return {"batch": batch, "size": size, "max_abs_diff": int(diff.max()),
            "share_differing": float((diff > 0).float().mean()), "images_per_s": batch / statistics.median(times),
            "ok": int(diff.max()) <= 2}


def markdown(results: dict, page: bool = True) -> str:
    """The results as markdown, a table per check: a page of its own (``gpu_check.md``), or without
    the title, for the results block of docs/benchmarks.md (``bench/report.py``)."""
    m = results["machine"]
    lines = [f"# GPU check: {m.get('gpu') or m.get('cpu')}", "", f"`{results['command']}`", ""] if page else []

    def block(title: str, header: list[str], rows: list[list]) -> None:
        title = f"## {title}" if page else f"**{title[0].upper()}{title[1:]}**"
        lines.extend([title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        lines.extend("| " + " | ".join(fmt(c) for c in r) + " |" for r in rows)
        lines.append("")

    c = results["checks"]
    if "parity" in c:
        block("fp32 parity, device vs CPU", ["model", "output", "max abs diff", "ok"],
              [[r["model"], r["output"], r["max_abs_diff"], r["ok"]] for r in c["parity"]])
    if "kernels" in c:
        block(f"attention kernels ({results['checks'].get('kernel_dtype')})", ["impl", "model", "calls", "kernels", "math at", "ok"],
              [[r["impl"], r["model"], r.get("calls", "-"), r.get("kernels", r.get("error")), r.get("math_shapes", ""),
                r["ok"]] for r in c["kernels"]])
    if "train_step" in c:
        block(f"bf16 training step (AdamW); peak {fmt(c['peak']['tflops'])} TFLOP/s ({c['peak']['source']})",
              ["model", "impl", "batch", "img/s", "GFLOP/img", "MFU", "compile s", "error"],
              [[r["model"], r["impl"], r.get("batch", ""), r.get("images_per_s", ""),
                r["flops_per_image"] / 1e9 if "flops_per_image" in r else "", r.get("mfu", ""),
                r.get("compile_s", ""), r.get("error", "")] for rows in c["train_step"].values() for r in rows])
        block("targets", ["model", "ours / faster of official and timm", "ours compiled / eager"],
              [[k, t["ours_vs_fastest_other"], t["compiled_vs_eager"]] for k, t in c["targets"].items()])
    if "memory" in c:
        block("peak memory of a bf16 step (MiB)", ["model", "input", "batch", "checkpointing", "peak MiB", "error"],
              [[r["model"], f"{r['frames']}x{r['size']}" if r["frames"] else r["size"], r["batch"],
                "on" if r["checkpointing"] else "off",
                r.get("peak_mib", ""), r.get("error", "")] for r in c["memory"]])
    if "runs" in c:
        block("entry points on the demo data", ["script", "steps", "workers", "exit", "samples/s", "data wait"],
              [[r["script"], r["steps"], r["workers"], r["exit"], r.get("samples_per_s"), r.get("data_wait")]
               for r in c["runs"]])
    if "loader" in c:
        block("the demo loader alone", ["task", "workers", "samples/s"],
              [[k, v["workers"], v["samples_per_s"]] for k, v in c["loader"].items()])
    if "device_augment" in c:
        d = c["device_augment"]
        block("augmentation on the device (RandAugment, normalisation, erasing)",
              ["batch", "size", "images/s", "RandAugment vs CPU: max diff", "pixels differing", "ok"],
              [[d["batch"], d["size"], d["images_per_s"], d["max_abs_diff"], d["share_differing"], d["ok"]]])
    if results["failures"]:
        lines.extend(["## failures", ""] + [f"- {f}" for f in results["failures"]])
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value).replace("|", "/").replace("\n", " ")


# ---------------------------------------------------------------------------------- main
def plan(args) -> dict:
    """Models, sizes and batches: the issue's on a GPU; the same code on tiny ones with ``--quick``."""
    if args.quick:
        return {"parity": ["hiera_atto_224", "mae_hiera_atto_224", "hiera_atto_16x224", "mae_hiera_atto_16x224"],
                "parity_size": 64, "parity_frames": 4, "kernel_models": ["hiera_tiny_224"],
                "steps": {"hiera_tiny_224": 2}, "compile": set(),
                "memory": [("hiera_atto_224", 64, None, 2)], "run_steps": 4, "loader_batches": 4,
                "augment": (8, 64)}
    return {"parity": ["hiera_base_224", "mae_hiera_base_224", "hiera_base_16x224", "mae_hiera_base_16x224"],
            "parity_size": None, "parity_frames": None, "kernel_models": ["hiera_base_224", "hiera_large_224"],
            "steps": {"hiera_base_224": 128, "hiera_large_224": 64}, "compile": {"ours", "official", "timm"},
            "memory": [("hiera_large_224", 224, None, 32), ("hiera_large_224", 384, None, 8),
                       ("hiera_huge_224", 384, None, 4), ("hiera_large_16x224", 224, 16, 4),
                       ("hiera_large_16x224", 320, 32, 1)],
            "run_steps": 300, "loader_batches": 100, "augment": (256, 224)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", required=True, help="the folder for gpu_check.json, gpu_check.md and the runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: the CPU subset the tests run")
    p.add_argument("--checks", default="parity,kernels,train_step,memory,runs,loader,device_augment",
                   help="comma-separated")
    p.add_argument("--tolerance", type=float, default=1e-4, help="fp32 parity, max abs difference")
    p.add_argument("--steps", type=int, default=None, help="timed rounds of the training step (default 10; --quick 2)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the machine's cores - 1)")
    args = p.parse_args(argv)
    device, todo, cfg = torch.device(args.device), set(args.checks.split(",")), plan(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    steps = args.steps or (2 if args.quick else 10)
    results = with_provenance({"device": str(device), "checks": {}, "failures": []}, "bench/gpu_check.py", argv)
    checks, failures = results["checks"], results["failures"]

    def section(key: str, fn) -> None:
        if key not in todo:
            return
        started = time.monotonic()
        print(f"gpu_check: {key} ...", flush=True)
        try:
            checks[key] = fn()
        except Exception as e:  # noqa: BLE001 - one broken check must not cost the window the others
            failures.append(f"{key}: {type(e).__name__}: {e}")
            traceback.print_exc()
        checks.setdefault("seconds", {})[key] = round(time.monotonic() - started, 1)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str) + "\n")  # partial results too

    section("parity", lambda: parity(device, cfg["parity"], cfg["parity_size"], cfg["parity_frames"], args.tolerance))
    checks["kernel_dtype"] = str(kernel_dtype(device)).removeprefix("torch.")
    section("kernels", lambda: [r for m in cfg["kernel_models"] for r in kernels(device, m)])
    if "train_step" in todo:
        peak, source = card_peak(device)
        checks["peak"] = {"tflops": peak / 1e12, "source": source}
    section("train_step", lambda: {m: train_step(device, m, b, cfg["compile"], steps, 2, checks["peak"]["tflops"] * 1e12)
                                   for m, b in cfg["steps"].items()})
    if "train_step" in checks:
        checks["targets"] = {m: step_targets(rows) for m, rows in checks["train_step"].items()}
    section("memory", lambda: memory(device, cfg["memory"]))
    section("runs", lambda: [entry_point_run(s, e, out, device, cfg["run_steps"], workers)
                             for s, e in (("train.py", "demo_mae"), ("finetune.py", "demo_ft"))])
    section("loader", lambda: loader_speed(workers, cfg["loader_batches"]))
    section("device_augment", lambda: device_augment(device, *cfg["augment"], steps))

    augment = [checks["device_augment"]] if "device_augment" in checks else []
    for row in checks.get("parity", []) + checks.get("kernels", []) + checks.get("runs", []) + augment:
        if not row.get("ok", True):
            failures.append(f"{row.get('model') or row.get('script')}: {json.dumps(row, default=str)[:400]}")
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
