"""What the MAE and finetuning modules share: the optimizer and its lr schedule.

The modules hold the model, the loss, the optimizer and schedule, and the training and validation
steps. What happens around every step is a callback of ``conf/callbacks/`` (:mod:`training.callbacks`):
lr and throughput logging, the non-finite guard, the random state for exact resumes, pictures.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from abswin.optim import param_groups_lrd
from .schedule import build_lr_scheduler, schedule_steps

__all__ = ["TrainingModule", "resolve_lr"]

log = logging.getLogger("abswin")


class TrainingModule(pl.LightningModule):
    """Base class. Subclasses set ``self.model`` (via :meth:`_set_model`) and ``self.lr``,
    call ``save_hyperparameters()``, and have hparams ``weight_decay``, ``betas``,
    ``warmup_epochs``, ``warmup_steps``, ``min_lr``, ``batch_size`` (and optionally
    ``layer_decay``)."""

    lr: float
    _lr_from_blr: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._checked_batch = False

    # ------------------------------------------------------------------ model
    def _set_model(self, model: torch.nn.Module, compile: bool) -> None:
        if compile:
            model.compile()  # in place: parameter names (and checkpoint keys) stay the same
        self.model = model

    def _world(self) -> int:
        try:
            return self.trainer.world_size
        except RuntimeError:  # not attached to a Trainer
            return 1

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        """:meth:`build_optimizer`'s optimizer with a per-step warmup + cosine schedule."""
        hp = self.hparams
        optimizer = self.build_optimizer()
        warmup, total = schedule_steps(self.trainer, hp.warmup_epochs, hp.get("warmup_steps"))
        scheduler = build_lr_scheduler(optimizer, self.lr, hp.min_lr, warmup, total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over parameter groups per layer and weight decay (:func:`abswin.optim.param_groups_lrd`).
        The groups are named for the lr monitor (:class:`~training.callbacks.learning_rate.LearningRateLogger`):
        ``train/lr/layerNN`` and ``train/lr/layerNN_no_wd`` (layer 0: the embeddings; the last: what
        follows the blocks)."""
        hp = self.hparams
        groups = param_groups_lrd(self.model, hp.weight_decay, hp.get("layer_decay", 1.0))
        no_decay = self.model.no_weight_decay()  # abswin.optim's rule: these and every 1-D parameter
        for g in groups:
            decay = g["params"][0].ndim > 1 and g["names"][0] not in no_decay
            g["name"] = f"layer{g['layer_id']:02d}" + ("" if decay else "_no_wd")
        return torch.optim.AdamW(groups, lr=self.lr, betas=tuple(hp.betas), fused=self.device.type == "cuda")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if not self._checked_batch:  # the lr premise, once: blr scaling assumes the configured batch
            self._checked_batch = True
            per_device = batch.num_samples  # videos count once however many clips each gives
            effective = per_device * self._world() * self.trainer.accumulate_grad_batches
            if self._lr_from_blr and effective != self.hparams.batch_size:
                rank_zero_warn(
                    f"lr = blr * batch_size / 256 uses batch_size={self.hparams.batch_size}, but the "
                    f"effective batch (per device x devices x accumulation) is {effective}"
                )

    # ------------------------------------------------------------------ DDP
    def pretrained_loaded(self) -> None:
        """Called once ``pretrained=`` weights are in ``self.model`` (not on a resume): what a module
        derives from them (the finetuning EMA's start, the probe's fresh head)."""

    def _unreadable_batch(self, batch_idx: int, why: str = "every sample of it was unreadable") -> torch.Tensor | None:
        """The training step of a batch that cannot be trained on (every sample was unreadable). One
        process skips it (None). Under DDP every rank must still join the gradient all-reduce, or the others
        wait forever: this rank returns a zero loss over every trainable parameter, i.e. a zero gradient."""
        log.warning("rank %d: training batch %d skipped: %s", self.global_rank, batch_idx, why)
        if self._world() == 1:
            return None
        return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0


def resolve_lr(lr: float | None, blr: float | None, batch_size: int) -> tuple[float, bool]:
    """``lr`` or ``blr * batch_size / 256`` (exactly one of them); and whether blr was used."""
    if (lr is None) == (blr is None):
        raise ValueError(f"give exactly one of lr and blr (got lr={lr}, blr={blr})")
    if lr is not None:
        return float(lr), False
    return float(blr) * batch_size / 256, True

