"""MAE pretraining of Hiera.  `python train.py` runs the CPU demo; see conf/train.yaml."""

import hydra

from abswin.launch import entry_point, main as launch, register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg) -> float | None:
    return launch(cfg, metric="train/loss")


if __name__ == "__main__":
    entry_point(main)
