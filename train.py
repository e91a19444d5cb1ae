"""MAE pretraining of Hiera: ``python train.py model=hiera_l data=in1k`` (conf/train.yaml)."""

import hydra

from training.launch import entry_point, main, register_resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def pretrain(cfg):
    return main(cfg, metric="train/loss")


if __name__ == "__main__":
    register_resolvers()
    entry_point(pretrain)
