"""The Hydra configs of abswin-train / abswin-finetune (a package so that Hydra finds them installed)."""
