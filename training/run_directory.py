"""One owner per run directory, and nothing in it changed before a run is accepted.

A run directory (``outputs/<task>/<run_name>``) holds a week of work. :func:`claim` decides, before
anything in it is written, whether a new start may use it:

* a lock (``.lock``, ``flock``) held by global rank 0 for the run's lifetime: a second run on the
  same directory stops with one line; the lock of a process that died is free again, and taking
  it over is said;
* ``resume`` decides between a fresh run, a continuation and a refusal (see :func:`resume_plan`);
  a scheduler job that was requeued continues its own run (``run.json`` names the job);
* a continued run is compared with the run it continues: another task, data set, data root,
  model, position embedding, image size or clip length is refused, naming the differences; other
  changed settings are listed as taking effect or not (the optimizer and lr schedule come from
  the checkpoint);
* a finished run (``results.json``) restarted with nothing more to train says so and changes
  nothing;
* temporary files of a checkpoint write that was killed half-way are removed.

Only plain dicts here: the entry point passes the resolved config. :func:`open_run` is the whole
life of a run directory in one ``with`` block: claimed, accepted once the run starts, released.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("abswin")

__all__ = ["RunClaim", "RunFinished", "claim", "config_changes", "open_run"]

RUN_FILE = "run.json"      # the accepted config and the scheduler job that runs it
LOCK_FILE = ".lock"
RESULTS_FILE = "results.json"

# settings a continued run must share with the run it continues
FIXED = ("task", "data.name", "data.root", "data.img_size", "data.num_frames", "module.model_name",
         "model.pos_embed", "model.global_pos_size", "model.window_pos_embed")
# settings read again on resume; every other change is fixed by the checkpoint
LIVE_PREFIXES = ("trainer.", "callbacks.", "logger.", "paths.", "resume", "pretrained", "require_pretrained",
                 "data.num_workers", "data.eval_batch_size", "data.decode_timeout", "data.decoder", "run_name",
                 "module.eval_views_per_forward", "per_device_batch", "model.fits_per_device")


class RunFinished(Exception):
    """The run in this directory is complete and the new start has nothing more to train."""


@dataclass
class RunClaim:
    """What :func:`claim` decided: the checkpoint to continue (None: a fresh run) and the lock."""

    run_dir: Path
    ckpt_path: str | None
    notes: list[str] = field(default_factory=list)
    _lock_fd: int | None = None
    job_id: str | None = None
    finished: str | None = None  # why a restart of a finished run has nothing to do (then nothing else is set)
    _handlers: list = field(default_factory=list)

    def accept(self, config: dict, loggers=()) -> None:
        """From here on the directory belongs to this run: ``run.json`` (rank 0), the log file (with
        the records held so far), and the whole config beside each logger's hyperparameters."""
        from .run_logs import log_to_file

        if self._lock_fd is not None:
            _atomic_write(self.run_dir / RUN_FILE, json.dumps({"job_id": self.job_id, "config": config}, indent=1))
        self._handlers.append(log_to_file(self.run_dir, self._handlers[0]))
        for each in loggers:
            each.log_hyperparams({"config": config})

    def finish(self, metrics: dict[str, float], global_step: int, epochs: int, is_global_zero: bool) -> dict:
        """Write ``results.json`` (rank 0): what a restart reads to tell a finished run."""
        if is_global_zero:
            results = {"metrics": metrics, "progress": {"global_step": global_step, "epochs": epochs},
                       "run_dir": str(self.run_dir), "checkpoints": str(self.run_dir / "checkpoints")}
            (self.run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
            log.info("results: %s", json.dumps(metrics))
        return metrics

    def release(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # a clean end leaves no owner to take over
            os.close(self._lock_fd)
            self._lock_fd = None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_changes(old: dict, new: dict) -> tuple[list[str], list[str], list[str]]:
    """``(refused, live, ignored)`` changes between two resolved configs, as ``key: old -> new``."""
    a, b = _flat(old), _flat(new)
    refused, live, ignored = [], [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or key.startswith(("hydra.", "paths.run_dir", "resume")):
            continue
        text = f"{key}: {a.get(key)} -> {b.get(key)}"
        if key in FIXED:
            refused.append(text)
        elif key.startswith(LIVE_PREFIXES):
            live.append(text)
        else:
            ignored.append(text)
    return refused, live, ignored


def _take_lock(run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FileExistsError(f"{run_dir} is in use by a running job ({owner}): wait for it, or pass "
                              f"run_name=NEW_NAME") from None
    previous = os.read(fd, 200).decode(errors="replace").strip()
    if previous:
        log.warning("took over the lock of %s, which is no longer running", previous)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return fd


def _remove_partial_saves(run_dir: Path) -> None:
    stale = list((run_dir / "checkpoints").glob(".*.tmp")) + list(run_dir.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d temporary file(s) of an interrupted write in %s", len(stale), run_dir)


def resume_plan(resume: Any, run_dir: Path, job_id: str | None) -> str | None:
    """The checkpoint to continue: ``resume`` false (a fresh run, or the same scheduler job
    requeued), true (must continue), 'auto' (continue if there is a checkpoint) or a path."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume in (None, False, "false", "False"):
        if not last.exists():
            return None
        owner = (_read_json(run_dir / RUN_FILE) or {}).get("job_id")
        if job_id is not None and job_id == owner:
            log.info("job %s was requeued: continuing %s", job_id, last)
            return str(last)
        raise FileExistsError(f"{run_dir} already holds a run (checkpoints/last.ckpt): pass resume=true to "
                              f"continue it, or run_name=NEW_NAME to start another")
    if resume in (True, "true", "True"):
        if not last.exists():
            raise FileNotFoundError(f"resume=true but there is no {last} to continue; start with resume=false")
        return str(last)
    if resume == "auto":
        return str(last) if last.exists() else None
    return str(resume)


def _nothing_left(results: dict, config: dict) -> bool:
    done = results.get("progress") or {}
    trainer = config.get("trainer", {})
    max_steps = trainer.get("max_steps", -1)
    if max_steps not in (None, -1):
        return done.get("global_step", 0) >= max_steps
    max_epochs = trainer.get("max_epochs")
    return max_epochs is not None and done.get("epochs", 0) >= max_epochs


def check_resume_file(path: str) -> None:
    """``resume=PATH`` gets the checks of ``pretrained=``: a one-line error for a missing, truncated,
    foreign or code-running file, and for one that is not a training checkpoint."""
    from abswin.checkpoint import CheckpointError, check_finite, read_checkpoint

    obj = read_checkpoint(path)
    missing = [k for k in ("state_dict", "optimizer_states", "loops") if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path}: not a training checkpoint of this project (no "
                              f"{', '.join(missing)}): resume= continues a run, pretrained= starts from weights")
    check_finite(obj["state_dict"], path)


@contextlib.contextmanager
def open_run(run_dir: Path, resume: Any, config: dict, rank: int):
    """Claim ``run_dir`` for this start (:func:`claim`), hold the log until :meth:`RunClaim.accept`,
    and release the lock however the run ends. A finished run yields a claim that says so."""
    from .callbacks.preemption import scheduler_job_id
    from .run_logs import hold_log, remove_handlers

    try:
        run = claim(run_dir, resume, config, scheduler_job_id(), rank)
    except RunFinished as e:  # not an error: a sweep goes on with its next job
        yield RunClaim(run_dir, None, finished=str(e))
        return
    run._handlers.append(hold_log())
    try:
        for note in run.notes:
            log.warning(note)
        if run.ckpt_path is not None and Path(run.ckpt_path) != run_dir / "checkpoints" / "last.ckpt":
            check_resume_file(run.ckpt_path)
        yield run
    finally:
        run.release()
        remove_handlers(*run._handlers)


def claim(run_dir: Path, resume: Any, config: dict, job_id: str | None, rank: int) -> RunClaim:
    """Decide whether this start may use ``run_dir`` (module docstring). Writes nothing but the
    lock; raises a one-line ``FileExistsError``/``ValueError`` or :class:`RunFinished`.
    Ranks other than 0 take no lock and follow rank 0's files."""
    fd = _take_lock(run_dir) if rank == 0 else None
    try:
        ckpt_path = resume_plan(resume, run_dir, job_id)
        notes: list[str] = []
        previous = _read_json(run_dir / RUN_FILE)
        if ckpt_path is not None and previous is not None and Path(ckpt_path).parent.parent == run_dir:
            refused, live, ignored = config_changes(previous.get("config", {}), config)
            if refused:
                raise ValueError(f"{run_dir} holds a run of another setup ({'; '.join(refused)}): "
                                 f"pass run_name=NEW_NAME for a new run")
            results = _read_json(run_dir / RESULTS_FILE)
            if results is not None and _nothing_left(results, config):
                raise RunFinished(f"{run_dir} holds a finished run ({results.get('progress')}): nothing to "
                                  f"train, nothing changed (raise trainer.max_epochs to train more)")
            if live:
                notes.append("changes that take effect on resume: " + "; ".join(live))
            if ignored:
                notes.append("changes that do NOT take effect on resume (the checkpoint's optimizer, lr "
                             "schedule and model settings win): " + "; ".join(ignored))
        if fd is not None:
            _remove_partial_saves(run_dir)
        return RunClaim(run_dir, ckpt_path, notes, fd, job_id)
    except BaseException:
        RunClaim(run_dir, None, _lock_fd=fd).release()  # a refused start leaves no owner behind
        if fd is not None and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
            (run_dir / LOCK_FILE).unlink()  # nor a directory of its own
            run_dir.rmdir()
        raise
