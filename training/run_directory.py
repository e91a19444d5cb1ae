"""One owner per run directory, and nothing in it changed before a run is accepted.

A run directory (``outputs/<task>/<run_name>``) holds a week of work. :func:`claim` decides, before
anything in it is written, whether a new start may use it:

* a lock (``.lock``, ``flock``) held by global rank 0 for the run's lifetime: a second run on the
  same directory stops with one line; the lock of a process that died is free again, and taking
  it over is said;
* ``resume`` decides between a fresh run, a continuation and a refusal (see :func:`resume_plan`);
  a scheduler job that was requeued continues its own run (``run.json`` names the job);
* a continued run is compared with the run it continues: another task, seed, data set, data root,
  subset, global batch, class list, model, position embedding, image size or clip is refused,
  naming the differences; other changed settings are listed as taking effect (the run is built
  from its config) or not (lr, betas, weight decay: the checkpoint's optimizer state holds them);
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

from .atomic_save import atomic_write_text

log = logging.getLogger("abswin")

__all__ = ["RunClaim", "RunFinished", "claim", "config_changes", "open_run"]

RUN_FILE = "run.json"      # the accepted config and the scheduler job that runs it
LOCK_FILE = ".lock"
RESULTS_FILE = "results.json"

# settings a continued run must share with the run it continues: what it trains on, in which order,
# with which model and global batch
FIXED = ("task", "seed", "data._target_", "data.name", "data.root", "data.img_size", "data.num_frames",
         "data.sampling_rate", "data.batch_size", "data.train_fraction", "data.num_classes", "data.class_index",
         "data.mode", "data.seed", "module.model_name", "model.pos_embed", "model.global_pos_size",
         "model.window_pos_embed", "module.ema_decay")
# held by the checkpoint's optimizer state (each group's lr, betas, weight decay, layer-decay scale):
# a change of these does not take effect; every other change does (the run is built from its config)
FROM_CHECKPOINT = ("module.lr", "module.blr", "module.batch_size", "module.betas", "module.weight_decay",
                   "module.layer_decay")


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
            atomic_write_text(self.run_dir / RUN_FILE, json.dumps({"job_id": self.job_id, "config": config}, indent=1))
        self._handlers.append(log_to_file(self.run_dir, self._handlers[0]))
        for each in loggers:
            each.log_hyperparams({"config": config})

    def finish(self, metrics: dict[str, float], global_step: int, epochs: int, is_global_zero: bool,
               classes: list[str] | None = None) -> dict:
        """Write ``results.json`` (rank 0): what a restart reads to tell a finished run; with the
        class names in label order (what the metrics' labels mean)."""
        if is_global_zero:
            results = {"metrics": metrics, "progress": {"global_step": global_step, "epochs": epochs},
                       "run_dir": str(self.run_dir), "checkpoints": str(self.run_dir / "checkpoints"),
                       "classes": None if classes is None else list(classes)}
            atomic_write_text(self.run_dir / RESULTS_FILE, json.dumps(results, indent=2))
            log.info("results: %s", json.dumps(metrics))
        return metrics

    def release(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # a clean end leaves no owner to take over
            os.close(self._lock_fd)
            self._lock_fd = None


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
        if a.get(key) == b.get(key) or key.startswith(("hydra.", "paths.run_dir", "resume", "recipe.")):
            continue
        text = f"{key}: {a.get(key)} -> {b.get(key)}"
        if key in FIXED:
            refused.append(text)
        elif key in FROM_CHECKPOINT:
            ignored.append(text)
        else:
            live.append(text)
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


# what a start of ours may leave before its first checkpoint (the log, the loggers' folders, the W&B
# id), and what a sweep or submitit put beside a job: not someone else's files
OURS = {LOCK_FILE, "csv", "wandb", "plots", "checkpoints", "wandb_run_id.txt", "multirun.yaml", ".submitit",
        ".hydra"}


def _run_files(run_dir: Path) -> list[str]:
    """The files that say ``run_dir`` holds a run that trained (any one is enough: people delete
    ``last.ckpt`` to save disk and keep ``best.ckpt`` and ``results.json``)."""
    found = [RESULTS_FILE] if (run_dir / RESULTS_FILE).exists() else []
    return found + sorted(f"checkpoints/{p.name}" for p in (run_dir / "checkpoints").glob("*.ckpt"))


def foreign_files(run_dir: Path) -> list[str]:
    """What ``run_dir`` holds besides what a start of ours leaves: a fresh run starts only where there
    is nothing else (``hydra.run.dir=`` may point at someone's folder)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name not in OURS and p.name != RUN_FILE and not p.name.endswith(".log"))


def resume_plan(resume: Any, run_dir: Path, job_id: str | None, rank: int = 0) -> str | None:
    """The checkpoint to continue: ``resume`` false (a fresh run, or the same scheduler job
    requeued), true (must continue), 'auto' (continue if there is a checkpoint) or a path. A fresh
    start never reuses a directory that holds a run that trained, or files not ours; one whose
    start stopped before its first checkpoint (only ``run.json`` and logs) starts again. Every rank
    decides the same: rank 0's ``run.json`` and log, which another rank may already see, change
    nothing here."""
    last = run_dir / "checkpoints" / "last.ckpt"
    held = _run_files(run_dir)
    if resume in (None, False, "false", "False", "auto"):
        if not held:
            foreign = foreign_files(run_dir)
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise FileExistsError(f"{run_dir} is not empty ({shown}) and holds no run: a new run starts in a "
                                      f"new or empty directory (pass run_name=NEW_NAME)")
            if rank == 0 and (run_dir / RUN_FILE).exists():
                log.warning("%s holds a run that stopped before its first checkpoint: starting it again", run_dir)
            return None
        owner = (_read_json(run_dir / RUN_FILE) or {}).get("job_id")
        if last.exists() and (resume == "auto" or (job_id is not None and job_id == owner)):
            if resume != "auto" and rank == 0:
                log.info("job %s was requeued: continuing %s", job_id, last)
            return str(last)
        missing = "" if last.exists() else " (no checkpoints/last.ckpt to continue)"
        raise FileExistsError(f"{run_dir} already holds a run ({', '.join(held)}){missing}: pass "
                              f"{'resume=true to continue it, or ' if last.exists() else ''}run_name=NEW_NAME to start "
                              f"another")
    if resume in (True, "true", "True"):
        if not last.exists():
            raise FileNotFoundError(f"resume=true but there is no {last} to continue; start with resume=false")
        return str(last)
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
        if run.ckpt_path is not None and rank == 0:  # a truncated last.ckpt (a full disk, a crash mid-copy) too
            check_resume_file(run.ckpt_path)
        held = _run_files(run_dir)
        if run.ckpt_path is not None and held and Path(run.ckpt_path).resolve().parent.parent != run_dir.resolve():
            raise FileExistsError(f"{run_dir} already holds a run ({', '.join(held)}): resume={run.ckpt_path} "
                                  f"continues another run's checkpoint into a new run name (pass run_name=NEW_NAME)")
        yield run
    finally:
        run.release()
        remove_handlers(*run._handlers)


def claim(run_dir: Path, resume: Any, config: dict, job_id: str | None, rank: int) -> RunClaim:
    """Decide whether this start may use ``run_dir`` (module docstring). Writes nothing but the
    lock; raises a one-line ``FileExistsError``/``ValueError`` or :class:`RunFinished`.
    Ranks other than 0 take no lock and follow rank 0's files."""
    lock_was_there = (run_dir / LOCK_FILE).exists()
    fd = _take_lock(run_dir) if rank == 0 else None
    try:
        ckpt_path = resume_plan(resume, run_dir, job_id, rank)
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
                notes.append("changes that do NOT take effect on resume (the checkpoint's optimizer state holds "
                             "each group's lr, betas and weight decay): " + "; ".join(ignored))
        if fd is not None and (ckpt_path is not None or _run_files(run_dir) or (run_dir / RUN_FILE).exists()):
            _remove_partial_saves(run_dir)  # our own, of a write that was killed: never someone else's
        return RunClaim(run_dir, ckpt_path, notes, fd, job_id)
    except BaseException:
        RunClaim(run_dir, None, _lock_fd=fd).release()  # a refused start leaves no owner behind
        if fd is not None and not lock_was_there:
            (run_dir / LOCK_FILE).unlink()  # nor a lock file of its own
            if not any(run_dir.iterdir()):
                run_dir.rmdir()  # nor a directory of its own
        raise
