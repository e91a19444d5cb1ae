"""Hiera (Ryali et al., 2023) with absolute-win position embeddings (Bolya et al., 2023).

Same architecture and parameter names as the official ``hiera-transformer`` package, so its
checkpoints load directly; see :mod:`abswin.checkpoint`. Differences that are on purpose:

* ``pos_embed="abswin"`` (our default) replaces the learned absolute embedding by a tiled
  window embedding plus an interpolated global one; ``"absolute"`` keeps the official one and
  resizes it naively, as the paper's baseline.
* the head returns logits in eval mode too (the official one returns softmax);
* attention reaches the fused SDPA kernels (see :class:`MaskUnitAttention`), except bf16/fp16
  on CPU, where an explicit softmax attention is faster than the CPU flash kernel;
* unrolling is a single copy (see :mod:`abswin.models.unroll`);
* optional per-block activation checkpointing, LayerScale and timm's projection-free
  stage transition (for timm's abs-win weights).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import pos_embed as pe
from .layers import Head, HieraBlock
from .unroll import reroll, unroll

POS_EMBED_MODES = ("abswin", "absolute")


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(i) for i in v)
    if len(v) != n:
        raise ValueError(f"expected {n} values, got {v}")
    return v


class Hiera(nn.Module):
    """Hiera for images (``input_size=(H, W)``) or video (``input_size=(T, H, W)``).

    Args mirror the official constructor; the abs-win ones:
        pos_embed: ``"abswin"`` or ``"absolute"``.
        global_pos_size: size of the abs-win global embedding (paper default 7x7); ``None``
            or ``0`` for "window only" (Table 2).
        window_pos_embed: ``False`` for "global only" (Table 2).
        global_pos_antialias: resize the global embedding with ``antialias=True``, i.e. the
            PIL-style bicubic kernel (a=-0.5) rather than the plain one (a=-0.75); this changes
            upsampling too, not only shrinking. timm's weights were trained with it on.
        pretrain_grid: for ``pos_embed="absolute"``, the token grid the parameter is kept at
            (the training grid). Running at another ``input_size`` resizes it naively on the
            fly: the bug, reproduced on purpose. Defaults to the input grid.
        grad_ckpt: recompute each block in backward (activation checkpointing).
        probe_head: MAE's linear-probe head (a BatchNorm without affine before the projection,
            :class:`~abswin.models.layers.Head`); a probe's checkpoint records it and evaluates as built.
    """

    def __init__(
        self,
        input_size: Sequence[int] = (224, 224),
        in_chans: int = 3,
        embed_dim: int = 96,
        num_heads: int = 1,
        num_classes: int = 1000,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        mask_unit_size: Sequence[int] = (8, 8),
        mask_unit_attn: Sequence[bool] = (True, True, False, False),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        patch_kernel: Sequence[int] = (7, 7),
        patch_stride: Sequence[int] = (4, 4),
        patch_padding: Sequence[int] = (3, 3),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        head_dropout: float = 0.0,
        probe_head: bool = False,
        head_init_scale: float = 0.001,
        norm_eps: float = 1e-6,
        pos_embed: str = "abswin",
        global_pos_size: int | Sequence[int] | None = (7, 7),
        window_pos_embed: bool = True,
        global_pos_antialias: bool = False,
        pretrain_grid: Sequence[int] | None = None,
        layer_scale_init: float | None = None,
        expand_proj: bool = True,
        grad_ckpt: bool = False,
    ):
        super().__init__()
        D = len(input_size)
        if D not in (2, 3):
            raise ValueError(f"input_size must be (H, W) or (T, H, W), got {tuple(input_size)}")
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed={pos_embed!r} is not one of {POS_EMBED_MODES}")
        if not 0 <= q_pool < len(stages):
            raise ValueError(f"q_pool={q_pool} must be in [0, {len(stages) - 1}]")
        self.input_size = tuple(int(i) for i in input_size)
        self.in_chans = in_chans
        self.q_stride = _tuple(q_stride, D)
        self.mask_unit_size = _tuple(mask_unit_size, D)
        self.patch_stride = _tuple(patch_stride, D)
        self.q_pool = q_pool
        self.stages = tuple(stages)
        self.pos_embed_mode = pos_embed
        self.global_pos_antialias = global_pos_antialias
        self.grad_ckpt = grad_ckpt
        self.num_classes = num_classes

        self._check_input_size(self.input_size)
        self.tokens_spatial_shape = [i // s for i, s in zip(self.input_size, self.patch_stride)]
        self.mask_spatial_shape = [t // m for t, m in zip(self.tokens_spatial_shape, self.mask_unit_size)]
        self.mu_size = math.prod(self.mask_unit_size)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.unroll_strides = [self.q_stride] * (len(stages) - 1)

        conv = nn.Conv2d if D == 2 else nn.Conv3d
        self.patch_embed = nn.Module()
        self.patch_embed.proj = conv(
            in_chans, embed_dim, _tuple(patch_kernel, D), self.patch_stride, _tuple(patch_padding, D)
        )

        # ---- position embeddings (parameter names follow the official / timm code) ----
        spatial = self.tokens_spatial_shape[-2:]
        self.pos_embed = self.pos_embed_spatial = self.pos_embed_temporal = None
        self.pos_embed_window = self.pos_embed_global = None
        if pos_embed == "absolute":
            self.pretrain_grid = tuple(pretrain_grid) if pretrain_grid is not None else tuple(spatial)
            n = math.prod(self.pretrain_grid)
            if D == 2:
                self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
            else:
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, n, embed_dim))
        else:
            self.pretrain_grid = None
            if not window_pos_embed and not global_pos_size:
                raise ValueError("abswin needs a window embedding, a global embedding or both")
            if window_pos_embed:
                self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, *self.mask_unit_size[-2:]))
            if global_pos_size:
                size = _tuple(global_pos_size, 2)
                if any(g < 1 or g > n for g, n in zip(size, spatial)):
                    raise ValueError(
                        f"global_pos_size={list(size)} does not fit the {spatial[0]}x{spatial[1]} token grid of "
                        f"this input size: it is resized to that grid, so each side must be between 1 and "
                        f"{spatial[0]}x{spatial[1]} (the paper uses 7x7 at 224 px, a 56x56 grid)")
                self.pos_embed_global = nn.Parameter(torch.zeros(1, embed_dim, *size))
        if D == 3:
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.tokens_spatial_shape[0], embed_dim))

        # ---- blocks ----
        q_pool_blocks = [x + 1 for x in self.stage_ends[:q_pool]]
        flat_q_stride = math.prod(self.q_stride)
        flat_mu_size = self.mu_size
        depth = sum(stages)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth rule
        cur_stage = 0
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_out = embed_dim
            use_mask_unit_attn = mask_unit_attn[cur_stage]  # lags by one block, as the official
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
                if i in q_pool_blocks:
                    flat_mu_size //= flat_q_stride
            self.blocks.append(
                HieraBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    drop_path=dpr[i],
                    norm_eps=norm_eps,
                    q_stride=flat_q_stride if i in q_pool_blocks else 1,
                    window_size=flat_mu_size,
                    use_mask_unit_attn=use_mask_unit_attn,
                    layer_scale_init=layer_scale_init,
                    expand_proj=expand_proj,
                )
            )
            embed_dim = dim_out
        self.num_features = embed_dim
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = Head(embed_dim, num_classes, dropout=head_dropout, batchnorm=probe_head, eps=norm_eps)

        self._init_weights(head_init_scale)

    # ------------------------------------------------------------------ init / checks
    def _init_weights(self, head_init_scale: float) -> None:
        for p in (self.pos_embed, self.pos_embed_spatial, self.pos_embed_temporal,
                  self.pos_embed_window, self.pos_embed_global):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0.02)
                nn.init.constant_(m.weight, 1.0)
        if isinstance(self.head.projection, nn.Linear):
            self.head.projection.weight.data.mul_(head_init_scale)
            self.head.projection.bias.data.mul_(head_init_scale)

    def _check_input_size(self, size: Sequence[int]) -> None:
        """One clear error for sizes that patches, mask units and q-pooling cannot tile."""
        for axis, n in enumerate(size):
            pooled = self.q_stride[axis] ** (len(self.stages) - 1)
            k = self.patch_stride[axis] * math.lcm(self.mask_unit_size[axis], pooled)
            if n <= 0 or n % k:
                what = "num_frames" if len(size) == 3 and axis == 0 else "img_size"
                near = [m for m in dict.fromkeys((n // k * k, (n // k + 1) * k)) if m > 0] or [k]
                raise ValueError(
                    f"{what}={n} is not allowed for this Hiera: it must be a positive multiple of {k} "
                    f"(patch stride x mask unit), e.g. {' or '.join(map(str, near))}"
                )

    # ------------------------------------------------------------------ position embedding
    def get_pos_embed(self, tokens_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The ``[1, N, C]`` position embedding for a token grid (default: the model's)."""
        shape = list(tokens_shape or self.tokens_spatial_shape)
        grid = shape[-2:]
        if self.pos_embed_mode == "absolute":
            spatial = self.pos_embed if self.pos_embed is not None else self.pos_embed_spatial
            spatial = pe.resize_absolute(spatial, self.pretrain_grid, grid)
        else:
            spatial = pe.abswin_embed(self.pos_embed_window, self.pos_embed_global, grid,
                                      antialias=self.global_pos_antialias)
            spatial = spatial.flatten(2).transpose(1, 2)
        if len(shape) == 2:
            return spatial
        temporal = pe.resize_temporal(self.pos_embed_temporal, shape[0])
        return (temporal[:, :, None, :] + spatial[:, None, :, :]).flatten(1, 2)

    def set_input_size(self, input_size: Sequence[int]) -> None:
        """Run at a new input size. abs-win needs no weight change; absolute resizes on the fly;
        the temporal embedding is re-interpolated (use :mod:`abswin.checkpoint` to bake it)."""
        input_size = tuple(int(i) for i in input_size)
        if len(input_size) != len(self.input_size):
            raise ValueError(f"input_size {input_size} has a different number of dims than {self.input_size}")
        self._check_input_size(input_size)
        self.input_size = input_size
        self.tokens_spatial_shape = [i // s for i, s in zip(input_size, self.patch_stride)]
        self.mask_spatial_shape = [t // m for t, m in zip(self.tokens_spatial_shape, self.mask_unit_size)]

    # ------------------------------------------------------------------ masking
    def get_random_mask(self, x: torch.Tensor, mask_ratio: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Random mask over mask units, ``True`` = keep (as the official code). A seeded
        ``generator`` (on ``x``'s device) gives the same mask every time without touching the
        global RNG: fixed validation masks and pictures."""
        B = x.shape[0]
        num_units = math.prod(self.mask_spatial_shape)
        len_keep = int(num_units * (1 - mask_ratio))
        noise = torch.rand(B, num_units, generator=generator, device=x.device)
        ids = torch.argsort(noise, dim=1)[:, :len_keep]
        mask = torch.zeros(B, num_units, dtype=torch.bool, device=x.device)
        return mask.scatter_(1, ids, True)

    # ------------------------------------------------------------------ forward
    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None, any_size: bool = False) -> torch.Tensor:
        """Patch embedding plus position embedding, unrolled (and the masked units dropped).
        ``any_size``: any input size the model can tile (the embedding resized for it), not only
        ``input_size``."""
        size = tuple(x.shape[2:])
        if any_size and mask is None and len(size) == len(self.input_size):
            self._check_input_size(size)
        elif size != self.input_size:
            raise ValueError(
                f"input of size {size} does not match the model's input_size {self.input_size}; "
                f"create the model with that size or call set_input_size()"
            )
        tokens = self._tokens_shape(size)
        if mask is not None:
            # zero masked units before the conv so no information leaks into kept tokens
            m = mask.view(x.shape[0], 1, *self.mask_spatial_shape).to(x.dtype)
            m = F.interpolate(m, size=size)  # nearest
            x = x * m
        x = self.patch_embed.proj(x)  # [B, C, *tokens]
        x = x.movedim(1, -1)  # [B, *tokens, C] (a view)
        x = unroll(x, tokens, self.unroll_strides)
        pos = unroll(self.get_pos_embed(tokens).view(1, *tokens, -1), tokens, self.unroll_strides)
        x = x + pos
        if mask is not None:
            # unit index is the fastest one: keep the present units along it
            B, N, C = x.shape
            x = x.view(B, N // mask.shape[1], mask.shape[1], C)
            x = x[mask[:, None, :].expand(B, x.shape[1], -1)].view(B, -1, C)
        return x

    def _tokens_shape(self, size: Sequence[int]) -> list[int]:
        return [n // s for n, s in zip(size, self.patch_stride)]

    def _stage_layout(self, stage: int, tokens: Sequence[int] | None = None) -> tuple[list[int], list[tuple[int, ...]]]:
        """Token grid and remaining unroll strides after ``stage`` (for a ``tokens`` grid; default
        the model's)."""
        pools = min(stage, self.q_pool)
        size = list(tokens or self.tokens_spatial_shape)
        for s in self.unroll_strides[:pools]:
            size = [n // k for n, k in zip(size, s)]
        return size, self.unroll_strides[pools:]

    def _run_blocks(self, x: torch.Tensor, mask=None, take: Sequence[int] = (), tokens=None, last_block=None):
        """Run the blocks (up to ``last_block``); returns the tokens and the rerolled outputs of the
        stages in ``take``."""
        stages = []
        for i, blk in enumerate(self.blocks[: None if last_block is None else last_block + 1]):
            if self.grad_ckpt and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in self.stage_ends and self.stage_ends.index(i) in take:
                size, strides = self._stage_layout(self.stage_ends.index(i), tokens)
                stages.append(reroll(x, size, strides, masked=mask is not None))
        return x, stages

    def stage_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """timm's stage selection: None = every stage, ``n`` = the last n, a sequence = those
        stages (negative from the end), in stage order, each once (the order the maps come in).
        One-line ValueError for a stage that does not exist."""
        n = len(self.stage_ends)
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices}: the last-n stages must be 1 to {n}")
            return list(range(n - indices, n))
        chosen = []
        for i in indices:
            if not -n <= int(i) < n:
                raise ValueError(f"stage index {i} out of range: this Hiera has stages 0 to {n - 1} (or -{n} to -1)")
            chosen.append(int(i) % n)
        return sorted(set(chosen))

    def forward_intermediates(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                              indices: int | Sequence[int] | None = None, output_fmt: str = "NCHW",
                              norm: bool = False, stop_early: bool = True,
                              intermediates_only: bool = False):
        """Stage outputs for dense tasks (detection, segmentation), as timm's ``forward_intermediates``.

        ``indices``: which stages (:meth:`stage_indices`); ``output_fmt``: ``"NCHW"`` (video:
        ``"NCTHW"``) or channels-last ``"NHWC"`` (``"NTHWC"``); ``norm`` is not offered (Hiera has
        no per-stage norm). Any input size the model can tile works: abs-win builds the embedding
        for it. Returns ``(final tokens, maps)``, or only ``maps`` with ``intermediates_only``.
        With a ``mask`` (True = keep) maps are channels-last ``[B, units, *unit, C]`` of the kept
        mask units only.
        """
        channels_first = {2: "NCHW", 3: "NCTHW"}[len(self.input_size)]
        channels_last = {2: "NHWC", 3: "NTHWC"}[len(self.input_size)]
        if output_fmt not in (channels_first, channels_last):
            raise ValueError(f"output_fmt={output_fmt!r}: this Hiera gives {channels_first!r} or {channels_last!r}")
        if norm:
            raise ValueError("norm=True is not offered: Hiera has no norm layer per stage")
        if mask is not None and output_fmt != channels_last:
            raise ValueError(f"output_fmt={output_fmt!r} with a mask: the maps are of the kept mask units only, "
                             f"use output_fmt={channels_last!r}")
        take = self.stage_indices(indices)
        last_block = self.stage_ends[max(take)] if stop_early else None
        tokens = self._tokens_shape(x.shape[2:])
        x = self._embed(x, mask, any_size=True)
        x, maps = self._run_blocks(x, mask, take, tokens, last_block)
        if output_fmt == channels_first:
            maps = [m.movedim(-1, 1) for m in maps]
        return maps if intermediates_only else (x, maps)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map ``[B, *grid, C]`` (not normed, not pooled)."""
        x = self._embed(x, None)
        x, _ = self._run_blocks(x)
        size, strides = self._stage_layout(len(self.stages) - 1)
        return reroll(x, size, strides)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        x = features.flatten(1, -2).mean(dim=1)
        return self.head(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` (no softmax, in train and eval)."""
        x = self._embed(x, None)
        x, _ = self._run_blocks(x)
        return self.head(self.norm(x.mean(dim=1)))

    # ------------------------------------------------------------------ helpers
    def pos_embed_param_names(self) -> list[str]:
        return [n for n, p in self.named_parameters(recurse=False) if n.startswith("pos_embed")]

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters weight decay must not shrink (besides every 1-D one,
        which :func:`abswin.optim.param_groups_lrd` skips anyway): the position embeddings."""
        return set(self.pos_embed_param_names())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_ckpt = enable
