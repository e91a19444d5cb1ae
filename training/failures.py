"""How a run ends when it cannot go on: one line on stderr and an exit status, never a traceback.

* bad input (a config value, a missing file, a run directory in use): ``error: ...``, status 2;
* a failed collective (a rank died or hung), a diverged run, or a write the storage refused (a full
  disk, a read-only folder) during training: ``error: ...``, status 1;
* stopped by a scheduler's signal after saving: ``preempted: ...``, status 128 + the signal;
* a job of a ``-m`` sweep run in this process that fails lets the next job run; the sweep then ends
  with one more line naming the failed jobs, and the worst of their statuses.

``ABSWIN_DEBUG=1`` shows the full traceback instead. :func:`run_entry_point` wraps the whole
``@hydra.main`` call (for Hydra's own composition errors), :func:`exits_in_one_line` the task
function, and :func:`one_line_failures` ``trainer.fit`` / ``trainer.validate``, turning Lightning's
and the collectives' errors into ours.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
from pathlib import Path

from .ddp import DDPStrategy, DistributedFailure, distributed_failure
from .callbacks.nonfinite import NonFiniteError
from .callbacks.preemption import Preempted

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError)
STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


def storage_failure(error: BaseException) -> str | None:
    """One line for a write that the storage refused (a full disk, a read-only folder), found
    anywhere in the chain of ``error`` (torch and Lightning wrap the OSError); None otherwise."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            where = f" writing {error.filename}" if error.filename else ""
            return f"{STORAGE_ERRNOS[error.errno]}{where} ({os.strerror(error.errno)})"
        text = str(error)
        for code, reason in STORAGE_ERRNOS.items():
            if os.strerror(code) in text:
                return f"{reason} ({os.strerror(code)}): {text.splitlines()[0][:200]}"
        error = error.__cause__ or error.__context__
    return None


def hydra_error_line(error: BaseException) -> str:
    """Hydra's multi-line config errors (unknown option, key typo, override syntax) as one line; a
    resolver's own error (ours say what is allowed) as it is, without OmegaConf's wrapping."""
    own = re.match(r"ValueError raised while resolving interpolation: (.*?)(?:\s+full_key: .*)?$",
                   str(error).splitlines()[0] if str(error) else "")
    if own:  # one of our resolvers (run_folder, ...) refused a value
        return own.group(1)
    lines = [line.strip() for line in str(error).splitlines()]
    lines = lines[:lines.index("Config search path:")] if "Config search path:" in lines else lines
    text, options = [], []
    for line in filter(None, lines):
        (options if line.isidentifier() and text and text[-1].endswith(":") else text).append(line)
    cause = error.__cause__
    reason = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause).strip() else ""
    return " ".join(text) + (" " + ", ".join(options) if options else "") + reason


def _user_error(error: BaseException) -> BaseException | None:
    """The bad-input error behind ``error`` (Hydra wraps a constructor's in InstantiationException)."""
    from hydra.errors import InstantiationException

    cause = error.__cause__ if isinstance(error, InstantiationException) else error
    return cause if isinstance(cause, USER_ERRORS) else None


