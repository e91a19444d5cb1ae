"""Faults in real multi-process runs of the entry points: a rank killed, hung or terminated,
a whole job killed and resumed, SLURM preemption with requeue, and submitit preemption.
Every run is a separate process tree; a hang fails the test instead of hanging pytest."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from launching import (
    COMMON,
    cmdline,
    assert_same_weights,
    data_overrides,
    image_run,
    last_step,
    run,
    slurm_job_id,
    start,
    steps_per_epoch,
    trained_steps,
    unique_name,
    wait_for_step,
)

pytestmark = pytest.mark.xdist_group("launches")  # multi-process runs: one at a time (Makefile: --dist loadgroup)

TIMEOUT = 180  # seconds per launch; 2 epochs take about 20 s
STEPS = steps_per_epoch("images")  # 6


@pytest.mark.parametrize("launcher", ["lightning", "slurm"])
@pytest.mark.slow
def test_a_killed_rank_takes_the_others_down(launcher, data_roots, tmp_path):
    """docs/reliability.md: rank 0 ends within seconds with one line naming the cause, exit 1."""
    job = start(launcher, "train.py", image_run(data_roots), output_root=tmp_path, run_name=unique_name("kill1"))
    job.wait_for_ranks(2)
    job.wait_for_step(3)
    job.signal(signal.SIGKILL, rank=1)
    killed = time.monotonic()
    (code,) = job.wait(30, only=0)
    assert time.monotonic() - killed < 30
    assert code == 1, f"rank 0 exited {code}, expected 1\n{job.tails()}"
    last = job.stderr(0).strip().splitlines()[-1]
    assert re.fullmatch(r"error: rank 0 at step \d+: another rank closed its connection.*", last), last
    assert sum(line.startswith("error:") for line in job.stderr(0).splitlines()) == 1, job.stderr(0)[-2000:]
    job.wait_gone(30)


@pytest.mark.slow
def test_a_hung_rank_ends_the_run_with_one_error_line(data_roots, tmp_path):
    job = start("slurm", "train.py", image_run(data_roots, "trainer.strategy.timeout_s=15"), output_root=tmp_path,
                run_name=unique_name("hang"))
    ranks = job.wait_for_ranks(2)
    step = job.wait_for_step(3)
    os.kill(ranks[1], signal.SIGSTOP)
    try:
        (code,) = job.wait(90, only=0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ranks[1], signal.SIGKILL)
    assert code == 1, f"rank 0 exited {code}, expected 1\n{job.tails()}"
    last = job.stderr(0).strip().splitlines()[-1]
    m = re.match(r"error: rank 0 at step (\d+): ", last)
    assert m and int(m.group(1)) >= step, f"last line of rank 0's stderr: {last!r}"


@pytest.mark.parametrize("message,reason", [
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Timed out waiting 15000ms for recv operation",
     "process-group timeout (15 s"),
    ("Application timeout caused pair closure", "process-group timeout (15 s"),  # gloo, the op after a timeout
    ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234",
     "closed its connection"),
    ("NCCL communicator was aborted on rank 1", "a collective failed (NCCL communicator"),
])
def test_every_known_collective_error_becomes_one_line(message, reason):
    from training.ddp import distributed_failure

    failure = distributed_failure(RuntimeError(message), rank=0, step=7, timeout_s=15)
    assert failure is not None and str(failure).startswith("rank 0 at step 7: ") and reason in str(failure)
    assert "\n" not in str(failure)
    assert distributed_failure(RuntimeError("CUDA out of memory"), 0, 7, 15) is None


@pytest.mark.slow
def test_sigterm_to_one_rank_saves_on_both_exits_143_and_resumes_bit_exactly(data_roots, tmp_path):
    """docs/reliability.md: SIGTERM to rank 0 only: both ranks save last.ckpt at the same step, the
    run exits 143, and resuming gives weights bit-identical to an uninterrupted run."""
    overrides, name = image_run(data_roots), unique_name("term")
    job = start("lightning", "train.py", overrides, output_root=tmp_path, run_name=name)
    job.wait_for_ranks(2)
    step = job.wait_for_step(3)
    job.signal(signal.SIGTERM, rank=0)
    codes = job.wait_gone(60)
    assert codes == [143], f"expected exit 143 (128 + SIGTERM), got {codes}\n{job.tails()}"
    saved = last_step(job.run_dir)
    said = dict(re.findall(r"rank (\d): SIGTERM at step (\d+), saved", job.output()))
    assert said == {"0": str(saved), "1": str(saved)}, f"each rank must say it saved at step {saved}: {said}"
    assert step <= saved < 2 * STEPS

    resumed = run("lightning", "train.py", [*overrides, "resume=true"], output_root=tmp_path, run_name=name,
                  timeout=TIMEOUT)
    assert trained_steps(resumed.run_dir) == list(range(saved, 2 * STEPS)), "not resumed where it stopped"
    straight = run("lightning", "train.py", overrides, output_root=tmp_path, run_name=unique_name("straight"),
                   timeout=TIMEOUT)
    assert_same_weights(resumed.run_dir / "checkpoints" / "last.ckpt", straight.run_dir / "checkpoints" / "last.ckpt")


EXACT = [  # launcher, data, entry point, extra overrides, steps per epoch, the step to kill at
    pytest.param("lightning", "images", "train.py", [], STEPS, STEPS + 2, id="lightning-images-train"),
    pytest.param("single", "video", "finetune.py", ["data.batch_size=2"], 4, 6, id="single-video-finetune"),
]


@pytest.mark.parametrize("launcher,kind,script,extra,steps,kill_at", EXACT)
@pytest.mark.slow
def test_killed_mid_epoch_resumes_bit_exactly(launcher, kind, script, extra, steps, kill_at, data_roots, tmp_path):
    overrides = [*data_overrides(kind, data_roots[kind]), *COMMON, "logger=csv",
                 "callbacks.last.every_n_train_steps=1", *extra]
    name = unique_name("split")
    job = start(launcher, script, overrides, output_root=tmp_path, run_name=name)
    job.wait_for_ranks(2 if launcher != "single" else 1)
    job.wait_for_step(kill_at)
    job.signal(signal.SIGKILL)  # every rank
    job.wait_gone(60)
    saved = last_step(job.run_dir)
    assert steps < saved < 2 * steps, "expected a checkpoint in the middle of epoch 1"

    resumed = run(launcher, script, [*overrides, "resume=true"], output_root=tmp_path, run_name=name,
                  timeout=TIMEOUT)
    assert trained_steps(resumed.run_dir) == list(range(saved, 2 * steps)), "not resumed where it stopped"
    straight = run(launcher, script, overrides, output_root=tmp_path, run_name=unique_name("straight"),
                   timeout=TIMEOUT)
    assert last_step(resumed.run_dir) == last_step(straight.run_dir) == 2 * steps
    assert_same_weights(resumed.run_dir / "checkpoints" / "last.ckpt", straight.run_dir / "checkpoints" / "last.ckpt")


def write_scontrol_stub(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A fake `scontrol` first on PATH that appends its arguments to a file."""
    calls = tmp_path / "scontrol_calls.txt"
    stub = tmp_path / "bin" / "scontrol"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    return {"PATH": f"{stub.parent}:{os.environ['PATH']}"}, calls


