"""MAE pretraining of Hiera: ``python train.py model=hiera_l data=in1k`` (conf/train.yaml).

:func:`train` is also finetuning's (``finetune.py``): the composed config says which module,
data and recipe. It reads like the recipe: data, model, callbacks, loggers, trainer, fit.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import abswin
from abswin.pretrained import local_path
from training.config import build, build_callbacks, build_data, build_trainer, check_config, register_resolvers
from training.failures import exits_in_one_line, final_metrics, one_line_failures, run_entry_point
from training.recipe import apply_recipe
from training.run_directory import open_run
from training.run_logs import one_format

log = logging.getLogger("abswin")


def train(cfg: DictConfig) -> dict[str, float]:
    """Pretrain or finetune as ``cfg`` says; returns the final metrics (also in results.json)."""
    one_format()
    check_config(cfg)  # one-line errors before anything starts
    config = OmegaConf.to_container(cfg, resolve=True)
    with open_run(Path(cfg.paths.run_dir), cfg.resume, config, getattr(rank_zero_only, "rank", 0)) as run:
        if run.finished:
            print(f"finished: {run.finished}", file=sys.stderr)
            return {}
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = build_data(cfg)
        module = build(cfg.module, **class_count(cfg, datamodule))
        if run.ckpt_path is None:  # a resumed run already holds its weights
            load_pretrained(module, cfg)
        trainer = build_trainer(cfg, build_callbacks(cfg))
        apply_recipe(cfg, trainer)  # accumulation from the global batch; logs the recipe block
        datamodule.trainer = trainer
        datamodule.setup("fit")  # the data checks, before the run directory is accepted
        if run.ckpt_path is not None:  # can this run continue it? (a refused start changes nothing)
            datamodule.check_resume(run.ckpt_path)
        run.accept(config, trainer.loggers)
        with one_line_failures(trainer, run.run_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=run.ckpt_path, weights_only=True)
        return run.finish(final_metrics(trainer), trainer.global_step, trainer.current_epoch,
                          trainer.is_global_zero, datamodule.classes)


def class_count(cfg: DictConfig, datamodule) -> dict:
    """``num_classes: null`` in a classifier's config: the data module's class count (two at least)."""
    if "num_classes" not in cfg.module:
        return {}
    if datamodule.num_classes < 2:
        raise ValueError(f"data.root={cfg.data.get('root')} has {datamodule.num_classes} class "
                         f"({', '.join(datamodule.classes)}): a classifier needs at least 2")
    return {"num_classes": datamodule.num_classes} if cfg.module.num_classes is None else {}


def load_pretrained(module, cfg: DictConfig) -> None:
    """Start from ``pretrained=``: a file or exported folder, a published name (fetched once, checksum
    verified) or an exported folder on the hub (``hf-hub:OWNER/NAME``, fetched once)."""
    if not cfg.get("pretrained"):
        return
    path = str(local_path(cfg.pretrained))  # a published name's or a hub folder's copy in the cache; a path as it is
    report = abswin.load_checkpoint(module.model, path)
    module.pretrained_loaded()
    log.info("initialised from %s:\n%s", cfg.pretrained if path == cfg.pretrained else f"{cfg.pretrained} ({path})", report)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exits_in_one_line
def main(cfg: DictConfig) -> float | None:
    return train(cfg).get("train/loss")


if __name__ == "__main__":
    register_resolvers()
    run_entry_point(main)
