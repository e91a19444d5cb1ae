"""Every shipped Hydra config composes, and its objects instantiate."""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from training.config import DATA_DESCRIPTION, build, register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()


def _names(group: str) -> list[str]:
    """The options of a config group (model/hiera.yaml is what the size aliases share, not an option)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "default" and p.stem != "hiera")


def _compose(config: str, overrides: list[str], run_dir: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=[f"paths.run_dir={run_dir}", *overrides])


def _task_of(experiment: str) -> str:
    return "train" if "_mae" in experiment else "finetune"


EXPERIMENTS = _names("experiment")


def test_every_config_group_is_covered():
    assert set(_names("model")) == {"hiera_atto", "hiera_t", "hiera_s", "hiera_b", "hiera_b_plus", "hiera_l", "hiera_h"}
    assert {"demo", "imagefolder", "in1k", "video", "k400", "video_demo"} <= set(_names("data"))
    assert {"cpu", "gpu", "ddp", "multinode"} <= set(_names("trainer"))
    assert set(_names("logger")) == {"wandb", "csv", "none"}
    assert {"in1k_resolution_study", "in1k_sup", "demo_mae", "demo_ft", "demo_video_mae"} <= set(EXPERIMENTS)
    # the paper's recipes are no experiments: data and model choose them (conf/recipe/, tests/test_recipes.py)
    assert not [e for e in EXPERIMENTS if e.startswith(("in1k_mae", "in1k_ft", "k400_"))]
    assert {p.stem for p in (CONF / "recipe" / "pretrain").glob("*.yaml")} == {"in1k", "k400"}
    assert {p.stem for p in (CONF / "recipe" / "finetune").glob("*.yaml")} == {"in1k", "k400"}
    assert {p.stem for p in (CONF / "recipe" / "linprobe").glob("*.yaml")} == {"in1k"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = _compose(_task_of(experiment), [f"experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert resolved["module"]["model_name"].startswith(("hiera_", "mae_hiera_"))
    import abswin

    assert resolved["module"]["model_name"] in abswin.list_models()


def test_video_data_configs_build(tmp_path):
    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 3\n")
    (tmp_path / "val.csv").write_text("c.mp4 1\n")
    # classes from the train split, or the data set's; k400 has recipes for Hiera-L and -H only
    for data, model, num_classes in (("video", "hiera_atto", 4), ("k400", "hiera_l", 400)):
        cfg = _compose("finetune", [f"data={data}", f"model={model}", f"data.root={tmp_path}"], tmp_path)
        dm = build(cfg.data, exclude=DATA_DESCRIPTION)
        assert type(dm).__name__ == "VideoDataModule" and dm.num_classes == num_classes
        assert (dm.num_frames, dm.sampling_rate, dm.repeated_sampling) == (16, 4, 2)
        assert cfg.module.model_name == f"hiera_{cfg.model.size}_16x224"
    assert _compose("train", ["data=video"], tmp_path).module.mask_ratio == 0.9
    assert _compose("train", [], tmp_path).module.mask_ratio == 0.6


@pytest.mark.parametrize("model", _names("model"))
@pytest.mark.parametrize("config", ["train", "finetune", "linprobe"])
def test_every_model_size_instantiates(config, model, tmp_path):
    cfg = _compose(config, [f"model={model}"], tmp_path)
    kwargs = {"num_classes": 10} if config != "train" else {}
    if model == "hiera_atto":  # really built, with its mixup/cutmix
        module = build(cfg.module, **kwargs)
    else:
        if config == "finetune":  # torch.distributions (mixup) cannot live on 'meta'
            kwargs.update(mixup=0.0, cutmix=0.0)
        with torch.device("meta"):  # full-size models without allocating their weights
            module = build(cfg.module, **kwargs)
    assert module.model.input_size == (64, 64)


@pytest.mark.parametrize("trainer", _names("trainer"))
def test_every_trainer_instantiates(trainer, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_NNODES", "2")
    cfg = _compose("finetune", [f"trainer={trainer}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
    t = build(cfg.trainer, logger=False, callbacks=[])
    assert t.max_epochs == cfg.trainer.max_epochs
    if trainer == "multinode":
        assert cfg.trainer.num_nodes == 2


@pytest.mark.parametrize("logger", _names("logger"))
def test_every_logger_instantiates(logger, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = _compose("finetune", [f"logger={logger}"], tmp_path)
    if logger == "none":
        assert "_target_" not in cfg.logger
    else:
        assert build(cfg.logger).save_dir == str(tmp_path)


@pytest.mark.parametrize("config", ["train", "finetune", "linprobe"])
def test_every_callback_instantiates(config, tmp_path):
    cfg = _compose(config, [], tmp_path)
    callbacks = [build(c) for c in cfg.callbacks.values()]
    names = {type(c).__name__ for c in callbacks}
    assert {"RunCheckpoint", "PreemptionCheckpoint", "WindowSimilarityLogger", "PosEmbedImageLogger"} <= names
    assert ("MAEReconstructionLogger" in names) == (config == "train")


@pytest.mark.parametrize("override,interval", [
    ([], ("_every_n_epochs", 1)),
    (["callbacks.last.every_n_train_steps=1000"], ("_every_n_train_steps", 1000)),
    (["callbacks.last.every_n_minutes=30"], ("_train_time_interval", timedelta(minutes=30))),
])
def test_checkpoint_interval_is_one_override(override, interval, tmp_path):
    last = build(_compose("train", override, tmp_path).callbacks.last)
    assert getattr(last, interval[0]) == interval[1]
    others = {"_every_n_epochs": 0, "_every_n_train_steps": 0, "_train_time_interval": None}
    others.pop(interval[0])
    assert all(getattr(last, k) == v for k, v in others.items())


def test_two_checkpoint_intervals_are_one_clear_error(tmp_path):
    cfg = _compose("train", ["callbacks.last.every_n_train_steps=10", "callbacks.last.every_n_epochs=2"], tmp_path)
    with pytest.raises(Exception, match="one interval, got every_n_epochs=2 and every_n_train_steps=10"):
        build(cfg.callbacks.last)


def test_slurm_launcher_composes(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("finetune", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.nodes == 4 and cfg.hydra.launcher.gpus_per_node == 8


# ------------------------------------------------------------------------------ one home per number
def _constructor_parameters(target: str) -> dict[str, inspect.Parameter]:
    """The named arguments of a class, following ``**settings`` up to the base classes that take them."""
    module, _, name = target.rpartition(".")
    params: dict[str, inspect.Parameter] = {}
    for cls in getattr(__import__(module, fromlist=[name]), name).__mro__:
        if "__init__" not in vars(cls):
            continue
        own = inspect.signature(cls.__init__).parameters
        params.update({k: p for k, p in own.items() if k not in params and p.kind is not p.VAR_KEYWORD})
        if not any(p.kind is p.VAR_KEYWORD for p in own.values()):
            break
    return params




@pytest.mark.parametrize("config,overrides", [("train", ["data=demo"]), ("finetune", ["data=demo"]),
                                              ("train", ["data=video_demo"]), ("finetune", ["data=imagefolder"]),
                                              ("train", ["data=in1k", "model=hiera_l"]),
                                              ("finetune", ["data=in1k", "model=hiera_l"]),
                                              ("train", ["data=k400", "model=hiera_l"]),
                                              ("finetune", ["data=k400", "model=hiera_l"]),
                                              ("finetune", ["data=k400", "model=hiera_h", "data.num_frames=32",
                                                            "data.img_size=320", "pretrained=x"]),
                                              ("linprobe", ["data=demo"]), ("linprobe", ["data=in1k", "model=hiera_l"]),
                                              ("linprobe", ["data=k400", "model=hiera_l"])],
                         ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_the_yaml_is_the_only_home_of_what_it_sets(config, overrides, tmp_path):
    """Every module and data setting the YAML gives is a constructor argument WITHOUT a default: the
    number lives once, in conf/ (a default that the YAML repeats would be a second home)."""
    cfg = _compose(config, overrides, tmp_path)
    for node, skip in ((cfg.module, ()), (cfg.data, DATA_DESCRIPTION)):
        params = _constructor_parameters(node._target_)
        for key in node:
            if key == "_target_" or key in skip:
                continue
            assert key in params, f"{node._target_} has no argument {key}"
            assert params[key].default is inspect.Parameter.empty, f"{node._target_}({key}=...) repeats the YAML"


def test_model_aliases_state_only_their_size(tmp_path):
    """One model config (model/hiera.yaml) parameterised by size: an alias changes nothing else but
    its estimate of what fits a GPU (``fits_per_device``, which is no architecture option)."""
    shared = _compose("finetune", ["model=hiera_atto"], tmp_path).model
    for alias in _names("model"):
        model = _compose("finetune", [f"model={alias}"], tmp_path).model
        differs = {k for k in model if model[k] != shared[k]}
        assert differs <= {"name", "size", "fits_per_device"}, (alias, differs)
        assert model.name == alias
        assert all(isinstance(model.fits_per_device[task].image, int) for task in ("pretrain", "finetune"))


def test_the_model_follows_from_size_input_and_task(tmp_path):
    assert _compose("train", ["model=hiera_b"], tmp_path).module.model_name == "mae_hiera_base_224"
    assert _compose("finetune", ["model=hiera_b", "data=video"], tmp_path).module.model_name == "hiera_base_16x224"
    with pytest.raises(Exception, match="model size 'small' has no video Hiera"):
        OmegaConf.to_container(_compose("finetune", ["model=hiera_s", "data=video"], tmp_path).module, resolve=True)


def _own_settings(path: Path, prefix: str = "") -> dict:
    """The leaf settings a YAML file writes itself (not its defaults list), as dotted keys."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node.pop("defaults", None)
    node.pop("hydra", None)
    out = {}

    def walk(value, key):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        else:
            out[key] = value
    walk(node, prefix)
    return out


