"""A scheduler's signal at each boundary of an epoch, and Ctrl-C: single-process runs of train.py
that signal themselves at an exact point (tests/injected_callbacks.py), so they can run beside the
multi-process fault tests (tests/test_faults.py)."""

from __future__ import annotations

import re
import signal
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


def signal_and_resume(point: str, data_roots, uninterrupted: Path, tmp_path: Path, name: str = "SIGTERM",
                      group: bool = False) -> None:
    """The run sends signal ``name`` to itself (``group``: to its process group, loader workers
    included) at exactly ``point`` of the middle epoch of three, as it would land in a long run. It
    must exit 128 + the signal having saved within a step, and resuming must give the uninterrupted
    run's weights, bit for bit."""
    overrides, run_name = image_run(data_roots, "trainer.max_epochs=3"), unique_name(f"{name}-{point}")
    inject = ["+callbacks.signal_self._target_=tests.injected_callbacks.SignalSelf",
              f"+callbacks.signal_self.point={point}", "+callbacks.signal_self.epoch=1",
              f"+callbacks.signal_self.signal_name={name}", f"+callbacks.signal_self.group={group}"]
    job = start("single", "train.py", [*overrides, *inject], output_root=tmp_path, run_name=run_name)
    codes = job.wait_gone(TIMEOUT)
    assert f"signal_self: {name} at {point}" in job.output(), job.tails()
    code = 128 + int(getattr(signal, name))
    assert codes == [code], f"expected exit {code} after {name} at {point}, got {codes}\n{job.tails()}"
    sent = int(re.search(rf"signal_self: {name} at \w+, step (\d+)", job.output()).group(1))
    said = int(re.search(rf"preempted: stopped by {name} at step (\d+): saved ", job.output()).group(1))
    saved = last_step(job.run_dir)
    assert saved == said and sent <= saved <= sent + 1, f"signal at step {sent}, said {said}, last.ckpt {saved}"
    resumed = run("single", "train.py", [*overrides, "resume=true"], output_root=tmp_path, run_name=run_name,
                  timeout=TIMEOUT)
    assert trained_steps(resumed.run_dir) == list(range(saved, 3 * STEPS)), "not resumed where it stopped"
    assert_same_weights(resumed.run_dir / "checkpoints" / "last.ckpt", uninterrupted)


@pytest.mark.parametrize("point", BOUNDARIES)
def test_sigterm_at_each_epoch_boundary_resumes_bit_exactly(point, data_roots, uninterrupted, tmp_path):
    """A scheduler's signal can land anywhere: after an epoch's last step, at its end, in validation,
    during the epoch-end save."""
    signal_and_resume(point, data_roots, uninterrupted, tmp_path)


@pytest.mark.parametrize("point", ["mid_batch_end", "validation_start"])
def test_ctrl_c_saves_and_resumes_bit_exactly(point, data_roots, uninterrupted, tmp_path):
    """Ctrl-C reaches the whole process group, loader workers too (they ignore it): in the middle of
    an epoch and during validation it must save as SIGTERM does and exit 130."""
    signal_and_resume(point, data_roots, uninterrupted, tmp_path, name="SIGINT", group=True)
