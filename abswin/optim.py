"""Optimizers' parameter groups for layer-wise lr decay (BEiT / MAE finetuning recipe), and LARS
(MAE's linear probe).

Layer ids: position and patch embeddings are layer 0, block ``i`` is layer ``i + 1``, and
everything after the blocks (final norm, head, MAE decoder) is the last layer
``num_blocks + 1``. A parameter at layer ``l`` gets ``lr_scale = decay ** (last - l)``.

No weight decay on biases, norm weights, LayerScale gammas (every 1-D parameter) and on the
parameters the model names in ``no_weight_decay()``: *every* position-embedding parameter,
abs-win's window and global parts included (timm's Hiera forgets its window embedding here),
and MAE's mask token and decoder position embedding.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def layer_id(name: str, num_blocks: int) -> int:
    if name.startswith(("pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_blocks + 1


def param_groups_lrd(model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups; each has ``lr_scale`` to multiply the scheduled lr by."""
    no_decay = model.no_weight_decay()  # full parameter names
    num_blocks = len(model.blocks)
    last = num_blocks + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, num_blocks)
        decay = p.ndim > 1 and name not in no_decay
        g = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (last - lid),
                "layer_id": lid,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as MAE's linear probe
    trains its head at batch 16384 (MAE, He et al. 2022, Table 9).

    For a parameter of two or more dimensions (a weight matrix) the step is the gradient plus weight
    decay, multiplied by ``trust_coefficient * |weight| / |step|``: its norm becomes
    ``trust_coefficient * |weight|`` whatever the gradient's scale. Biases and other 1-D parameters
    take the plain gradient (no decay, no rescaling). Then heavy-ball momentum
    ``mu = momentum * mu + step`` and ``p -= lr * mu``. Without the rescaling, an lr as large as the
    linear scaling rule gives at that batch (6.4) would diverge.
    """

    def __init__(self, params, lr: float, weight_decay: float, momentum: float, trust_coefficient: float = 0.001):
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum),
                            ("trust_coefficient", trust_coefficient)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"LARS {name}={value!r} must be a number >= 0")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    weight_norm, update_norm = p.norm(), update.norm()
                    ratio = group["trust_coefficient"] * weight_norm / update_norm
                    # a zero weight or a zero step: no rescaling (the ratio would be 0 or undefined)
                    update = update * torch.where((weight_norm > 0) & (update_norm > 0), ratio, 1.0)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss
