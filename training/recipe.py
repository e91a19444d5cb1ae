"""The recipe of a run on this run's devices: the gradient accumulation that keeps the recipe's GLOBAL
batch (and so its lr) on any number of GPUs, and the block every run logs at start saying which
numbers it trains with and where each comes from.

The numbers themselves live in ``conf/`` (``conf/recipe/`` for the paper's, chosen by the data set
and the model size); this module only splits the global batch and reports. The data module splits
``data.batch_size`` by ``world_size * trainer.accumulate_grad_batches`` (``datamodules/loading.py``),
so setting the trainer's accumulation here, before the data module's setup, is all it takes.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("abswin")

# the input that model.fits_per_device.<task>.<input> is given for: 224 px images, 16 x 224 px clips
REFERENCE_IMG_SIZE = 224
REFERENCE_NUM_FRAMES = 16

# the block's items: the config keys whose command-line override makes an item "override"
ITEM_KEYS = {
    "batch": ("data.batch_size",),
    "lr": ("module.lr", "module.blr"),
    "epochs": ("trainer.max_epochs", "trainer.max_steps"),
    "warmup": ("module.warmup_epochs", "module.warmup_steps"),
    "per_device": ("per_device_batch", "model.fits_per_device"),
    "accumulation": ("trainer.accumulate_grad_batches",),
    "precision": ("trainer.precision",),
    "devices": ("trainer.devices", "trainer.num_nodes"),
}


def check_published(cfg: DictConfig) -> None:
    """A model size or clip size the paper gives no recipe for, on a data set it does (the rule in
    ``conf/recipe/finetune/*.yaml``): one line naming what the table covers and how to take a row
    anyway, before anything resolves into the interpolation error behind it."""
    recipe = cfg.get("recipe") or {}
    choices = {"row": ("model", [k for k in recipe if str(k).startswith("table_")]),
               "clip": ("clip size (data.num_frames x data.img_size)", ["published_clips"])}
    for choice, (what, tables) in choices.items():
        if choice not in recipe:
            continue
        value = OmegaConf.select(cfg, f"recipe.{choice}")
        for table in (t for t in tables if t in recipe and value not in recipe[t]):
            name = "the paper" if table == "published_clips" else table.replace("_", " ").capitalize()
            raise ValueError(f"no published recipe for {what} {value} on data={cfg.data.name}: {name} covers "
                             f"{', '.join(recipe[table])}; to take one of them anyway: recipe.{choice}=NAME")


def split_batch(global_batch: int, world_size: int, max_per_device: int) -> tuple[int, int]:
    """``(per_device, accumulation)`` for a global batch over ``world_size`` devices: the smallest
    accumulation ``a >= 1`` with ``global_batch % (world_size * a) == 0`` and
    ``global_batch / (world_size * a) <= max_per_device``. ValueError (one line) when none exists."""
    for name, value in (("global batch", global_batch), ("world size", world_size),
                        ("max per-device batch", max_per_device)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {value!r} must be a whole number >= 1")
    for accumulation in range(1, global_batch // world_size + 1):
        per_device, rest = divmod(global_batch, world_size * accumulation)
        if rest == 0 and per_device <= max_per_device:
            return per_device, accumulation
    raise ValueError(f"global batch {global_batch} cannot be split over {world_size} devices into equal batches "
                     f"of at most {max_per_device} per device: no accumulation a makes {global_batch} / "
                     f"({world_size} x a) a whole number <= {max_per_device} (change data.batch_size, "
                     f"per_device_batch or the device count)")


def per_device_limit(cfg: DictConfig) -> tuple[int, str]:
    """The most samples (images, or videos) one device takes per step, and where that number comes
    from: ``per_device_batch`` when it is a number, else (``auto``) the model's estimate at the
    reference input (``model.fits_per_device``: images or clips) scaled by this run's tokens per clip,
    and for videos divided by the clips drawn from each (``data.repeated_sampling``); at least 1."""
    setting = cfg.get("per_device_batch", "auto")
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ValueError(f"per_device_batch={setting} must be auto or a whole number >= 1")
        return setting, f"per_device_batch={setting}"
    video = cfg.data.input == "video"
    key = f"model.fits_per_device.{cfg.task}.{cfg.data.input}"
    fits = OmegaConf.select(cfg, key, default=None)
    if fits is None:
        raise ValueError(f"model={cfg.model.name} has no estimate of the {cfg.data.input} batch that fits a "
                         f"device in {cfg.task} ({key}): set per_device_batch=N")
    size = int(cfg.data.img_size)
    frames, ref_frames = (int(cfg.data.num_frames), REFERENCE_NUM_FRAMES) if video else (1, 1)
    clips = int(OmegaConf.select(cfg, "data.repeated_sampling", default=1) or 1) if video else 1
    reference, here = (f"{ref_frames}x{REFERENCE_IMG_SIZE}", f"{frames}x{size}") if video else \
        (f"{REFERENCE_IMG_SIZE} px", f"{size} px")
    limit = max(1, fits * ref_frames * REFERENCE_IMG_SIZE ** 2 // (frames * size ** 2) // clips)
    how = "" if here == reference else f", scaled to {here}"
    how += f", {clips} clips per video" if clips > 1 else ""
    return limit, f"{cfg.model.name}'s estimate {fits} at {reference}{how} (model.fits_per_device)"


def command_line_keys() -> set[str]:
    """The config keys set on the command line of this Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.add(key.split("@", 1)[0])
    return keys


def trainer_source() -> str:
    """The trainer config this Hydra job chose (``trainer=ddp``, ...), where the precision and the
    devices come from unless overridden."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get("trainer") if HydraConfig.initialized() else None
    return f"trainer={choice}" if choice else "the trainer config"


def _overridden(item: str, overrides: set[str]) -> bool:
    """Whether a key of the block's ``item`` (or a key below one) was set on the command line."""
    return any(k == key or k.startswith(key + ".") for key in ITEM_KEYS[item] for k in overrides)


def _source(cfg: DictConfig, item: str, overrides: set[str]) -> str:
    """Where a recipe item's number comes from: ``override``, the item's own source, or the recipe's."""
    if _overridden(item, overrides):
        return "override"
    recipe = cfg.get("recipe") or {}
    return str(recipe.get(item) or recipe.get("source") or "default")


def accumulation_for(cfg: DictConfig, world_size: int, configured: int,
                     overrides: set[str]) -> tuple[int, int, str, str]:
    """``(per_device, accumulation, per_device_source, accumulation_source)`` for this run.

    An accumulation set on the command line (or by a config, when it is not 1) is kept, and must
    split the global batch into equal per-device batches that fit; otherwise it is the smallest that
    does (:func:`split_batch`)."""
    global_batch = int(cfg.data.batch_size)
    limit, limit_source = per_device_limit(cfg)
    if _overridden("per_device", overrides):
        limit_source += " (override)"
    explicit = _overridden("accumulation", overrides) or configured != 1
    if not explicit:
        per_device, accumulation = split_batch(global_batch, world_size, limit)
        how = f"{global_batch} = {world_size} device{'s' if world_size > 1 else ''} x {per_device} x {accumulation}"
        return per_device, accumulation, f"at most {limit}: {limit_source}", how
    per_device, rest = divmod(global_batch, world_size * configured)
    if rest or per_device < 1:
        raise ValueError(f"trainer.accumulate_grad_batches={configured}: the global batch data.batch_size="
                         f"{global_batch} is not divisible by {world_size} device(s) x {configured}")
    if per_device > limit:
        raise ValueError(f"trainer.accumulate_grad_batches={configured} gives {per_device} samples per device "
                         f"({global_batch} / ({world_size} x {configured})), more than the {limit} that fit "
                         f"({limit_source}): raise the accumulation, leave it out, or set per_device_batch")
    source = "override" if _overridden("accumulation", overrides) else "config"
    return per_device, configured, f"at most {limit}: {limit_source}", source


def recipe_block(cfg: DictConfig, trainer, per_device: int, accumulation: int, per_device_source: str,
                 accumulation_source: str, overrides: set[str]) -> str:
    """The recipe block: each number of the training and where it comes from."""
    module = cfg.module
    global_batch = int(cfg.data.batch_size)
    if module.get("lr") is not None:
        lr = f"{float(module.lr):g}"
    else:
        lr = f"{float(module.blr) * global_batch / 256:g} (blr {float(module.blr):g} x {global_batch} / 256)"
    warmup = module.get("warmup_steps") or None
    plural = "" if module.warmup_epochs == 1 else "s"
    warmup_text = f"{warmup} steps" if warmup else f"{module.warmup_epochs} epoch{plural}"
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    epochs = f"{cfg.trainer.max_epochs}" + (f" (max_steps {max_steps})" if max_steps not in (None, -1) else "")
    trainer_config = trainer_source()
    num_nodes = int(getattr(trainer, "num_nodes", 1))
    devices = int(getattr(trainer, "num_devices", 1))
    rows = [
        ("global batch", f"{global_batch}", _source(cfg, "batch", overrides)),
        ("per-device batch", f"{per_device}", per_device_source),
        ("accumulation", f"{accumulation}", accumulation_source),
        ("lr", lr, _source(cfg, "lr", overrides)),
        ("epochs", epochs, _source(cfg, "epochs", overrides)),
        ("warmup", warmup_text, _source(cfg, "warmup", overrides)),
        ("precision", f"{cfg.trainer.precision}",
         "override" if _overridden("precision", overrides) else trainer_config),
        ("devices", f"{devices} x {num_nodes} node{'s' if num_nodes > 1 else ''}",
         "override" if _overridden("devices", overrides) else trainer_config),
    ]
    size = f"{cfg.data.img_size} px"
    if cfg.data.get("input") == "video":
        size = f"{OmegaConf.select(cfg, 'data.num_frames')}x{cfg.data.img_size}"
    width = max(len(r[1]) for r in rows)
    recipe = cfg.get("recipe") or {}
    lines = [f"recipe: {cfg.get('task', '?')} {cfg.model.name} on {cfg.data.name} at {size}: "
             f"{recipe.get('source') or 'default'}"]
    lines += [f"  {name:<17}{value:<{width}}  {source}" for name, value, source in rows]
    return "\n".join(lines)


def apply_recipe(cfg: DictConfig, trainer) -> None:
    """Set ``trainer.accumulate_grad_batches`` so that the recipe's global batch holds on this run's
    devices, and log the recipe block (logger ``abswin``; INFO on rank 0). Call it right after the
    Trainer is built, before the data module's setup (which splits the batch by it).

    Lightning reads ``Trainer.accumulate_grad_batches`` (a plain public attribute) in its fit loop
    at every step; the data module reads it in ``setup`` to split the global batch."""
    from lightning.pytorch.utilities import rank_zero_only

    overrides = command_line_keys()
    world_size = int(getattr(trainer, "world_size", 1))
    configured = int(getattr(trainer, "accumulate_grad_batches", 1))
    per_device, accumulation, per_device_source, accumulation_source = accumulation_for(
        cfg, world_size, configured, overrides)
    trainer.accumulate_grad_batches = accumulation
    block = recipe_block(cfg, trainer, per_device, accumulation, per_device_source, accumulation_source, overrides)
    log.log(logging.INFO if getattr(rank_zero_only, "rank", 0) == 0 else logging.DEBUG, "%s", block)
