"""A scheduler's signal at each boundary of an epoch: single-process runs of train.py
that signal themselves at an exact point (tests/injected_callbacks.py), so they can run beside the
multi-process fault tests (tests/test_faults.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from injected_callbacks import POINTS
from launching import assert_same_weights, image_run, last_step, run, start, steps_per_epoch, trained_steps, unique_name

pytestmark = pytest.mark.slow

TIMEOUT = 180  # seconds per launch
STEPS = steps_per_epoch("images")  # 6
BOUNDARIES = [p for p in POINTS if p != "mid_batch_end"]  # mid-epoch: test_faults.py's SIGTERM test


@pytest.fixture(scope="module")
def uninterrupted(data_roots, tmp_path_factory) -> Path:
    """last.ckpt of one uninterrupted single-process run of 3 epochs."""
    out = tmp_path_factory.mktemp("uninterrupted")
    straight = run("single", "train.py", image_run(data_roots, "trainer.max_epochs=3"), output_root=out,
                   run_name=unique_name("straight"), timeout=TIMEOUT)
    return straight.run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("point", BOUNDARIES)
def test_sigterm_at_each_epoch_boundary_resumes_bit_exactly(point, data_roots, uninterrupted, tmp_path):
    """A scheduler's signal can land anywhere: after an epoch's last step, at its end, in validation,
    during the epoch-end save. The run sends it to itself at exactly that point (tests/signal_self.py);
    it must exit 143 having saved, and resuming must give the uninterrupted run's weights, bit for bit.
    The signal comes in the middle epoch of three, as it would in a long run."""
    overrides, name = image_run(data_roots, "trainer.max_epochs=3"), unique_name(point)
    inject = ["+callbacks.signal_self._target_=tests.injected_callbacks.SignalSelf",
              f"+callbacks.signal_self.point={point}", "+callbacks.signal_self.epoch=1"]
    job = start("single", "train.py", [*overrides, *inject], output_root=tmp_path, run_name=name)
    codes = job.wait_gone(TIMEOUT)
    assert f"signal_self: SIGTERM at {point}" in job.output(), job.tails()
    assert codes == [143], f"expected exit 143 after SIGTERM at {point}, got {codes}\n{job.tails()}"
    sent = int(re.search(r"signal_self: SIGTERM at \w+, step (\d+)", job.output()).group(1))
    said = int(re.search(r"preempted: stopped by SIGTERM at step (\d+): saved ", job.output()).group(1))
    saved = last_step(job.run_dir)
    assert saved == said and sent <= saved <= sent + 1, f"signal at step {sent}, said {said}, last.ckpt {saved}"
    resumed = run("single", "train.py", [*overrides, "resume=true"], output_root=tmp_path, run_name=name,
                  timeout=TIMEOUT)
    assert trained_steps(resumed.run_dir) == list(range(saved, 3 * STEPS)), "not resumed where it stopped"
    assert_same_weights(resumed.run_dir / "checkpoints" / "last.ckpt", uninterrupted)
