"""Exact resume: the random state of training, per step and in checkpoints.

Lightning restores weights, optimizer, scheduler and loop counters but no random state, so
dropout, drop path, MAE masks and mixup would differ after a resume. :class:`ExactResume` fixes
that in two ways:

* ``step_seed=True``: before every training batch the global torch RNG (CPU and CUDA) is reseeded
  from ``(base seed, batch counter, global rank)``. A batch's randomness then depends only on where
  it is in the run, not on what else consumed random numbers before it (validation, dataloader
  iterators, other callbacks), which is what differs between a straight and a resumed run. The base
  seed is ``PL_GLOBAL_SEED`` (``seed_everything``) or ``torch.initial_seed()``; it and the counter
  are in the callback's checkpoint state. Ranks get different streams (Lightning's
  ``seed_everything`` gives every rank the same one).
* the torch (CPU and current CUDA device), numpy and python RNG states are in the callback's
  checkpoint state (primitive types and tensors only: checkpoints load with ``weights_only``) and
  are restored when a fit resumes, for randomness outside the training step.

The data side (which batches an epoch still has, with which augmentations) is the data module's:
:mod:`datamodules.loading`.
"""

from __future__ import annotations

import os
import random

import lightning.pytorch as pl
import numpy as np
import torch

from abswin.seeding import derive_seed

__all__ = ["ExactResume", "capture_rng_states", "restore_rng_states"]


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


class ExactResume(pl.Callback):
    """Per-step reseeding and RNG states in checkpoints, for bit-exact resumes (module docstring).

    Args:
        step_seed: reseed the global torch RNG before every training batch; False keeps only the
            RNG states in checkpoints.
    """

    def __init__(self, step_seed: bool) -> None:
        self.step_seed = bool(step_seed)
        self.seed_base: int | None = None
        self.batches = 0  # training batches started in this run, over every epoch and resume
        self._device: torch.device | None = None  # the one CUDA device whose RNG state is kept

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._device = trainer.strategy.root_device  # before Lightning restores a checkpoint

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.step_seed:
            if self.seed_base is None:
                self.seed_base = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed())) % 2**63
            torch.manual_seed(derive_seed(self.seed_base, self.batches, trainer.global_rank))
        self.batches += 1

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {"seed_base": self.seed_base, "batches": self.batches,
                "rng_states": capture_rng_states(self._device)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed_base = state_dict["seed_base"]
        self.batches = int(state_dict["batches"])
        restore_rng_states(state_dict["rng_states"], self._device)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # checkpoints written before this was a callback hold the same state at the top level
        # (load_state_dict, which Lightning calls after this, is used when the callback's state is there)
        if "step_seed" in checkpoint and "rng_states" in checkpoint:
            self.seed_base = checkpoint["step_seed"]["base"]
            self.batches = int(checkpoint["step_seed"]["micro_step"])
            restore_rng_states(checkpoint["rng_states"], self._device)
