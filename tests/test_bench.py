"""The benchmark scripts run (smoke runs: their numbers are for people, not for asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_video_loader_bench_quick(tmp_path):
    r = subprocess.run([sys.executable, "bench/video_loader.py", "--quick", "--video-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("decord / PyAV:", "data.decoder=pyav", "num_workers=1:", "workers per device keep it fed"):
        assert line in r.stdout


def test_memory_bench_quick_json():
    r = subprocess.run([sys.executable, "bench/memory.py", "--quick", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
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
