"""Preemption and time limits: save a mid-epoch checkpoint, requeue, stop with a non-zero status.

Schedulers warn a job before they end it: SLURM sends the signal of ``--signal=USR1@90`` 90 s
before the time limit, submitit sends SIGUSR2 (``USR2@90``), and a plain ``kill``, ``scancel`` or
``docker stop`` sends SIGTERM. :class:`PreemptionCheckpoint` handles them in three steps:

1. The signal handler only records the signal (more than that inside a handler can deadlock a
   collective). A second signal while the first is pending ends the process at once.
2. At the next training-batch boundary all ranks agree, with one all-reduce, whether any of them
   got a signal (``srun`` signals every rank, a ``kill`` maybe only one). Then every rank takes part
   in saving ``last.ckpt`` at this step; :mod:`datamodules.loading` and
   :class:`~training.callbacks.exact_resume.ExactResume` make resuming from it exact.
3. The job is requeued (never after Ctrl-C): by the handler that was there before training (submitit's, which also
   ends the process), or with ``scontrol requeue $SLURM_JOB_ID`` for a SLURM job signalled with
   anything but SIGTERM. Then :class:`Preempted` is raised; the entry points exit with status
   128 + the signal's number (143 for SIGTERM), so no scheduler mistakes the stop for success.

A requeued job continues from ``last.ckpt`` by itself (see :func:`training.run_directory.resume_plan`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch

from ..lightning_private import accumulating

log = logging.getLogger("abswin")

__all__ = ["Preempted", "PreemptionCheckpoint", "requeue_slurm_job", "scheduler_job_id"]


def scheduler_job_id() -> str | None:
    """The id of the scheduler job this process belongs to: the same after a requeue, so a
    requeued job can tell its own run directory. SLURM (array tasks included) or submitit's local
    executor; None elsewhere."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm:{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}"
    if os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"submitit-local:{os.environ['SUBMITIT_LOCAL_JOB_ID']}"
    return None


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this SLURM job (the array task for arrays); True if it worked."""
    job = (scheduler_job_id() or "").removeprefix("slurm:")
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not requeue SLURM job %s: %s", job, e)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
    return result.returncode == 0


class Preempted(Exception):
    """Training stopped on a scheduler's signal after saving ``path`` at ``step``."""

    def __init__(self, signum: int, step: int, path: Path | None, requeued: bool) -> None:
        self.signum, self.step, self.path, self.requeued = signum, step, path, requeued
        name = signal.Signals(signum).name
        saved = f"saved {path}" if path is not None else "nothing saved (training had not started)"
        then = ("the job is requeued and resumes there by itself" if requeued
                else "continue with resume=true (or resume=auto)")
        super().__init__(f"stopped by {name} at step {step}: {saved}; {then}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _signal_number(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return int(getattr(signal, name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"))
    except AttributeError:
        raise ValueError(f"callbacks.preemption.signals: unknown signal {name!r} (e.g. SIGUSR1, SIGUSR2, SIGTERM)")


class PreemptionCheckpoint(pl.Callback):
    """On one of ``signals`` (any rank): save ``dirpath/filename`` at the next batch boundary on
    every rank, requeue, raise :class:`Preempted` (see the module docstring).

    Args:
        dirpath: the checkpoint folder (the run's ``checkpoints/``).
        filename: the file written (``last.ckpt``: what ``resume=`` and a requeued job continue).
        signals: signal names to handle.
    """

    REPEAT_S = 1.0  # a second signal sooner than this is the same one passed on twice

    def __init__(self, dirpath: str, filename: str = "last.ckpt",
                 signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")) -> None:
        self.path = Path(dirpath) / filename
        self.signals = [_signal_number(s) for s in signals]
        self.received: int | None = None
        self._received_at = 0.0
        self._before_training: dict[int, object] = {}

    # ------------------------------------------------------------------ signal handling
    def _record(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.received is not None:
            if now - self._received_at < self.REPEAT_S:  # one signal delivered twice
                return
            signal.signal(signum, signal.SIG_DFL)  # a second signal: stop now
            os.kill(os.getpid(), signum)
            return
        self.received, self._received_at = signum, now
        if signum == signal.SIGINT:  # os.write: logging is not safe inside a handler
            os.write(2, b"\nCtrl-C: saving last.ckpt at the next training step, then stopping "
                        b"(Ctrl-C again to stop at once, losing the steps since the last checkpoint)\n")

    def setup(self, trainer, pl_module, stage: str) -> None:
        # the handlers before Lightning's: submitit's requeue handler, for instance
        self._before_training = {s: signal.getsignal(s) for s in self.signals}

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning's own handlers (its SIGTERM handler calls a collective inside the
        # handler); Lightning puts the previous handlers back when fit ends
        for s in self.signals:
            signal.signal(s, self._record)

    # ------------------------------------------------------------------ acting on it
    def _agreed_signal(self, trainer) -> int:
        """The signal any rank received (0: none); every rank calls this at the same batch."""
        flag = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if accumulating(trainer):  # accumulated gradients are not in checkpoints
            return
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank: rank 0 writes, all wait for it
        log.warning("rank %d: %s at step %d, saved %s", trainer.global_rank, signal.Signals(signum).name,
                    trainer.global_step, self.path)
        requeued = self._requeue(trainer, signum)
        raise Preempted(signum, trainer.global_step, self.path, requeued)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Ctrl-C before training started (sanity checking) or a second Ctrl-C: nothing is saved
        then; say what was kept and how to continue."""
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        kept = "no checkpoint yet: start again"
        if self.path.is_file():
            try:
                step = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
                kept = f"{self.path} (step {step}) is kept: resume=true continues from there"
            except Exception:  # noqa: BLE001 - a message, not a check
                kept = f"{self.path} is kept: resume=true continues from it"
        log.warning("interrupted (Ctrl-C) at step %d: the steps since the last checkpoint are lost; %s (send "
                    "SIGTERM instead to save first)", trainer.global_step, kept)

    def _requeue(self, trainer, signum: int) -> bool:
        if signum == signal.SIGINT:  # a person stopped it
            return False
        previous = self._before_training.get(signum)
        if callable(previous):  # e.g. submitit: it requeues (global rank 0) and ends the process
            previous(signum, None)
            return True
        if signum != signal.SIGTERM and scheduler_job_id() and scheduler_job_id().startswith("slurm:"):
            ok = requeue_slurm_job() if trainer.is_global_zero else True
            return bool(trainer.strategy.broadcast(ok, src=0))
        return False
