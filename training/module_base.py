"""What the MAE and finetuning modules share: optimizer and schedule, throughput, RNG handling.

Reproducible resume. Lightning restores weights, optimizer, scheduler and loop counters but
no random state, so dropout, drop path, MAE masks and mixup would differ after a resume. Two
things fix that:

* ``step_seed=True`` (default): before every training batch the global torch RNG (CPU and
  CUDA) is reseeded from ``(base seed, batch counter, global rank)``. A batch's randomness
  then depends only on where it is in the run, not on what else consumed random numbers
  before it (validation, dataloader iterators, callbacks), which is what differs between a
  straight and a resumed run. The base seed is ``PL_GLOBAL_SEED`` (``seed_everything``) or
  ``torch.initial_seed()``; it and the counter are saved in checkpoints. Ranks get different
  streams (Lightning's ``seed_everything`` gives every rank the same one).
* the torch (CPU and current CUDA device), numpy and python RNG states are saved in every
  checkpoint (``checkpoint["rng_states"]``, primitive types and tensors only) and restored
  on load, for randomness outside the training step.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import time

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from abswin.optim import param_groups_lrd
from abswin.seeding import derive_seed
from .schedule import build_lr_scheduler, schedule_steps

__all__ = ["NonFiniteError", "TrainingModule", "capture_rng_states", "restore_rng_states"]

log = logging.getLogger("abswin")


def capture_rng_states(device: torch.device | None = None) -> dict:
    """torch / CUDA (one device) / numpy / python RNG states as tensors and primitives."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [int(version), list(internal), gauss_next],
    }
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinite loss, gradient or weight."""


class TrainingModule(pl.LightningModule):
    """Base class. Subclasses set ``self.model`` (via :meth:`_set_model`) and ``self.lr``,
    call ``save_hyperparameters()``, and have hparams ``weight_decay``, ``betas``,
    ``warmup_epochs``, ``warmup_steps``, ``min_lr``, ``batch_size`` (and optionally
    ``layer_decay``)."""

    lr: float
    _lr_from_blr: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._seed_base: int | None = None
        self._micro_step = 0
        self._tp_window: collections.deque = collections.deque(maxlen=50)
        self._tp_last: float | None = None
        self._checked_batch = False
        self._last_loss: torch.Tensor | None = None
        self._nonfinite_skipped = 0

    # ------------------------------------------------------------------ model
    def _set_model(self, model: torch.nn.Module, compile: bool) -> None:
        if compile:
            model.compile()  # in place: parameter names (and checkpoint keys) stay the same
        self.model = model

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups_lrd(self.model, hp.weight_decay, hp.get("layer_decay", 1.0))
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=tuple(hp.betas), fused=fused)
        warmup, total = schedule_steps(self.trainer, hp.warmup_epochs, hp.get("warmup_steps"))
        scheduler = build_lr_scheduler(optimizer, self.lr, hp.min_lr, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _log_lr(self) -> None:
        opt = self.trainer.optimizers[0]
        self.log("train/lr", max(g["lr"] for g in opt.param_groups), on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ per-batch hooks
    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def on_train_epoch_start(self) -> None:
        self._tp_last = None
        self._tp_window = collections.deque(maxlen=max(1, self.trainer.log_every_n_steps))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.hparams.get("step_seed", True):
            self._reseed()
        self._micro_step += 1
        if not self._checked_batch:
            self._checked_batch = True
            per_device = batch.num_samples  # videos count once however many clips each gives
            effective = per_device * self._world() * self.trainer.accumulate_grad_batches
            if self._lr_from_blr and effective != self.hparams.batch_size:
                rank_zero_warn(
                    f"lr = blr * batch_size / 256 uses batch_size={self.hparams.batch_size}, but the "
                    f"effective batch (per device x devices x accumulation) is {effective}"
                )
        if self._tp_last is None:
            self._tp_last = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # images/s over the last log_every_n_steps batches (data loading included); no CUDA
        # sync: over a window the host-device lag averages out
        now = time.perf_counter()
        n = batch.images.shape[0] * self._world()
        self._tp_window.append((n, now - self._tp_last))
        self._tp_last = now
        images = sum(i for i, _ in self._tp_window)
        seconds = sum(t for _, t in self._tp_window)
        if seconds > 0:
            self.log("train/throughput", images / seconds, on_step=True, on_epoch=False,
                     batch_size=batch.images.shape[0])

    # ------------------------------------------------------------------ the non-finite guard
    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        self._last_loss = loss.detach()
        super().backward(loss, *args, **kwargs)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop (or, up to ``max_nonfinite_skips`` times, skip the step) when the gradient is not
        finite. The gradient is the same on every rank after DDP's all-reduce (a NaN loss on one
        rank makes it NaN everywhere), so every rank decides the same. Runs with a gradient
        scaler (fp16) are left to the scaler, which skips such steps itself."""
        if self._trainer is not None and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        if math.isfinite(norm):
            return
        loss = float(self._last_loss) if self._last_loss is not None else float("nan")
        step = self.trainer.global_step if self._trainer is not None else 0
        if self._nonfinite_skipped < self.hparams.get("max_nonfinite_skips", 0):
            self._nonfinite_skipped += 1
            rank_zero_warn(f"step {step}: loss {loss:g}, gradient norm {norm:g}: step skipped "
                           f"({self._nonfinite_skipped} of at most {self.hparams.max_nonfinite_skips})")
            for p in self.parameters():
                p.grad = None  # AdamW leaves parameters without a gradient untouched
            return
        raise NonFiniteError(f"step {step}: the loss is {loss:g} and the gradient norm {norm:g}: training "
                             f"diverged (lower the lr, or skip such steps with module.max_nonfinite_skips=N)")

    def _check_finite_weights(self) -> None:
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            step = self.trainer.global_step if self._trainer is not None else 0
            raise NonFiniteError(f"step {step}: the weights hold NaN or infinite values ({', '.join(bad[:3])}): "
                                 f"not written over the last checkpoint")

    def _unreadable_batch(self) -> torch.Tensor | None:
        """The training step of a batch in which every sample was unreadable. One process skips it
        (None). Under DDP every rank must still join the gradient all-reduce, or the others wait
        forever: this rank returns a zero loss over every trainable parameter, i.e. a zero gradient."""
        log.warning("rank %d: every sample of training batch %d was unreadable", self.global_rank,
                    self._micro_step)
        if self._world() == 1:
            return None
        return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0

    # ------------------------------------------------------------------ RNG
    def _reseed(self) -> None:
        if self._seed_base is None:
            self._seed_base = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed())) % 2**63
        rank = self.global_rank if self._trainer is not None else 0
        torch.manual_seed(derive_seed(self._seed_base, self._micro_step, rank))

    def _rng_device(self) -> torch.device | None:
        if self._trainer is not None:
            return self.trainer.strategy.root_device
        return self.device

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._check_finite_weights()  # every rank: nothing non-finite is ever written
        checkpoint["rng_states"] = capture_rng_states(self._rng_device())
        checkpoint["step_seed"] = {"base": self._seed_base, "micro_step": self._micro_step,
                                   "nonfinite_skipped": self._nonfinite_skipped}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # only when resuming a fit: load_from_checkpoint (no trainer) leaves the RNG alone
        if "rng_states" in checkpoint and self._trainer is not None:
            restore_rng_states(checkpoint["rng_states"], self._rng_device())
        if "step_seed" in checkpoint:
            self._seed_base = checkpoint["step_seed"]["base"]
            self._micro_step = checkpoint["step_seed"]["micro_step"]
            self._nonfinite_skipped = checkpoint["step_seed"].get("nonfinite_skipped", 0)


def resolve_lr(lr: float | None, blr: float | None, batch_size: int) -> tuple[float, bool]:
    """``lr`` or ``blr * batch_size / 256`` (exactly one of them); and whether blr was used."""
    if (lr is None) == (blr is None):
        raise ValueError(f"give exactly one of lr and blr (got lr={lr}, blr={blr})")
    if lr is not None:
        return float(lr), False
    return float(blr) * batch_size / 256, True

