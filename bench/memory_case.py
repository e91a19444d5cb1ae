"""One case of ``bench/memory.py``, run in a fresh process of its own (``memory.py --worker``):
build the model, then measure one training step's memory or time steps. How memory is measured,
and why so, is in ``memory.py``'s docstring (``python bench/memory.py --help``).
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import sys

import torch

import abswin
from common import classifier_step, ms, timed

MIB = 2**20
ATTENTION_OPS = {  # substring of an aten op name -> the SDPA backend it belongs to
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
}


def rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_rss_peak() -> bool:
    """Give freed heap pages back and reset the resident high-water mark; False where impossible."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except (OSError, AttributeError):  # not glibc, or no /proc
        return False


def attention_backend(step) -> str:
    """Which SDPA backend one step dispatches to, from the profiler's op names (CPU-side events
    only: the op names say it, and no CUDA tracing is started)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    found = set()
    for name in {e.name for e in prof.events()}:
        for op, backend in ATTENTION_OPS.items():  # the most specific name first
            if op in name:
                found.add(backend)
                break
    return ", ".join(sorted(found)) or "explicit matmuls (no SDPA call)"


def measure_cpu(step, warmup: int) -> tuple[int, int, str]:
    """(bytes resident before the step, peak bytes during it, how) for one step on the CPU."""
    if reset_rss_peak():
        for _ in range(warmup):
            step()
        reset_rss_peak()
        before = rss_kib("VmRSS") * 1024
        step()
        return before, rss_kib("VmHWM") * 1024, "VmHWM - VmRSS, high-water mark reset before the step"
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    return before, after, "ru_maxrss growth over the first step (no warm-up)"


def measure_cuda(step, warmup: int, device: torch.device) -> tuple[int, int, str]:
    """(bytes allocated before the step, peak bytes allocated during it, how)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return before, torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"


def run_case(spec: dict) -> dict:
    """Build the model of ``spec``; then, by ``spec["phase"]``, measure one step's memory or time steps."""
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    kwargs = {"img_size": spec["size"], "grad_ckpt": spec["grad_ckpt"]}
    if spec["frames"] is not None:
        kwargs["num_frames"] = spec["frames"]
    torch.manual_seed(0)
    model = abswin.create_model(spec["model"], **kwargs).to(device).train()
    x = torch.randn(spec["batch"], model.in_chans, *model.input_size, device=device)
    y = torch.randint(0, model.num_classes, (spec["batch"],), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if spec["adamw"] else None
    step = classifier_step(model, x, y, dtype, optimizer)

    out = {}
    try:
        if spec["phase"] == "memory":
            if cuda:
                before, peak, out["method"] = measure_cuda(step, spec["warmup"], device)
            else:
                before, peak, out["method"] = measure_cpu(step, spec["warmup"])
            out["held_mib"] = before / MIB
            out["step_mib"] = (peak - before) / MIB
            out["peak_mib"] = peak / MIB
        else:
            for _ in range(spec["warmup"]):
                step()
            out["ms_per_step"] = ms(statistics.median(timed(step, device) for _ in range(spec["steps"])))
            if spec["find_attention"]:
                out["attention"] = attention_backend(step)
    except torch.OutOfMemoryError:
        out["error"] = "out of memory"
    return out
