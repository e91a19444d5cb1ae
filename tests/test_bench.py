"""The benchmark scripts run (smoke runs: their numbers are for people, not for asserts). Those that take
more than about 20 s on a 2-core CPU are marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_video_loader_bench_quick(tmp_path):
    r = subprocess.run([sys.executable, "bench/video_loader.py", "--quick", "--video-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("decord / PyAV:", "data.decoder=pyav", "num_workers=1:", "workers per device keep it fed"):
        assert line in r.stdout


@pytest.mark.slow
def test_memory_bench_quick_json():
    r = subprocess.run([sys.executable, "bench/memory.py", "--quick", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["command"] == "python bench/memory.py --quick --json" and out["machine"]["cpu_cores"]
    cases = out["cases"]
    assert len(cases) == 6 and not [c for c in cases if "error" in c], cases
    for c in cases:
        assert c["step_mib"] > 0 and c["peak_mib"] >= c["step_mib"] and c["ms_per_step"] > 0
    # grad_ckpt vs. not at the smallest and largest image size and for video; whether it saved
    # memory is reported, not asserted (a tiny model at 64 px has almost no activations to save)
    assert [p["case"].split(" (")[0] for p in out["grad_ckpt"]] == ["image 64px", "image 128px", "video 8x64"]
    for p in out["grad_ckpt"]:
        assert isinstance(p["grad_ckpt_uses_less"], bool) and p["memory_ratio"] > 0
    assert [s["case"].split(" (")[0] for s in out["scaling"]] == ["image 64px", "image 128px", "video 8x64"]
    assert out["scaling"][0]["time_vs_smallest"] == 1.0
    assert [c["attention"] for c in cases if c["find_attention"]] == ["explicit matmuls (no SDPA call)"] * 2


@pytest.mark.slow
def test_parity_bench_json(tmp_path):
    """Hiera-T and timm's abs-win Hiera-S, fp32: the outputs agree with the reference code's, and the JSON
    names its command and machine."""
    out = tmp_path / "parity.json"
    r = subprocess.run([sys.executable, "bench/parity.py", "--size", "tiny", "--cases", "cls,mae,timm",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["command"] == f"python bench/parity.py --size tiny --cases cls,mae,timm --json {out}"
    assert res["machine"]["cpu_cores"] and res["machine"]["torch"]
    assert [(c["model"], c["output"]) for c in res["comparisons"]] == [
        ("hiera_tiny_224", "logits"), ("mae_hiera_tiny_224", "MAE loss"), ("mae_hiera_tiny_224", "MAE predictions"),
        ("mae_hiera_tiny_224", "MAE targets"), ("hiera_small_abswin_256", "logits")]
    for c in res["comparisons"]:
        assert c["max_abs_diff"] < 1e-4 and c["max_abs_value"] > 1e-2, c
    assert res["mae_loss"]["ours"] == pytest.approx(res["mae_loss"]["official"], abs=1e-5)


@pytest.mark.slow
def test_train_throughput_bench_tiny(tmp_path):
    """Every loop runs the recipe's module and optimizer (the betas, mask ratio and layer decay of the
    shipped configs, recorded in the JSON)."""
    from training.config import config_arguments

    out = tmp_path / "throughput.json"
    r = subprocess.run([sys.executable, "bench/train_throughput.py", "--batch-size", "4", "--img-size", "64",
                        "--steps", "2", "--warmup", "1", "--rounds", "1", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["command"].startswith("python bench/train_throughput.py --batch-size 4")
    pretrain, finetune = res["tasks"]
    mae, ft = config_arguments("train", "module"), config_arguments("finetune", "module")
    assert (pretrain["task"], pretrain["mask_ratio"], pretrain["betas"]) == ("pretrain", mae["mask_ratio"],
                                                                            mae["betas"])
    assert (finetune["task"], finetune["layer_decay"], finetune["betas"]) == ("finetune", ft["layer_decay"],
                                                                            ft["betas"])
    for t in res["tasks"]:
        assert t["bare_img_s"] > 0 and t["trainer_img_s"] > 0 and t["callbacks_img_s"] > 0


@pytest.mark.slow
def test_image_loader_bench_quick(tmp_path):
    """Ours, the float32 path of before and timm's transform on the same JPEGs; uint8 is a quarter
    of float32's bytes."""
    out = tmp_path / "image_loader.json"
    r = subprocess.run([sys.executable, "bench/image_loader.py", "--images", "8", "--rounds", "1", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for row in res["tasks"].values():
        assert set(row) == {"ours", "float32 in the worker", "timm"}
        assert row["ours"]["bytes_per_sample"] * 4 == row["float32 in the worker"]["bytes_per_sample"] == 4 * 3 * 224 * 224
        assert all(x["cpu_s_per_1000"] > 0 for x in row.values())


@pytest.mark.slow
def test_video_prepare_bench_quick(tmp_path):
    """Originals prepared with datamodules.prepare, read by decord and torchcodec."""
    from test_video_data import torchcodec_or_skip

    torchcodec_or_skip()
    out = tmp_path / "video_prepare.json"
    r = subprocess.run([sys.executable, "bench/video_prepare.py", "--videos", "1", "--seconds", "2", "--reads", "2",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["clips_per_s"]) == {f"{d} {f}" for d in ("decord", "torchcodec") for f in ("original", "prepared")}
    assert res["videos"]["original"]["sizes"] == ["1280x720"] and res["videos"]["prepared"]["sizes"] == ["568x320"]


def test_export_roundtrip_bench_json(tmp_path):
    """The export round trip on a random Hiera (no demo checkpoint given): identical logits."""
    import json

    out = tmp_path / "rt.json"
    done = subprocess.run([sys.executable, "bench/export_roundtrip.py", "--checkpoint", str(tmp_path / "none.pth"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().endswith("none.pth: no such file")
    import torch

    import abswin

    official = tmp_path / "official.pth"
    torch.save({"model_state": abswin.create_model("hiera_atto_224", img_size=64, num_classes=3).state_dict()},
               official)
    command = [sys.executable, "bench/export_roundtrip.py", "--checkpoint", str(official), "--images", "4",
               "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "--model NAME" in done.stderr  # an official file does not name its model
    done = subprocess.run([*command, "--model", "hiera_atto_224"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["size"] for r in rows] == [224, 256] and all(r["max_abs_logit_diff"] == 0 for r in rows)  # its own 224