@pytest.mark.slow
def test_slurm_preemption_requeues_and_the_requeued_job_resumes_exactly(data_roots, tmp_path):
    env, calls = write_scontrol_stub(tmp_path)
    overrides, name, job_id = image_run(data_roots), unique_name("preempt"), slurm_job_id()
    job = start("slurm", "train.py", overrides, output_root=tmp_path, run_name=name, env=env, slurm_job=job_id)
    job.wait_for_ranks(2)
    step = job.wait_for_step(STEPS + 2)
    job.signal(signal.SIGUSR1)  # both ranks, as SLURM does before preempting
    codes = job.wait_gone(90)
    assert codes == [138, 138], f"expected exit 138 (128 + SIGUSR1) from both tasks, got {codes}\n{job.tails()}"
    assert calls.is_file() and f"requeue {job_id}" in calls.read_text(), "scontrol requeue was not called"
    saved = last_step(job.run_dir)
    assert step <= saved <= step + 2

    # the requeued job: same job id and overrides, no resume=
    again = run("slurm", "train.py", overrides, output_root=tmp_path, run_name=name, slurm_job=job_id,
                env={**env, "SLURM_RESTART_COUNT": "1"}, timeout=TIMEOUT)
    assert trained_steps(again.run_dir) == list(range(saved, 2 * STEPS)), "not resumed from the checkpoint"
    straight = run("slurm", "train.py", overrides, output_root=tmp_path, run_name=unique_name("straight"),
                   env=env, timeout=TIMEOUT)
    assert last_step(again.run_dir) == 2 * STEPS
    assert_same_weights(again.run_dir / "checkpoints" / "last.ckpt", straight.run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_submitit_local_preemption_requeues_and_resumes(data_roots, tmp_path):
    """`train.py -m hydra/launcher=submitit_local`: SIGUSR2 to the task (what submitit's controller
    sends on timeout, and SLURM on preemption) checkpoints, requeues, and the new task resumes.
    (LocalJob._interrupt() would signal the controller, which dies of SIGUSR2 without forwarding it.)"""
    overrides, name = image_run(data_roots), unique_name("submitit")
    job = start("single", "train.py", ["-m", "hydra/launcher=submitit_local", *overrides], output_root=tmp_path,
                run_name=name)
    sweep = tmp_path / "pretrain" / f"sweep-{name}"

    def task() -> int | None:
        return next((p for p in job.pids() if "submitit.core._submit" in cmdline(p)), None)

    def log() -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(sweep.glob(".submitit/*/*_0_log.*")))

    step = wait_for_step(log, STEPS + 2, 120, job)
    first = task()
    os.kill(first, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while cmdline(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cmdline(first), "the task did not exit after SIGUSR2"
    (run_dir,) = {p.parent.parent for p in sweep.glob("*/checkpoints/last.ckpt")}
    saved = last_step(run_dir)  # read before the requeued task (seconds to start) writes another
    assert step <= saved <= step + 2, "no checkpoint at the preemption step"

    (code,) = job.wait(TIMEOUT)
    assert code == 0, job.tails()
    assert "Requeued job" in log(), log()[-3000:]
    assert trained_steps(run_dir) == list(range(saved, 2 * STEPS)), "the requeued task did not resume"
    straight = run("single", "train.py", overrides, output_root=tmp_path, run_name=unique_name("straight"),
                   timeout=TIMEOUT)
    assert last_step(run_dir) == 2 * STEPS
    assert_same_weights(run_dir / "checkpoints" / "last.ckpt", straight.run_dir / "checkpoints" / "last.ckpt")
