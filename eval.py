"""Evaluate a classifier checkpoint (ours, official Hiera, timm, or a published name) at any image
size / frame count; see abswin/conf/eval.yaml."""

from abswin.cli import evaluate

if __name__ == "__main__":
    evaluate()
