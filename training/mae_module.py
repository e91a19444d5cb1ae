"""MAE pretraining of Hiera as a LightningModule (recipe of Ryali et al., 2023 / MAE)."""

from __future__ import annotations

import math

import torch

from abswin.batch import Batch
from abswin.models import create_model
from abswin.seeding import derive_seed
from .module_base import TrainingModule, resolve_lr

__all__ = ["MAEPretrainModule"]


class MAEPretrainModule(TrainingModule):
    """MAE pretraining. ``self.model`` is the :class:`~abswin.MaskedAutoencoderHiera`.

    Args:
        model_name: an MAE model of the registry, e.g. ``"mae_hiera_base_224"``.
        model_kwargs: overrides for :func:`abswin.create_model` (``img_size``, ``pos_embed``,
            ``global_pos_size``, ``drop_path_rate``, ``grad_ckpt``, ...).
        mask_ratio: fraction of mask units hidden from the encoder.
        blr: base lr per 256 images; ``lr = blr * batch_size / 256``.
        batch_size: the GLOBAL effective batch (per device x devices x accumulation), used
            only for the lr scaling (a warning says when it differs from what runs).
        weight_decay, betas: AdamW; no weight decay on 1-D parameters, position embeddings
            and the mask token.
        warmup_epochs: linear warmup, converted to steps with the steps per epoch;
            ``warmup_steps`` (if not None) is used instead.
        min_lr: end of the cosine decay.
        lr: absolute lr instead of ``blr`` scaling (if not None).
        val_mask_seed: seed of the validation masks (the same every epoch, so ``val/loss``
            is comparable across epochs).
        compile: ``torch.compile`` the model (in place; checkpoint keys do not change).

    Video: the same module with a video model (``mae_hiera_*_16x224``), clips ``[B, C, T, H, W]``
    and ``mask_ratio=0.9``; validation flattens multi-view batches into single clips.
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict,
        mask_ratio: float,
        blr: float | None,
        lr: float | None,
        batch_size: int,
        weight_decay: float,
        betas: list[float],
        warmup_epochs: float,
        min_lr: float,
        warmup_steps: int | None = None,
        compile: bool = False,
        val_mask_seed: int = 0,
    ):
        super().__init__()
        betas = list(betas)
        self.save_hyperparameters()
        self.lr, self._lr_from_blr = resolve_lr(lr, None if lr is not None else blr, batch_size)
        self._set_model(create_model(model_name, **model_kwargs), compile)
        units = math.prod(self.model.mask_spatial_shape)
        kept = int(units * (1 - mask_ratio))
        if not 0 <= mask_ratio < 1 or kept < 1:
            raise ValueError(f"mask_ratio={mask_ratio} keeps {kept} of the {units} mask units at this input size: "
                             f"use a ratio in [0, 1) that keeps at least one, or a larger input (img_size, num_frames)")

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        return self.model(images, self.hparams.mask_ratio, mask=mask)

    def training_step(self, batch: Batch, batch_idx: int):
        if batch.images.shape[0] == 0:  # every image of this batch was unreadable (skipped by the loader)
            return self._unreadable_batch(batch_idx)
        images = batch.images
        loss = self.model(images, self.hparams.mask_ratio)[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str, dataloader_idx: int = 0):
        # video multi-view batch: every view [B, V, C, T, H, W] is a sample
        images = batch.views.flatten(0, 1) if batch.views is not None else batch.images
        if images.shape[0] == 0:
            return None
        seed = derive_seed(self.hparams.val_mask_seed, dataloader_idx, batch_idx)
        g = torch.Generator(device=images.device).manual_seed(seed)
        mask = self.model.get_random_mask(images, self.hparams.mask_ratio, generator=g)
        loss = self.model(images, self.hparams.mask_ratio, mask=mask)[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, batch_idx, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, batch_idx, "test", dataloader_idx)
