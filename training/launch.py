"""What `train.py` and `finetune.py` share: from a composed Hydra config to `Trainer.fit`.

This is the only library module that knows about Hydra/OmegaConf. It decides the run
directory, resumption, W&B run identity and pretrained initialisation, then instantiates
data, module, logger, callbacks and trainer from the config.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("abswin")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the application's Hydra configs


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config ``train.py`` / ``finetune.py`` / ``eval.py`` (``config_name``) compose for these
    overrides, without running anything: for tests, benchmarks and notebooks."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def init_tag(pretrained: str | None) -> str:
    """Short name of the initialisation for run names: 'scratch' or the checkpoint's stem."""
    if not pretrained:
        return "scratch"
    from abswin.pretrained import list_pretrained

    if str(pretrained) in list_pretrained():  # a published name, whole: its tag tells the trainings apart
        return str(pretrained)
    return Path(str(pretrained)).stem.replace("=", "-")


def model_name(size: str, input: str, kind: str) -> str:
    """``${hiera_name:SIZE,INPUT,KIND}``: the registry model for a size, the data's input (image or
    video) and the task's kind of model (``mae`` or ``classifier``)."""
    from abswin.models import hiera_name

    if kind not in ("mae", "classifier"):
        raise ValueError(f"model kind {kind!r}: must be mae or classifier")
    return hiera_name(size, input, mae=kind == "mae")


