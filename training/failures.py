"""How a run ends when it cannot go on: one line on stderr and an exit status, never a traceback.

* bad input (a config value, a missing file, a run directory in use): ``error: ...``, status 2;
* a failed collective (a rank died or hung) or a diverged run: ``error: ...``, status 1;
* stopped by a scheduler's signal after saving: ``preempted: ...``, status 128 + the signal;

``ABSWIN_DEBUG=1`` shows the full traceback instead. :func:`run_entry_point` wraps the whole
``@hydra.main`` call (for Hydra's own composition errors), :func:`exits_in_one_line` the task
function, and :func:`one_line_failures` ``trainer.fit`` / ``trainer.validate``, turning Lightning's
and the collectives' errors into ours.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from pathlib import Path

from .ddp import DDPStrategy, DistributedFailure, distributed_failure
from .callbacks.nonfinite import NonFiniteError
from .callbacks.preemption import Preempted

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def hydra_error_line(error: BaseException) -> str:
    """Hydra's multi-line config errors (unknown option, key typo, override syntax) as one line."""
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
    except (ConfigCompositionException, MissingConfigException, OverrideParseException,
            OmegaConfBaseException) as e:
        if os.environ.get("ABSWIN_DEBUG"):
            raise
        print(f"error: {hydra_error_line(e)}", file=sys.stderr)
        sys.exit(2)


def exits_in_one_line(task):
    """Decorator of a ``@hydra.main`` task function: its failures end as the module docstring says.
    Inside the task, because Hydra logs "Error executing job" for anything else that leaves it."""

    from omegaconf.errors import OmegaConfBaseException

    @functools.wraps(task)
    def run(cfg):
        debug = bool(os.environ.get("ABSWIN_DEBUG"))
        try:
            return task(cfg)
        except OmegaConfBaseException as e:  # a value that does not resolve
            if debug:
                raise
            print(f"error: {hydra_error_line(e)}", file=sys.stderr)
            sys.exit(2)
        except Preempted as e:
            print(f"preempted: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except (DistributedFailure, NonFiniteError) as e:
            if debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception as e:
            cause = _user_error(e)
            if cause is None or debug:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return run


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
