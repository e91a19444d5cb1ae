"""What `train.py` and `finetune.py` share: from a composed Hydra config to `Trainer.fit`.

This is the only library module that knows about Hydra/OmegaConf. It decides the run
directory, resumption, W&B run identity and pretrained initialisation, then instantiates
data, module, logger, callbacks and trainer from the config.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("abswin")


def init_tag(pretrained: str | None) -> str:
    """Short name of the initialisation for run names: 'scratch' or the checkpoint's stem."""
    if not pretrained:
        return "scratch"
    return Path(str(pretrained)).stem.replace("=", "-")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("init_tag"):
        OmegaConf.register_new_resolver("init_tag", init_tag)


JOB_FILE = "job.json"  # which scheduler job runs in a run directory: a requeued job continues its own run


def requeued_here(run_dir: Path) -> str | None:
    """This process's scheduler job id if that job started the run in ``run_dir`` before: a job
    requeued after preemption, which must continue its run without ``resume=`` added by hand."""
    from abswin.training.preemption import scheduler_job_id

    job = scheduler_job_id()
    try:
        owner = json.loads((run_dir / JOB_FILE).read_text()).get("job_id")
    except (OSError, ValueError):
        return None
    return job if job is not None and job == owner else None


def record_job(run_dir: Path) -> None:
    """Note the scheduler job that runs ``run_dir`` (global rank 0 only)."""
    from lightning.pytorch.utilities import rank_zero_only

    from abswin.training.preemption import scheduler_job_id

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{JOB_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"job_id": scheduler_job_id(), "pid": os.getpid()}) + "\n")
    os.replace(tmp, run_dir / JOB_FILE)


def resolve_resume(resume: Any, run_dir: Path) -> str | None:
    """`resume`: false (fresh run), true (must continue), 'auto' (continue if possible) or a path.
    With false, a scheduler job that was requeued continues its own run (see :func:`requeued_here`)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume in (None, False, "false", "False"):
        if last.exists():
            job = requeued_here(run_dir)
            if job is not None:
                log.info("job %s was requeued: continuing %s", job, last)
                return str(last)
            raise FileExistsError(
                f"{run_dir} already holds a run (checkpoints/last.ckpt): pass resume=true to continue it, "
                f"or run_name=NEW_NAME to start another"
            )
        return None
    if resume in (True, "true", "True"):
        if not last.exists():
            raise FileNotFoundError(f"resume=true but there is no {last} to continue; start with resume=false")
        return str(last)
    if resume == "auto":
        return str(last) if last.exists() else None
    path = Path(str(resume))
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file")
    return str(path)


def _instantiate_logger(cfg: DictConfig, run_dir: Path):
    from hydra.utils import instantiate

    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    kwargs = {}
    if cfg.logger._target_.endswith("WandbLogger"):
        from abswin.training import configure_wandb_env, wandb_run_id

        configure_wandb_env()
        kwargs["id"] = wandb_run_id(run_dir)
    return instantiate(cfg.logger, **kwargs)


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


def fit_and_close(trainer, module, datamodule, ckpt_path: str | None) -> None:
    """``trainer.fit``; then the W&B run is closed (the next job of a sweep runs in this same
    process), and after an error the progress bars too (else they redraw at exit, after the
    one-line message)."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except BaseException:
        close_progress_bars(trainer)
        raise
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


def close_progress_bars(trainer) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    for cb in trainer.callbacks:
        if isinstance(cb, TQDMProgressBar):
            for name in ("train_progress_bar", "val_progress_bar"):
                bar = getattr(cb, f"_{name}", None)
                if bar is not None:
                    bar.close()


def fit(trainer, module, datamodule, ckpt_path: str | None) -> None:
    """``trainer.fit``, with a failed collective as one :class:`DistributedFailure` line and
    Lightning's SIGTERM stop (before our handler is in place) as :class:`Preempted`."""
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from abswin.training import DDPStrategy, Preempted
    from abswin.training.ddp import distributed_failure

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        strategy.rank_command = rank_command()
    try:
        fit_and_close(trainer, module, datamodule, ckpt_path)
    except SIGTERMException:
        raise Preempted(signal.SIGTERM, trainer.global_step, None, False) from None
    except Exception as e:
        failure = distributed_failure(e, trainer.global_rank, trainer.global_step,
                                      getattr(strategy, "timeout_s", None))
        if failure is None:
            raise
        raise failure from e


def last_checkpoint_note(run_dir: Path) -> str:
    """Which checkpoint a stopped run leaves to continue from (it is finite: see NonFiniteError)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written"
    import torch

    step = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", "?")
    return f"the last finite checkpoint is {last} (step {step})"


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit (pretrain or finetune) as configured; returns the final metrics (also in results.json)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    import abswin
    from abswin.training import NonFiniteError

    for name in ("lightning.pytorch", "lightning.fabric"):  # one copy of each message, via Hydra's handlers
        logging.getLogger(name).handlers.clear()
    if cfg.get("require_pretrained") and not cfg.get("pretrained"):
        raise ValueError(f"this recipe needs pretrained=PATH: {cfg.require_pretrained}")
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path = resolve_resume(cfg.resume, run_dir)
    record_job(run_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data.datamodule)
    module_kwargs = {}
    if "num_classes" in cfg.module and cfg.module.num_classes is None:
        module_kwargs["num_classes"] = datamodule.num_classes
    module = instantiate(cfg.module, **module_kwargs)

    pretrained = cfg.get("pretrained")
    if pretrained and ckpt_path is None:  # a resumed run already holds its weights
        report = abswin.load_checkpoint(module.model, pretrained)
        log.info("initialised from %s:\n%s", pretrained, report)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    trainer = instantiate(cfg.trainer, logger=_instantiate_logger(cfg, run_dir), callbacks=callbacks)
    try:
        fit(trainer, module, datamodule, ckpt_path)
    except NonFiniteError as e:
        raise NonFiniteError(f"{e}; {last_checkpoint_note(run_dir)}") from None

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    if trainer.is_global_zero:
        results = {"metrics": metrics, "run_dir": str(run_dir), "checkpoints": str(run_dir / "checkpoints")}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        log.info("results: %s", json.dumps(metrics))
    return metrics


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def main(cfg: DictConfig, metric: str) -> float | None:
    """Entry-point body: bad input ends the run with one line on stderr, not a traceback
    (set ``ABSWIN_DEBUG=1`` for the full traceback), exit status 2. A failed collective: one line,
    status 1. Stopped by a signal after saving: one line, status 128 + the signal's number."""
    from hydra.errors import InstantiationException

    from abswin.training import DistributedFailure, NonFiniteError, Preempted

    try:
        return run(cfg).get(metric)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (DistributedFailure, NonFiniteError) as e:
        if os.environ.get("ABSWIN_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (InstantiationException, *USER_ERRORS) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(cause, USER_ERRORS) or os.environ.get("ABSWIN_DEBUG"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
