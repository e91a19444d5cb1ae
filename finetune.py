"""Supervised finetuning of Hiera: ``python finetune.py model=hiera_l data=in1k pretrained=CKPT``
(conf/finetune.yaml)."""

import hydra

from training.launch import entry_point, main, register_resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def finetune(cfg):
    return main(cfg, metric="val/acc1")


if __name__ == "__main__":
    register_resolvers()
    entry_point(finetune)
