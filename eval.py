"""Evaluate a classifier checkpoint at any size: ``python eval.py pretrained=CKPT data.img_size=384``
(conf/eval.yaml)."""

import hydra

from training.evaluation import evaluate
from training.launch import entry_point, main, register_resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def evaluate_checkpoint(cfg):
    return main(cfg, metric="val/acc1", job=evaluate)


if __name__ == "__main__":
    register_resolvers()
    entry_point(evaluate_checkpoint)
