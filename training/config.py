"""From a composed Hydra config to objects: the only place OmegaConf becomes plain Python.

The entry points (``train.py``, ``finetune.py``, ``eval.py``) compose ``conf/`` with Hydra and call
:func:`build` here; nothing below them sees OmegaConf. Tests, benchmarks and notebooks compose the
same configs with :func:`compose_config` / :func:`config_arguments`, so they use the recipe's
numbers rather than copies of them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the application's Hydra configs

# keys of a data config that describe the data for the other groups and are not data-module arguments
DATA_DESCRIPTION = ("name", "input")

# settings that must be whole numbers: at least 1, or at least 0 for num_workers
WHOLE_NUMBERS = {"data.img_size": 1, "data.batch_size": 1, "data.num_frames": 1, "data.sampling_rate": 1,
                 "data.eval_batch_size": 1, "data.num_workers": 0}


def init_tag(pretrained: str | None) -> str:
    """``${init_tag:...}``: the initialisation in run names, 'scratch' or the checkpoint: a file's
    stem, after its run's name for a run's checkpoint (``RUN/checkpoints/best.ckpt`` -> ``RUN-best``),
    so that every run's ``best.ckpt`` gets a name of its own."""
    if not pretrained:
        return "scratch"
    from abswin.pretrained import list_pretrained

    if str(pretrained) in list_pretrained():  # a published name, whole: its tag tells the trainings apart
        return str(pretrained)
    path = Path(str(pretrained))
    tag = f"{path.parent.parent.name}-{path.stem}" if path.parent.name == "checkpoints" else path.stem
    return tag.replace("=", "-")


def model_name(size: str, input: str, kind: str) -> str:
    """``${hiera_name:SIZE,INPUT,KIND}``: the registry model for a size, the data's input (image or
    video) and the task's kind of model (``mae`` or ``classifier``)."""
    from abswin.models import hiera_name

    if kind not in ("mae", "classifier"):
        raise ValueError(f"model kind {kind!r}: must be mae or classifier")
    return hiera_name(size, input, mae=kind == "mae")


def register_resolvers() -> None:
    """What the configs need besides their files: our resolvers, and ``trainer/lightning``."""
    for name, resolver in (("init_tag", init_tag), ("hiera_name", model_name), ("run_folder", run_folder),
                           ("sweep_folder", sweep_folder)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_trainer_arguments()


def register_trainer_arguments() -> None:
    """``trainer/lightning``: every ``Trainer`` argument at Lightning's own default, read from its
    signature, so ``trainer.<arg>=...`` works without ``+`` and ``conf/trainer/default.yaml`` states
    only what differs (a copy of Lightning's defaults would be a second home for them)."""
    import inspect

    from hydra.core.config_store import ConfigStore
    from lightning.pytorch import Trainer

    plain = (type(None), bool, int, float, str)
    node = {name: p.default for name, p in inspect.signature(Trainer.__init__).parameters.items()
            if name not in ("self", "logger", "callbacks") and isinstance(p.default, plain)}
    ConfigStore.instance().store(group="trainer", name="lightning", node=node)


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config that ``train.py`` / ``finetune.py`` / ``eval.py`` (``config_name``) compose for
    these overrides, without running anything."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def config_arguments(config_name: str, key: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The arguments (``_target_`` included) that a run of ``config_name`` builds ``key`` (``module``,
    ``data``) from, as plain Python: for building one object outside an entry point."""
    node = OmegaConf.to_container(compose_config(config_name, overrides)[key], resolve=True)
    return {k: v for k, v in node.items() if not (key == "data" and k in DATA_DESCRIPTION)}


def build(node: DictConfig | dict, exclude: tuple[str, ...] = (), **kwargs):
    """The one place objects are built from the config: ``instantiate`` with every OmegaConf container
    converted to plain dicts and lists, so that nothing below the entry points sees OmegaConf."""
    from hydra.utils import instantiate

    if exclude:  # resolved first: the kept keys may point at the dropped ones or at the root
        node = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in exclude}
    return instantiate(node, _convert_="all", **kwargs)


def build_data(cfg: DictConfig):
    return build(cfg.data, exclude=DATA_DESCRIPTION)


def build_trainer(cfg: DictConfig, callbacks: list):
    """The configured Trainer with ``callbacks`` and the logger. Its progress bar is tqdm's whatever
    is installed: Lightning would pick rich's when the ``rich`` package is importable (transformers
    and many others pull it in), and our progress output and failure handling are tqdm's."""
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    callbacks = list(callbacks)
    if cfg.trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(TQDMProgressBar())
    return build(cfg.trainer, logger=build_logger(cfg), callbacks=callbacks)


def build_logger(cfg: DictConfig):
    """The configured Lightning logger, or False for ``logger=none``."""
    return build(cfg.logger) if cfg.get("logger") and "_target_" in cfg.logger else False


def build_callbacks(cfg: DictConfig) -> list:
    """Every callback of ``conf/callbacks/`` that is switched on (``~callbacks.NAME`` drops one)."""
    return [build(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def check_whole_numbers(cfg: DictConfig) -> None:
    """A one-line error naming the key for ``data.img_size=abc``, ``=64.5``, ``=-32`` and the like,
    before anything deeper fails on them."""
    for key, least in WHOLE_NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value} must be a whole number >= {least}")


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


def check_config(cfg: DictConfig):
    """The checks that need no file: a recipe the paper publishes, whole numbers, a recipe that needs
    ``pretrained=``, a published name that fits the model. Returns that name's entry (None for a file or no ``pretrained``)."""
    from .recipe import check_published

    check_published(cfg)
    if cfg.get("require_pretrained") and not cfg.get("pretrained"):
        raise ValueError(f"this recipe needs pretrained=PATH: {cfg.require_pretrained}")
    check_whole_numbers(cfg)
    check_run_dir(cfg)
    return named_weights(cfg)


NAME_MAX = 255  # bytes of one folder name on Linux file systems


def run_folder(name) -> str:
    """``${run_folder:${run_name}}`` (Hydra's run and sweep folders): ``run_name`` as one folder name,
    checked before Hydra creates the folder, so the run stays inside the output root (``../x`` and
    ``''`` would not) and the file system accepts it."""
    name = str(name)
    if not name.strip() or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"run_name={name!r}: a run name is one folder name (not empty, no '/', not '.' or '..')")
    if len(name.encode()) > NAME_MAX - 10:  # room for a sweep's "sweep-" prefix
        raise ValueError(f"run_name={name[:40]}... is {len(name.encode())} bytes long, more than the "
                         f"{NAME_MAX - 10} a run directory's name may have: pass a shorter run_name=")
    return name


def sweep_folder(num, name) -> str:
    """``${sweep_folder:${hydra.job.num},${hydra.job.override_dirname}}``: a sweep job's folder, named
    by its overrides (by its number when they are all left out of the name); past the file system's
    limit, cut and ended with a hash of the whole name (still one per job)."""
    import hashlib

    name = str(name).replace("/", "_") or f"job{num}"
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return name.encode()[:NAME_MAX - 13].decode(errors="ignore") + "-" + digest


def check_run_dir(cfg: DictConfig) -> None:
    """No folder of the run directory is longer than a file system allows (``hydra.run.dir=`` set
    by hand; ``run_name`` itself is checked by :func:`run_folder`)."""
    for part in Path(str(cfg.paths.run_dir)).parts:
        if len(part.encode()) > NAME_MAX:
            raise ValueError(f"the run directory's folder {part[:40]}... is {len(part.encode())} bytes long, more than "
                             f"the {NAME_MAX} a file system allows: pass a shorter run_name=")