def _parent_overrides(path: Path, group: str) -> list[str] | None:
    """How to compose what a config builds on: its parent option and its group overrides."""
    defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    parents = [d for d in defaults if isinstance(d, str) and d != "_self_"]
    overrides = [f"{k.split()[-1].strip('/').split('@')[0]}={v}" for d in defaults if isinstance(d, dict)
                 for k, v in d.items()]
    return ([f"{group}={parents[0]}"] if parents else []) + overrides


# conf/recipe/<task>/<data>.yaml: the composition each is part of, and the same without it (what it
# builds on)
RECIPES = sorted((CONF / "recipe").glob("*/*.yaml"))


def _recipe_compositions(path: Path) -> tuple[str, list[str], list[str]]:
    """``(config, with_it, without_it)``: the overrides that compose with this recipe file and the
    same with it left out."""
    task, data = path.relative_to(CONF / "recipe").with_suffix("").parts
    config = {"pretrain": "train"}.get(task, task)  # finetune, linprobe: their configs' names
    with_it = [f"data={data}", "model=hiera_l"]
    return config, with_it, [*with_it, f"~recipe/{task}@_global_"]


@pytest.mark.parametrize("path", sorted((CONF / "experiment").glob("*.yaml")) + sorted((CONF / "data").glob("*.yaml"))
                         + RECIPES, ids=lambda p: str(p.relative_to(CONF).with_suffix("")))
