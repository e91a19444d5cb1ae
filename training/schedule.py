"""Per-step learning-rate schedule: linear warmup from 0, then cosine decay to ``min_lr``.

The schedule is a multiplier for :class:`torch.optim.lr_scheduler.LambdaLR`. Each parameter
group's base lr is ``lr * lr_scale`` (layer-wise decay, :func:`abswin.optim.param_groups_lrd`),
so every group follows the same curve scaled by its ``lr_scale``, and decays to
``min_lr * lr_scale`` (as MAE's ``adjust_learning_rate``).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .lightning_private import setup_train_data

__all__ = ["WarmupCosine", "build_lr_scheduler", "schedule_steps", "steps_per_epoch"]


class WarmupCosine:
    """``step -> lr multiplier``: ``step / warmup_steps`` during warmup (0 at step 0), then
    half a cosine from 1 to ``min_lr_ratio`` at ``total_steps`` (and flat after it).

    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        r = self.min_lr_ratio
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: Optimizer, lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> LambdaLR:
    """Set each group's lr to ``lr * lr_scale`` and wrap the optimizer in a per-step LambdaLR."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        g.pop("initial_lr", None)
    schedule = WarmupCosine(warmup_steps, total_steps, min_lr / lr if lr > 0 else 0.0)

    # a plain function: LambdaLR then keeps no schedule state in checkpoints, so a resumed
    # run follows the schedule of its own config (e.g. more epochs), the step count restored
    def lr_lambda(step: int) -> float:
        return schedule(step)

    return LambdaLR(optimizer, lr_lambda)


def steps_per_epoch(trainer) -> float:
    """Optimizer steps in one epoch (per device, after gradient accumulation)."""
    if trainer.train_dataloader is None:  # not loaded yet (max_steps runs): as Lightning does
        setup_train_data(trainer)
    n = trainer.num_training_batches
    if n != float("inf") and n > 0:
        return math.ceil(n / trainer.accumulate_grad_batches)
    if trainer.max_epochs and trainer.max_epochs > 0:
        return trainer.estimated_stepping_batches / trainer.max_epochs
    raise ValueError("cannot tell the steps per epoch (iterable loader without length): give warmup_steps")


def schedule_steps(trainer, warmup_epochs: float, warmup_steps: int | None = None) -> tuple[int, int]:
    """``(warmup_steps, total_steps)`` for a Lightning trainer.

    ``total_steps`` is ``trainer.estimated_stepping_batches`` (``max_steps`` or
    ``max_epochs`` x steps per epoch); ``warmup_steps`` wins over ``warmup_epochs``, which
    is converted with the steps per epoch.
    """
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total) or total <= 0:
        raise ValueError("the trainer has no finite number of steps: set max_epochs or max_steps")
    total = int(total)
    if warmup_steps is None:
        warmup_steps = round(warmup_epochs * steps_per_epoch(trainer)) if warmup_epochs else 0
    return min(int(warmup_steps), total), total
