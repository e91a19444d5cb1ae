"""DataLoader workers end with the training process, however it ends: workers come from a
forkserver, and without datamodules.loading.exit_with they outlived it forever, each holding
hundreds of MiB (a test suite or a sweep ran the machine out of memory)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from launching import ROOT, _environ

CHILD = """
import os, sys, torch
from datamodules.loading import make_loader
loader = make_loader(list(range(64)), batch_size=4, collate=torch.utils.data.default_collate, num_workers=2,
                     pin_memory=False, persistent_workers=True)
batches = iter(loader)
next(batches)
if sys.argv[1] == "killed":
    os._exit(0)   # like SIGKILL: no clean-up runs
"""


def _with_marker(marker: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and _environ(int(p.name)).get("ABSWIN_TEST_MARKER") == marker]


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_workers_end_with_the_training_process(how):
    marker = uuid.uuid4().hex
    env = {"PATH": "/usr/bin:/bin", "ABSWIN_TEST_MARKER": marker, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, how], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    deadline = time.monotonic() + 20
    while _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _with_marker(marker), "DataLoader workers (or their forkserver) outlived the training process"
