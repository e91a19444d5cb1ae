"""Linear probing of a pretrained Hiera as a LightningModule (MAE's protocol, He et al. 2022, A.1).

A probe measures what an encoder learned without changing it: the encoder is frozen (and kept in
eval mode, so nothing in it changes, its norms included), and only a linear classifier on its pooled
features trains, behind a BatchNorm without affine parameters (the model's ``probe_head``), with
LARS at a large batch. The trained checkpoint is an ordinary classifier of ours: ``eval.py`` and
``abswin.export`` take it as they take a finetuned one.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from abswin.batch import Batch
from abswin.optim import LARS
from .classifier_module import ClassifierModule
from .module_base import resolve_lr

__all__ = ["LinearProbeModule"]

log = logging.getLogger("abswin")


class LinearProbeModule(ClassifierModule):
    """``self.model`` is a :class:`~abswin.Hiera` classifier built with ``probe_head=True``; only
    ``model.head`` trains.

    Args:
        model_name: a classifier of the registry, e.g. ``"hiera_base_224"``.
        model_kwargs: options for :func:`abswin.create_model` (``img_size``, ``pos_embed``, ...);
            ``probe_head`` is set here.
        num_classes: classifier outputs.
        lr, blr: exactly one; ``lr = blr * batch_size / 256`` for ``blr``.
        batch_size: the GLOBAL effective batch, for the ``blr`` scaling.
        weight_decay, momentum: LARS's (:class:`abswin.optim.LARS`).
        head_init_std: the linear layer starts from a truncated normal of this std and a zero bias,
            also after ``pretrained=`` weights are loaded (a classifier's head is not kept).
        warmup_epochs (or ``warmup_steps``), min_lr: per-step warmup + cosine schedule.
        eval_views_per_forward: video evaluation, as :class:`~training.FinetuneModule`'s.

    Logs what :class:`~training.FinetuneModule` logs (``train/loss``, ``val/acc1``, ...).
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict,
        num_classes: int,
        lr: float | None,
        blr: float | None,
        batch_size: int,
        weight_decay: float,
        momentum: float,
        head_init_std: float,
        warmup_epochs: float,
        min_lr: float,
        eval_views_per_forward: int | None,
        warmup_steps: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.lr, self._lr_from_blr = resolve_lr(lr, blr, batch_size)
        model = self._classifier(model_name, dict(model_kwargs, probe_head=True), num_classes)
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        self._set_model(model, compile=False)
        self._fresh_head()
        self._set_modes(True)
        self._add_metrics(num_classes, ("val", "test"))

    def _fresh_head(self) -> None:
        """MAE's start: the linear layer from a truncated normal of ``head_init_std`` with a zero bias,
        the BatchNorm's statistics reset."""
        head = self.model.head
        torch.nn.init.trunc_normal_(head.projection.weight, std=self.hparams.head_init_std)
        torch.nn.init.zeros_(head.projection.bias)
        head.norm.reset_running_stats()

    def pretrained_loaded(self) -> None:
        """A probe trains its own head: one the checkpoint held (a finetuned or probed classifier's) is
        replaced by a fresh one."""
        self._fresh_head()
        log.info("linear probe: the head starts afresh (trunc normal, std %g; BatchNorm statistics reset), "
                 "whatever head the checkpoint held", self.hparams.head_init_std)

    def _set_modes(self, training: bool) -> None:
        """The frozen encoder always in eval mode (no drop path, no dropout); the head's BatchNorm in
        ``training`` mode, so that it learns its statistics in training only."""
        self.model.eval()
        self.model.head.train(training)

    def train(self, mode: bool = True):
        super().train(mode)
        self._set_modes(mode)
        return self

    def on_train_epoch_start(self) -> None:
        """Lightning restores each submodule's mode after validation but sets none at the start of
        fitting; the modes are asserted here, where every training epoch begins."""
        self._set_modes(True)

    def training_step(self, batch: Batch, batch_idx: int):
        if batch.images.shape[0] < 2:  # unreadable images are left out; BatchNorm needs two samples to train
            why = "every sample of it was unreadable" if batch.images.shape[0] == 0 else \
                "one readable sample, and the probe's BatchNorm needs two"
            return self._unreadable_batch(batch_idx, why)
        # no encoder parameter needs a gradient, so autograd keeps none of the encoder's activations
        loss = F.cross_entropy(self.model(batch.images).float(), batch.labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch.images.shape[0])
        return loss

    def build_optimizer(self) -> torch.optim.Optimizer:
        """LARS over the head's linear layer (the BatchNorm has no parameters), one group: ``train/lr/head``."""
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        return LARS([{"params": params, "name": "head"}], lr=self.lr, weight_decay=hp.weight_decay,
                    momentum=hp.momentum)
