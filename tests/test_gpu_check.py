"""The prepared GPU check (bench/gpu_check.py): its CPU subset, so that it cannot rot between GPU
windows. The kernel check and the FLOP count are checked for what they find, not only that they run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import abswin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import attention_kernels, kernel_ok  # noqa: E402
from model_speed import count_flops  # noqa: E402


def gpu_check(tmp_path: Path, checks: str) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path),
                           "--checks", checks], cwd=ROOT, capture_output=True, text=True, timeout=600)
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    return done.returncode, results, (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_cpu_subset_parity_kernels_and_training_step(tmp_path):
    code, results, page = gpu_check(tmp_path, "parity,kernels,train_step")
    assert code == 0 and results["failures"] == [], results["failures"]
    checks = results["checks"]
    assert [r["output"] for r in checks["parity"]] == ["logits", "MAE loss"] * 2
    assert all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in checks["parity"])
    kernels = {r["impl"]: r for r in checks["kernels"]}
    # every attention call of ours, window and global, is 4-D and gets the fused kernel; the official
    # code's 5-D mask-unit attention falls back to math, which the check must see
    assert kernels["ours"]["kernels"] == {"flash_attention": 12}, kernels["ours"]
    assert kernels["official"]["kernels"].get("math") and all(
        len(json.loads(s)) == 5 for s in kernels["official"]["math_shapes"])
    steps = {r["impl"]: r for r in checks["train_step"]["hiera_tiny_224"]}
    assert set(steps) == {"ours eager", "official eager", "timm eager"}
    assert all(r["images_per_s"] > 0 and 0 < r["mfu"] < 1 for r in steps.values())
    assert "## attention kernels (float32)" in page and "| hiera_tiny_224 | ours eager | 2 |" in page
    from report import RENDERERS  # the docs block a GPU run will fill

    assert "**Attention kernels (float32)**" in RENDERERS["gpu_check"](results)


def test_a_math_fallback_is_seen_and_fails_on_a_gpu():
    """A 5-D attention call, as the official mask-unit attention makes, is recorded as math; on a GPU
    such a call of ours fails the check (the others' only report it)."""

    class FiveD(torch.nn.Module):
        def forward(self, x):
            q = x.view(1, 2, 3, 16, 8)  # [B, heads, units, tokens, head_dim]
            return F.scaled_dot_product_attention(q, q, q)

    found = attention_kernels(FiveD(), torch.randn(1, 2 * 3 * 16 * 8), torch.float32)
    assert found == {"calls": 1, "kernels": {"math": 1}, "math_shapes": ["[1, 2, 3, 16, 8]"]}
    assert not kernel_ok("ours", "cuda", found["kernels"])
    assert kernel_ok("official", "cuda", found["kernels"]) and kernel_ok("ours", "cpu", found["kernels"])
    assert kernel_ok("ours", "cuda", {"flash_attention": 12})


def test_flop_count_matches_the_paper_and_counts_the_backward_pass():
    """The MFU rests on it: Hiera-B's forward at 224 is the paper's 9.4 GFLOPs (multiply-adds, as
    fvcore counts them; Table 6) within 7%, and a training step is three forwards."""
    model = abswin.create_model("hiera_base_224").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        forward = count_flops(lambda: model(x))
    assert forward / 2 == pytest.approx(9.4e9, rel=0.07)
    tiny = abswin.create_model("hiera_tiny_224").train()

    def step():
        F.cross_entropy(tiny(x), torch.zeros(1, dtype=torch.long)).backward()

    with torch.no_grad():
        tiny_forward = count_flops(lambda: tiny(x))
    assert count_flops(step) == pytest.approx(3 * tiny_forward, rel=0.03)


@pytest.mark.slow
def test_cpu_subset_real_runs_memory_and_loader(tmp_path):
    """train.py and finetune.py as processes, memory with and without checkpointing, the loader."""
    code, results, page = gpu_check(tmp_path, "memory,runs,loader")
    assert code == 0 and results["failures"] == [], results["failures"]
    checks = results["checks"]
    assert [r["exit"] for r in checks["runs"]] == [0, 0]
    assert all(r["samples_per_s"] > 0 and 0 <= r["data_wait"] < 1 for r in checks["runs"])
    assert [r["checkpointing"] for r in checks["memory"]] == [False, True]
    assert all(r["peak_mib"] > 0 for r in checks["memory"])
    assert set(checks["loader"]) == {"finetune", "pretrain"}
    assert all(v["samples_per_s"] > 0 for v in checks["loader"].values())


def test_cpu_subset_device_augmentation(tmp_path):
    """The device-augmentation check on the CPU: the same device, so RandAugment equals the CPU path
    exactly; its table is written."""
    code, results, page = gpu_check(tmp_path, "device_augment")
    assert code == 0 and results["failures"] == [], results["failures"]
    d = results["checks"]["device_augment"]
    assert d["max_abs_diff"] == 0 and d["ok"] and d["images_per_s"] > 0 and d["batch"] == 8
    assert "## augmentation on the device" in page
