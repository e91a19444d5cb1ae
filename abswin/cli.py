"""The commands: ``abswin-train`` / ``python train.py`` (MAE pretraining), ``abswin-finetune`` /
``python finetune.py`` (finetuning) and ``abswin-eval`` / ``python eval.py`` (evaluation at any
size). They compose ``abswin/conf`` with Hydra, so they work from any directory once the package
is installed with its ``[train]`` extra."""

from __future__ import annotations

import hydra

from .launch import entry_point, main, register_resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _pretrain(cfg) -> float | None:
    return main(cfg, metric="train/loss")


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def _finetune(cfg) -> float | None:
    return main(cfg, metric="val/acc1")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _evaluate(cfg) -> float | None:
    from .evaluate import evaluate

    return main(cfg, metric="val/acc1", job=evaluate)


def train() -> None:
    """MAE pretraining (``abswin/conf/train.yaml``)."""
    register_resolvers()
    entry_point(_pretrain)


def finetune() -> None:
    """Supervised finetuning, from a checkpoint or from scratch (``abswin/conf/finetune.yaml``)."""
    register_resolvers()
    entry_point(_finetune)


def evaluate() -> None:
    """Evaluate a checkpoint at any size (``abswin/conf/eval.yaml``)."""
    register_resolvers()
    entry_point(_evaluate)
