"""Supervised finetuning of Hiera (from MAE, official, timm checkpoints or from scratch); see conf/finetune.yaml."""

import hydra

from abswin.launch import entry_point, main as launch, register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg) -> float | None:
    return launch(cfg, metric="val/acc1")


if __name__ == "__main__":
    entry_point(main)
