"""Evaluate a classifier checkpoint at any size: ``python eval.py pretrained=CKPT data.img_size=384``
(conf/eval.yaml). The network is built as the checkpoint was trained (position-embedding mode and
shapes, classes); loading resizes it the way its mode dictates. The evaluation is finetuning's own
validation (same loaders, precision and multi-view protocol, each sample once under DDP)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from abswin.checkpoint import load_checkpoint, read_architecture, read_checkpoint
from datamodules import check_same_classes
from training.config import build, build_data, build_trainer, check_run_dir, check_whole_numbers, register_resolvers
from training.evaluation import (check_results_folder, checkpoint_id, classifier_arguments, local_checkpoint,
                                 result_row, write_results)
from training.failures import exits_in_one_line, final_metrics, one_line_failures, run_entry_point
from training.run_logs import one_format

log = logging.getLogger("abswin")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.pretrained`` as configured; returns the metrics (also in results.json)."""
    one_format()
    check_whole_numbers(cfg)
    check_run_dir(cfg)
    if getattr(rank_zero_only, "rank", 0) == 0:  # never over another evaluation's results
        check_results_folder(Path(cfg.paths.run_dir), checkpoint_id(str(cfg.pretrained)),
                             OmegaConf.select(cfg, "data.root"))
    path, published_model = local_checkpoint(str(cfg.pretrained))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_data(cfg)
    checkpoint = read_checkpoint(path)  # once: for its architecture, then its weights
    arch = read_architecture(path, checkpoint)
    if not cfg.data.get("class_index"):  # a class index maps other folder names (ImageNet-V2, -R) by hand
        check_same_classes(arch.classes, datamodule.classes, f"data.root={cfg.data.get('root')}")
    module = build(classifier_arguments(cfg, arch, datamodule.num_classes, published_model))
    log.info("evaluating %s", path)
    load_checkpoint(module.model, path, strict=True, checkpoint=checkpoint)  # logs its report
    del checkpoint

    trainer = build_trainer(cfg, [])
    start = time.perf_counter()
    with one_line_failures(trainer):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = final_metrics(trainer)
    if trainer.is_global_zero:
        print(write_results(Path(cfg.paths.run_dir), metrics, result_row(cfg, metrics, time.perf_counter() - start),
                            datamodule.classes), flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exits_in_one_line
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("val/acc1")


if __name__ == "__main__":
    register_resolvers()
    run_entry_point(main)
