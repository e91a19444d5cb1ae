"""MAE pretraining of Hiera.  `python train.py` runs the CPU demo; see abswin/conf/train.yaml."""

from abswin.cli import train

if __name__ == "__main__":
    train()
