"""Hiera as a backbone for dense tasks: the feature pyramid that detection and segmentation heads
take (timm's ``features_only`` interface).

:class:`HieraFeatures` keeps the blocks up to the last chosen stage, drops the final norm and the
classifier, and returns one map per chosen stage, channels first (``[B, C, H, W]``, video
``[B, C, T, H, W]``) by default. abs-win builds the position embedding for any input size the model
can tile, so a detector can feed each batch at its own size. ``feature_info`` gives each map's
channels and stride, as detection frameworks (FPN necks) read it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .hiera import Hiera

__all__ = ["HieraFeatures"]


class HieraFeatures(nn.Module):
    """``model``'s stage outputs ``out_indices`` (timm's convention: stage numbers from 0, negative
    from the end; an int n = the last n). Load weights into ``model`` before wrapping it: its
    norm and head are removed here, and the blocks after the last chosen stage."""

    def __init__(self, model: Hiera, out_indices: int | Sequence[int] = (0, 1, 2, 3), output_fmt: str = "NCHW"):
        super().__init__()
        if not isinstance(model, Hiera) or hasattr(model, "decoder_blocks"):
            raise TypeError(f"features_only needs a Hiera classifier model, got {type(model).__name__}")
        self.out_indices = model.stage_indices(out_indices)
        last_block = model.stage_ends[max(self.out_indices)]
        model.blocks = model.blocks[: last_block + 1]
        model.norm = nn.Identity()
        model.head = nn.Identity()
        self.model = model
        video = len(model.input_size) == 3
        self.output_fmt = {"NCHW": "NCTHW", "NHWC": "NTHWC"}.get(output_fmt, output_fmt) if video else output_fmt
        allowed = ("NCTHW", "NTHWC") if video else ("NCHW", "NHWC")
        if self.output_fmt not in allowed:
            raise ValueError(f"output_fmt={output_fmt!r}: this Hiera gives {' or '.join(map(repr, allowed))}")
        spatial_stride = model.patch_stride[-1]
        self.feature_info = []
        for stage in self.out_indices:
            end = model.stage_ends[stage]
            self.feature_info.append(dict(num_chs=model.blocks[end].dim_out, module=f"model.blocks.{end}", stage=stage,
                                          reduction=spatial_stride * model.q_stride[-1] ** min(stage, model.q_pool)))

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self.feature_info]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, output_fmt=self.output_fmt,
                                                intermediates_only=True)
