"""`make demo` (demo.py) end to end in a tiny configuration: MAE pretraining, then finetuning from
it and from scratch on all labels and on a fraction of them, and linear probes of its encoder and
of random weights, all as ordinary train.py / finetune.py / linprobe.py runs; it prints the table
and saves the curves. (Each run is 1 epoch of 2 batches: about a minute on 2 CPU cores, mostly
the start of the 7 processes.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "data.num_workers=0", "trainer.enable_model_summary=false"]


def test_demo_runs_end_to_end_and_reports(tmp_path):
    out = tmp_path / "demo"
    args = [sys.executable, "demo.py", "--output", str(out), *(f"--override={o}" for o in TINY)]
    # its own session: a timeout ends the demo and the runs it started, not only demo.py
    proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    r = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    assert r.returncode == 0, r.stderr[-3000:]

    assert "| training labels | epochs | from MAE | from scratch | minutes |" in r.stdout
    assert "| all labels | 1 |" in r.stdout and "| 10% of labels | 1 |" in r.stdout
    assert "| all labels, linear probe | 1 |" in r.stdout
    assert re.search(r"\| \d+\.\d% \(\d+/\d+\) \| \d+\.\d% \(\d+/\d+\) \|", r.stdout)  # top-1 and its counts
    assert "experiment=demo_mae" in r.stdout and "data.train_fraction=0.1" in r.stdout
    assert (out / "results.md").read_text().strip() in r.stdout
    png = out / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    summary = json.loads((out / "results.json").read_text())
    assert [row["train_fraction"] for row in summary["rows"]] == [1.0, 0.1, 1.0]
    printed = re.findall(r"\| (\d+\.\d)% \((\d+)/(\d+)\)", r.stdout)  # the table: top-1 (correct/total)
    assert len(printed) == 6
    for row, pair in zip(summary["rows"], (printed[:2], printed[2:4], printed[4:])):
        for init, (percent, correct, total) in zip(("mae", "scratch"), pair):
            assert row[init]["epochs"] == 1 and int(total) > 0
            assert row[init]["val/acc1"] == pytest.approx(int(correct) / int(total), abs=1e-6)
            assert percent == f"{100 * row[init]['val/acc1']:.1f}"
    # the fraction reached the data module: 10% of the 4000 training digits, stratified
    # (in the run's own log too, although the data checks log it before the run directory is accepted)
    log = (out / "finetune" / "ft_10pct_from_scratch" / "finetune.log").read_text()
    assert "training on 400 of 4000 train samples (data.train_fraction=0.1" in log
    assert "pretrained" in (out / "finetune" / "ft_10pct_from_mae" / "run.json").read_text()
    # the probe of the MAE encoder started from the demo's MAE checkpoint, the other from random weights
    probe_log = (out / "linprobe" / "probe_from_mae" / "linprobe.log").read_text()
    assert "initialised from" in probe_log and "pretrain/mae/checkpoints/last.ckpt" in probe_log
    assert "initialised from" not in (out / "linprobe" / "probe_of_random_weights" / "linprobe.log").read_text()
