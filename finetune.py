"""Supervised finetuning of Hiera: ``python finetune.py model=hiera_l data=in1k pretrained=CKPT``
(conf/finetune.yaml): ``train.py``'s :func:`~train.train` with the finetuning config."""

import hydra
from omegaconf import DictConfig

from train import train
from training.config import register_resolvers
from training.failures import exits_in_one_line, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
@exits_in_one_line
def main(cfg: DictConfig) -> float | None:
    return train(cfg).get("val/acc1")


if __name__ == "__main__":
    register_resolvers()
    run_entry_point(main)
