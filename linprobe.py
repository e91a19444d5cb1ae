"""Linear probing of a pretrained Hiera: ``python linprobe.py model=hiera_l data=in1k pretrained=CKPT``
(conf/linprobe.yaml): ``train.py``'s :func:`~train.train` with the linear-probe config."""

import hydra
from omegaconf import DictConfig

from train import train
from training.config import register_resolvers
from training.failures import exits_in_one_line, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="linprobe")
@exits_in_one_line
def main(cfg: DictConfig) -> float | None:
    return train(cfg).get("val/acc1")


if __name__ == "__main__":
    register_resolvers()
    run_entry_point(main)