def run_entry_point(hydra_main) -> None:
    """Call a ``@hydra.main`` function: Hydra's own config errors (unknown option, key typo,
    override syntax) end as one line too."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing its own message
    try:
        hydra_main()
        if SWEEP["failed"]:  # every job ran; the sweep fails with the worst of their statuses
            print(f"error: {len(SWEEP['failed'])} of {SWEEP['jobs']} sweep jobs failed (their lines above): "
                  + "; ".join(job for _, job in SWEEP["failed"]), file=sys.stderr)
            sys.exit(max(code for code, _ in SWEEP["failed"]))
    except (ConfigCompositionException, MissingConfigException, OverrideParseException,
            OmegaConfBaseException) as e:
        if os.environ.get("ABSWIN_DEBUG"):
            raise
        print(f"error: {hydra_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a write the storage refused outside training (the run folder, results.json)
        if os.environ.get("ABSWIN_DEBUG") or storage_failure(e) is None:
            raise
        print(f"error: {storage_failure(e)} (a full disk or a read-only folder: ABSWIN_OUTPUT_ROOT= or "
              f"paths.output_root= picks another output root)", file=sys.stderr)
        sys.exit(1)


SWEEP: dict = {"jobs": 0, "failed": []}  # a -m sweep's jobs in this process, and (exit code, job) of each failed one


def _sweep_job() -> tuple[int, str] | None:
    """(number, overrides) of this job when it is one of a ``-m`` sweep that runs in this process
    (Hydra's basic launcher): a failed job then lets the next one run. None otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not str(hc.launcher.get("_target_", "")).endswith("BasicLauncher"):
        return None
    return int(hc.job.num), str(hc.job.override_dirname)


def exits_in_one_line(task):
    """Decorator of a ``@hydra.main`` task function: its failures end as the module docstring says.
    Inside the task, because Hydra logs "Error executing job" for anything else that leaves it."""

    from omegaconf.errors import OmegaConfBaseException

    @functools.wraps(task)
    def run(cfg):
        debug = bool(os.environ.get("ABSWIN_DEBUG"))
        job = _sweep_job()
        if job is not None:
            SWEEP["jobs"] += 1

        def fail(line: str, code: int):
            print(line, file=sys.stderr, flush=True)
            if job is None:
                sys.exit(code)
            SWEEP["failed"].append((code, f"job {job[0]} ({job[1] or 'no overrides'})"))  # the next job runs

        try:
            return task(cfg)
        except OmegaConfBaseException as e:  # a value that does not resolve
            if debug:
                raise
            return fail(f"error: {hydra_error_line(e)}", 2)
        except Preempted as e:  # the scheduler stops the whole job, a sweep too
            print(f"preempted: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except (DistributedFailure, NonFiniteError, StorageFailure) as e:
            if debug:
                raise
            return fail(f"error: {e}", 1)
        except Exception as e:
            cause = _user_error(e)
            if cause is None or debug:
                raise
            return fail(f"error: {cause}", 2)

    return run


class StorageFailure(Exception):
    """A write the storage refused during training (one line; exit status 1)."""


def rank_command():
    """``local_rank -> argv`` that starts another rank of this Hydra job: the same script with this
    job's own overrides (``sys.argv`` of a ``-m`` sweep holds the whole sweep), in this job's output
    folder, logging to its own file; None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    out = str(hc.runtime.output_dir).replace("\\", "\\\\").replace("'", "\\'")
    argv = [sys.executable, os.path.abspath(sys.argv[0]), *hc.overrides.task, f"hydra.run.dir='{out}'",
            "hydra.output_subdir=null"]
    return lambda local_rank: [*argv, f"hydra.job.name={hc.job.name}_rank{local_rank}"]


def last_checkpoint_note(run_dir: Path) -> str:
    """Which checkpoint a stopped run leaves to continue from (it is finite: see NonFiniteError)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written"
    import torch

    step = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", "?")
    return f"the last finite checkpoint is {last} (step {step})"


@contextlib.contextmanager
def one_line_failures(trainer, run_dir: Path | None = None):
    """Around ``trainer.fit`` / ``trainer.validate``. Under DDP the other ranks start with this Hydra
    job's overrides; a failed collective ends as one :class:`DistributedFailure`, Lightning's own
    SIGTERM stop (before our handler is in place) as :class:`Preempted`, a divergence names the last
    finite checkpoint. After an error the progress bars are closed (else they redraw at exit, after
    the one line), and in any case the W&B run (the next job of a sweep runs in this process)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .lightning_private import close_progress_bars

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        strategy.rank_command = rank_command()
    try:
        yield
    except BaseException as e:
        close_progress_bars(trainer)
        if isinstance(e, SIGTERMException):
            raise Preempted(signal.SIGTERM, trainer.global_step, None, False) from None
        if isinstance(e, NonFiniteError) and run_dir is not None:
            raise NonFiniteError(f"{e}; {last_checkpoint_note(run_dir)}") from None
        storage = storage_failure(e) if isinstance(e, Exception) else None
        if storage is not None:
            kept = last_checkpoint_note(run_dir).replace("last finite", "last") if run_dir is not None else ""
            raise StorageFailure(f"step {trainer.global_step}: {storage}; {kept}".rstrip("; ")) from None
        failure = distributed_failure(e, trainer.global_rank, trainer.global_step, getattr(strategy, "timeout_s", None))
        if failure is None:
            raise
        raise failure from e
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


def final_metrics(trainer) -> dict[str, float]:
    """The scalar metrics the run ended with (the lr of each parameter group left out: the W&B/CSV
    curves have them)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items()
            if getattr(v, "numel", lambda: 1)() == 1 and not k.startswith("train/lr/")}