def test_a_config_states_only_what_differs_from_what_it_builds_on(path, tmp_path):
    """No setting restates the value it would have anyway: a second home for the same number."""
    group = path.parent.name
    if path.is_relative_to(CONF / "recipe"):
        config, _, overrides = _recipe_compositions(path)
        prefix = ""
    else:
        config = "finetune" if group == "data" else _task_of(path.stem)
        overrides = _parent_overrides(path, group)
        if group == "data" and not overrides:
            pytest.skip("a root data config: nothing to build on")
        prefix = "" if group == "experiment" else "data"
    base = _compose(config, overrides, tmp_path)
    same = [key for key, value in _own_settings(path, prefix).items()
            if OmegaConf.select(base, key, default="<unset>") == value and not str(value).startswith("${")]
    assert not same, f"{path.name} restates {same} (already so in {overrides or 'the defaults'})"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(CONF).with_suffix("")))
def test_every_recipe_file_takes_part_and_changes_something(path, tmp_path):
    """Each recipe file is composed by the data / model it is named after, and it changes the config."""
    config, with_it, without_it = _recipe_compositions(path)
    a = OmegaConf.to_container(_compose(config, with_it, tmp_path), resolve=False)
    b = OmegaConf.to_container(_compose(config, without_it, tmp_path), resolve=False)
    assert a != b


def test_a_sweep_jobs_folder_stays_within_the_file_systems_limit():
    """A job's folder is named by its overrides; past 255 bytes it is cut and ends with a hash of
    the whole name, so two long sweeps' jobs still get folders of their own."""
    from training.config import sweep_folder

    short = "data.img_size=224,model.pos_embed=abswin"
    assert sweep_folder(0, short) == short
    long_a, long_b = "x" * 300 + "=1", "x" * 300 + "=2"
    a, b = sweep_folder(0, long_a), sweep_folder(1, long_b)
    assert len(a.encode()) <= 255 and len(b.encode()) <= 255 and a != b
    assert sweep_folder(0, "pretrained=/data/run/last.ckpt") == "pretrained=_data_run_last.ckpt"
    assert sweep_folder(3, "") == "job3"  # every override left out of the name (data.root=a,b)
