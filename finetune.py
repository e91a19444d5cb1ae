"""Supervised finetuning of Hiera (from MAE, official, timm checkpoints or from scratch); see
abswin/conf/finetune.yaml."""

from abswin.cli import finetune

if __name__ == "__main__":
    finetune()
