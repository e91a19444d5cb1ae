"""The non-finite guard: a diverging run stops (or skips a few steps) and never writes NaN weights.

:class:`NonFiniteGuard` checks the gradient before every optimizer step: a NaN or infinite norm
skips the step (up to ``max_skips`` times in the whole run, each logged) or raises
:class:`NonFiniteError`, which the entry points turn into one line and a non-zero exit. Before a
checkpoint is written it checks the weights: a checkpoint with NaN or infinite weights is never
written, so ``last.ckpt`` stays the last finite state. The number of skipped steps is part of the
callback's checkpoint state: a resumed run does not get ``max_skips`` new ones.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["NonFiniteError", "NonFiniteGuard"]


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinite loss, gradient or weight."""


class NonFiniteGuard(pl.Callback):
    """Stop on a non-finite gradient, or skip up to ``max_skips`` such steps; refuse to save
    non-finite weights.

    The gradient is the same on every rank after DDP's all-reduce (a NaN loss on one rank makes it
    NaN everywhere), so every rank decides the same. Runs with a gradient scaler (fp16) are left to
    the scaler, which skips such steps itself. Checkpoints written with ``save_weights_only`` are
    not checked (Lightning calls no callback for them); the shipped configs write full ones.

    Args:
        max_skips: optimizer steps with a NaN/infinite gradient to skip (each logged) before one
            stops the run; 0: the first one stops it (``callbacks.nonfinite.max_skips``).
    """

    def __init__(self, max_skips: int) -> None:
        if max_skips < 0:
            raise ValueError(f"callbacks.nonfinite.max_skips={max_skips} must be >= 0")
        self.max_skips = int(max_skips)
        self.skipped = 0
        self._last_loss: torch.Tensor | None = None

    # ------------------------------------------------------------------ the gradient
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._last_loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        if math.isfinite(norm):
            return
        loss = float(self._last_loss) if self._last_loss is not None else float("nan")
        step = trainer.global_step
        if self.skipped < self.max_skips:
            self.skipped += 1
            rank_zero_warn(f"step {step}: loss {loss:g}, gradient norm {norm:g}: step skipped "
                           f"({self.skipped} of at most {self.max_skips})")
            for p in pl_module.parameters():
                p.grad = None  # AdamW leaves parameters without a gradient untouched
            return
        raise NonFiniteError(f"step {step}: the loss is {loss:g} and the gradient norm {norm:g}: training "
                             f"diverged (lower the lr, or skip such steps with callbacks.nonfinite.max_skips=N)")

    # ------------------------------------------------------------------ the weights
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # every rank: nothing non-finite is ever written (rank 0 writes, after this returns everywhere)
        bad = [n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteError(f"step {trainer.global_step}: the weights hold NaN or infinite values "
                                 f"({', '.join(bad[:3])}): not written over the last checkpoint")

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict["skipped"])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # checkpoints written before the guard was a callback kept the count beside the step seed
        # (load_state_dict, which Lightning calls after this, wins when the callback's state is there)
        legacy = checkpoint.get("step_seed") or {}
        if "nonfinite_skipped" in legacy:
            self.skipped = int(legacy["nonfinite_skipped"])