def register_resolvers() -> None:
    for name, resolver in (("init_tag", init_tag), ("hiera_name", model_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# settings that must be whole numbers: at least 1, or at least 0 for num_workers
WHOLE_NUMBERS = {"data.img_size": 1, "data.batch_size": 1, "data.num_frames": 1, "data.sampling_rate": 1,
                 "data.eval_batch_size": 1, "data.num_workers": 0}


def check_whole_numbers(cfg: DictConfig) -> None:
    """A one-line error naming the key for ``data.img_size=abc``, ``=64.5``, ``=-32`` and the like,
    before anything deeper fails on them."""
    for key, least in WHOLE_NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value} must be a whole number >= {least}")


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


def named_weights(cfg: DictConfig):
    """The entry of ``abswin.list_pretrained()`` that ``pretrained=`` names (None for a file),
    checked to hold the model this run builds: else one line saying which ``model=`` does."""
    from abswin.pretrained import PretrainedError, lookup

    weights = lookup(cfg.pretrained) if cfg.get("pretrained") else None
    if weights is None or weights.fits(cfg.module.model_name):
        return weights
    use = model_overrides(weights, cfg.data.input)
    raise PretrainedError(f"pretrained={weights.name} holds {weights.model} ({weights.input}, size {weights.size}) "
                          f"but this run builds {cfg.module.model_name}: use {use}")


def model_overrides(weights, data_input: str) -> str:
    """The overrides that build a named checkpoint's model: the ``model=`` config of its size, its
    input's data, and for timm's variants the registry model and its global embedding."""
    from abswin.models import hiera_name
    from abswin.models.registry import model_args

    sizes = {p.stem: OmegaConf.create(p.read_text()).get("size") for p in (CONF_DIR / "model").glob("*.yaml")}
    configs = [f"model={name}" for name, size in sorted(sizes.items()) if size == weights.size]
    overrides = configs[:1] or [f"model.size={weights.size}"]
    if weights.model.removeprefix("mae_") != hiera_name(weights.size, weights.input):  # timm's abs-win variants
        grid = model_args(weights.model)[1]["global_pos_size"]
        overrides += [f"module.model_name={weights.model}", f"model.global_pos_size=[{grid[0]},{grid[1]}]"]
    if weights.input != data_input:
        overrides.append("and video data (data=k400, data=video)" if weights.input == "video" else
                         "and image data (data=in1k, data=imagefolder)")
    return " ".join(overrides)


def hold_log() -> logging.handlers.MemoryHandler:
    """Hold this run's log records until its directory is accepted: the data checks log what they
    find (a training subset, empty class folders, skipped files) before that, and the run's log
    file must have them too (:func:`log_to_file` writes them first)."""
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
    logging.getLogger().addHandler(held)
    return held


def log_to_file(run_dir: Path, held: logging.handlers.MemoryHandler) -> logging.Handler:
    """Log into ``<run_dir>/<job name>.log`` from here on, after the ``held`` records (only once the
    run is accepted: a refused start must leave the directory as it was)."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().job.name if HydraConfig.initialized() else "run"
    handler = logging.FileHandler(run_dir / f"{name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    held.setTarget(handler)
    held.flush()
    logging.getLogger().removeHandler(held)
    logging.getLogger().addHandler(handler)
    return handler


# keys of a data config that describe the data for the other groups and are not data-module arguments
DATA_DESCRIPTION = ("name", "input")


def build_logger(cfg: DictConfig):
    """The configured Lightning logger, or False for ``logger=none``."""
    return build(cfg.logger) if cfg.get("logger") and "_target_" in cfg.logger else False


def build(node: DictConfig | dict, exclude: tuple[str, ...] = (), **kwargs):
    """The one place objects are built from the config: ``instantiate`` with every OmegaConf container
    converted to plain dicts and lists, so that nothing below the entry points sees OmegaConf."""
    from hydra.utils import instantiate

    if exclude:  # resolved first: the kept keys may point at the dropped ones or at the root
        node = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in exclude}
    return instantiate(node, _convert_="all", **kwargs)


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


def close_progress_bars(trainer) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    for cb in trainer.callbacks:
        if isinstance(cb, TQDMProgressBar):
            for name in ("train_progress_bar", "val_progress_bar"):
                bar = getattr(cb, f"_{name}", None)
                if bar is not None:
                    bar.close()


def guarded(trainer, call) -> dict[str, float]:
    """Run ``call`` (``trainer.fit`` or ``trainer.validate``) and return the final scalar metrics.

    Under DDP the other ranks start with this Hydra job's overrides; a failed collective ends as
    one :class:`DistributedFailure` line and Lightning's SIGTERM stop (before our handler is in
    place) as :class:`Preempted`. After an error the progress bars are closed (else they redraw at
    exit, after the one-line message), and in any case the W&B run (the next job of a sweep runs
    in this same process)."""
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from training import DDPStrategy, Preempted
    from training.ddp import distributed_failure

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        strategy.rank_command = rank_command()
    try:
        call()
    except BaseException as e:
        close_progress_bars(trainer)
        if isinstance(e, SIGTERMException):
            raise Preempted(signal.SIGTERM, trainer.global_step, None, False) from None
        failure = distributed_failure(e, trainer.global_rank, trainer.global_step,
                                      getattr(strategy, "timeout_s", None))
        if failure is None:
            raise
        raise failure from e
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


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
    from lightning.pytorch.utilities import rank_zero_only

    import abswin
    from training import run_directory
    from training import NonFiniteError
    from training.preemption import scheduler_job_id

    for name in ("lightning.pytorch", "lightning.fabric"):  # one copy of each message, via Hydra's handlers
        logging.getLogger(name).handlers.clear()
    if cfg.get("require_pretrained") and not cfg.get("pretrained"):
        raise ValueError(f"this recipe needs pretrained=PATH: {cfg.require_pretrained}")
    check_whole_numbers(cfg)
    weights = named_weights(cfg)  # a published name: known and fitting the model, before anything starts
    run_dir = Path(cfg.paths.run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    job_id = scheduler_job_id()
    claim = run_directory.claim(run_dir, cfg.resume, config, job_id, getattr(rank_zero_only, "rank", 0))
    handlers: list[logging.Handler] = [hold_log()]
    try:
        for note in claim.notes:
            log.warning(note)
        ckpt_path = claim.ckpt_path
        if ckpt_path is not None and Path(ckpt_path) != run_dir / "checkpoints" / "last.ckpt":
            check_resume_file(ckpt_path)
        pretrained = cfg.get("pretrained")
        if weights is not None and ckpt_path is None:  # downloaded once into the cache, checksum verified
            pretrained = str(abswin.fetch_pretrained(weights.name))
        pl.seed_everything(cfg.seed, workers=True)

        datamodule = build(cfg.data, exclude=DATA_DESCRIPTION)
        module_kwargs = {}
        if "num_classes" in cfg.module and cfg.module.num_classes is None:
            module_kwargs["num_classes"] = datamodule.num_classes
        module = build(cfg.module, **module_kwargs)

        if pretrained and ckpt_path is None:  # a resumed run already holds its weights
            report = abswin.load_checkpoint(module.model, pretrained)
            source = cfg.pretrained if weights is None else f"{weights.name} ({pretrained})"
            log.info("initialised from %s:\n%s", source, report)

        callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
        trainer = build(cfg.trainer, logger=build_logger(cfg), callbacks=callbacks)
        # the data checks that need the trainer (the batch split, the splits' indexes and probes) run
        # now, before the loggers create their folders: Lightning's own setup call finds them done
        datamodule.trainer = trainer
        datamodule.setup("fit")

        claim.accept(config, job_id)  # from here on the run directory is this run's
        handlers.append(log_to_file(run_dir, handlers[0]))
        for each in trainer.loggers:  # the whole composed config beside the module's hyperparameters
            each.log_hyperparams({"config": config})
        try:
            metrics = guarded(trainer, lambda: trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                                                           weights_only=True))
        except NonFiniteError as e:
            raise NonFiniteError(f"{e}; {last_checkpoint_note(run_dir)}") from None

        if trainer.is_global_zero:
            progress = {"global_step": trainer.global_step, "epochs": trainer.current_epoch}
            results = {"metrics": metrics, "progress": progress, "run_dir": str(run_dir),
                       "checkpoints": str(run_dir / "checkpoints")}
            (run_dir / "results.json").write_text(json.dumps(results, indent=2))
            log.info("results: %s", json.dumps(metrics))
        return metrics
    finally:
        claim.release()
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


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


def entry_point(hydra_main) -> None:
    """Run a ``@hydra.main`` function so that Hydra's own config errors end like ours: one
    ``error:`` line on stderr and exit status 2 (``ABSWIN_DEBUG=1``: the full traceback)."""
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


def main(cfg: DictConfig, metric: str, job=None) -> float | None:
    """Entry-point body around ``job`` (:func:`run`, or :func:`training.evaluation.evaluate`): bad input
    ends the run with one line on stderr, not a traceback
    (set ``ABSWIN_DEBUG=1`` for the full traceback), exit status 2. A failed collective: one line,
    status 1. Stopped by a signal after saving: one line, status 128 + the signal's number."""
    from hydra.errors import InstantiationException

    from training.run_directory import RunFinished
    from training import DistributedFailure, NonFiniteError, Preempted

    try:
        return (job or run)(cfg).get(metric)
    except RunFinished as e:
        print(f"finished: {e}", file=sys.stderr)
        return None
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


def config_arguments(config_name: str, key: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The arguments (``_target_`` included) that a run of the shipped config ``config_name``
    (``train`` or ``finetune``) builds ``key`` (``module``, ``data``) from, as plain Python: for
    building an object outside an entry point (tests, benchmarks, notebooks) with the recipe's
    numbers rather than copies of them."""
    cfg = compose_config(config_name, overrides)
    node = OmegaConf.to_container(cfg[key], resolve=True)
    return {k: v for k, v in node.items() if not (key == "data" and k in DATA_DESCRIPTION)}
