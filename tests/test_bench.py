"""The benchmark scripts run (smoke runs: their numbers are for people, not for asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_video_loader_bench_quick(tmp_path):
    pytest.importorskip("decord")
    r = subprocess.run([sys.executable, "bench/video_loader.py", "--quick", "--video-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("decord / PyAV:", "data.decoder=pyav", "num_workers=1:", "workers per device keep it fed"):
        assert line in r.stdout
