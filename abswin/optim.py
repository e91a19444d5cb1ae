"""Parameter groups for layer-wise lr decay (BEiT / MAE finetuning recipe).

Layer ids: position and patch embeddings are layer 0, block ``i`` is layer ``i + 1``, and
everything after the blocks (final norm, head, MAE decoder) is the last layer
``num_blocks + 1``. A parameter at layer ``l`` gets ``lr_scale = decay ** (last - l)``.

No weight decay on biases, norm weights, LayerScale gammas (every 1-D parameter) and on the
parameters the model names in ``no_weight_decay()``: *every* position-embedding parameter,
abs-win's window and global parts included (timm's Hiera forgets its window embedding here),
and MAE's mask token and decoder position embedding.
"""

from __future__ import annotations

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
