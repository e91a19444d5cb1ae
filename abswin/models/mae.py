"""Masked autoencoder around Hiera (as the official ``hiera_mae.py``, same parameter names).

Whole mask units are masked; the encoder never sees the masked ones (they are dropped right
after the patch embedding, so no compute is spent on them). The stage outputs are fused at
the final mask-unit resolution, a light decoder fills in mask tokens, and the loss is the
MSE to per-patch normalised pixels over masked patches only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .hiera import Hiera
from .layers import HieraBlock
from .unroll import undo_windowing


class MaskedAutoencoderHiera(Hiera):
    def __init__(
        self,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        q_pool: int = 2,
        **kwargs,
    ):
        kwargs.setdefault("num_classes", 0)
        super().__init__(q_pool=q_pool, **kwargs)
        del self.norm, self.head
        self.norm_pix_loss = norm_pix_loss
        D = len(self.input_size)
        enc_dim = self.blocks[-1].dim_out
        mlp_ratio = kwargs.get("mlp_ratio", 4.0)
        eps = self.blocks[-1].norm1.eps
        self.encoder_norm = nn.LayerNorm(enc_dim, eps=eps)
        self.mask_unit_spatial_shape_final = [m // s ** q_pool for m, s in zip(self.mask_unit_size, self.q_stride)]

        # multi-scale fusion: bring each pooled stage to the final mask-unit resolution
        conv = nn.Conv2d if D == 2 else nn.Conv3d
        self.multi_scale_fusion_heads = nn.ModuleList()
        cur = list(self.mask_unit_size)
        for i in self.stage_ends[:q_pool]:
            kernel = [c // f for c, f in zip(cur, self.mask_unit_spatial_shape_final)]
            cur = [c // s for c, s in zip(cur, self.q_stride)]
            self.multi_scale_fusion_heads.append(conv(self.blocks[i].dim_out, enc_dim, kernel, stride=kernel))
        self.multi_scale_fusion_heads.append(nn.Identity())

        self.decoder_embed = nn.Linear(enc_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_spatial_shape_final), decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            HieraBlock(decoder_embed_dim, decoder_embed_dim, decoder_num_heads, mlp_ratio=mlp_ratio, norm_eps=eps)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=eps)
        self.pred_stride = self.patch_stride[-1] * self.q_stride[-1] ** q_pool
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.pred_stride ** 2 * self.in_chans)
        self._init_mae_weights()

    @property
    def tokens_spatial_shape_final(self) -> list[int]:
        return [t // s ** self.q_pool for t, s in zip(self.tokens_spatial_shape, self.q_stride)]

    def _init_mae_weights(self) -> None:
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.zeros_(m.bias)
                nn.init.ones_(m.weight)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def no_weight_decay(self) -> set[str]:
        """Also the mask token and the decoder's position embedding (embeddings, as MAE)."""
        return super().no_weight_decay() | {"mask_token", "decoder_pos_embed"}

    # ------------------------------------------------------------------ targets
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels to the loss's per-patch targets ``[B, L, pixels]``, patches in the decoder's
        raster order. Layout as the official code: images ``(C, py, px)`` per patch; videos take
        the first frame of each temporal token and use ``(py, px, C)`` (the official "mistake")."""
        p = self.pred_stride
        if x.dim() == 4:
            label = x.permute(0, 2, 3, 1).unfold(1, p, p).unfold(2, p, p)  # B h w C p p
            return label.flatten(1, 2).flatten(2)
        x = x[:, :, :: self.patch_stride[0]]
        label = x.unfold(3, p, p).unfold(4, p, p)  # B C T h w p p
        return label.permute(0, 2, 3, 4, 5, 6, 1).flatten(1, 3).flatten(2)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`, for pictures of predictions: ``[B, C, H, W]``, or for
        video ``[B, C, T', H, W]`` with only the frames the target uses (every
        ``patch_stride[0]``-th)."""
        p, C, B = self.pred_stride, self.in_chans, patches.shape[0]
        h, w = (n // p for n in self.input_size[-2:])
        if len(self.input_size) == 2:
            x = patches.reshape(B, h, w, C, p, p).permute(0, 3, 1, 4, 2, 5)  # B C h py w px
            return x.reshape(B, C, h * p, w * p)
        T = self.tokens_spatial_shape[0]
        x = patches.reshape(B, T, h, w, p, p, C).permute(0, 6, 1, 2, 4, 3, 5)  # B C T h py w px
        return x.reshape(B, C, T, h * p, w * p)

    @staticmethod
    def _patch_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5

    def normalize_target(self, patches: torch.Tensor) -> torch.Tensor:
        """Each patch to zero mean, unit variance when ``norm_pix_loss`` (MAE's better target)."""
        if not self.norm_pix_loss:
            return patches
        mean, std = self._patch_stats(patches)
        return (patches - mean) / std

    def denormalize_pred(self, pred: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Predictions back to pixels with the statistics of the true ``patches`` (the inverse
        of :meth:`normalize_target`), to show reconstructions."""
        if not self.norm_pix_loss:
            return pred
        mean, std = self._patch_stats(patches)
        return pred * std + mean

    def get_pixel_label(self, x: torch.Tensor, pred_mask: torch.Tensor) -> torch.Tensor:
        """The loss targets of the masked patches (``pred_mask`` True = masked)."""
        return self.normalize_target(self.patchify(x)[pred_mask])

    # ------------------------------------------------------------------ forward
    def forward_encoder(self, x: torch.Tensor, mask_ratio: float, mask: torch.Tensor | None = None):
        if mask is None:
            mask = self.get_random_mask(x, mask_ratio)
        stages = self.forward_intermediates(x, mask, output_fmt="NTHWC" if x.ndim == 5 else "NHWC",
                                            intermediates_only=True, stop_early=False)
        stages = stages[: self.q_pool] + stages[-1:]  # resolution is constant after q_pool
        fused = 0.0
        for head, feat in zip(self.multi_scale_fusion_heads, stages):
            if not isinstance(head, nn.Identity):
                B, U = feat.shape[:2]
                f = head(feat.flatten(0, 1).movedim(-1, 1))  # [B*U, C, *unit_final]
                feat = f.movedim(1, -1).reshape(B, U, *f.shape[2:], f.shape[1])
            fused = fused + feat
        return self.encoder_norm(fused), mask

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor):
        """``latent``: [B, kept_units, *unit_final, C]. Returns predictions for every patch
        in raster order and the patch-level mask (True = kept)."""
        x = self.decoder_embed(latent)
        B, C = x.shape[0], x.shape[-1]
        unit = self.mask_unit_spatial_shape_final
        per_unit = math.prod(unit)
        # put the kept units back among mask tokens: a scatter with the (sorted) kept unit ids,
        # whose count is static (x.shape[1]), so it compiles (boolean index_put does not)
        K = x.shape[1]
        ids = torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :K]
        full = self.mask_token.to(x.dtype).expand(B, mask.shape[1], per_unit, C)
        full = full.scatter(1, ids[:, :, None, None].expand(B, K, per_unit, C), x.reshape(B, K, per_unit, C))
        x = undo_windowing(full.view(B, -1, *unit, C), self.tokens_spatial_shape_final, unit)
        x = x.reshape(B, -1, C) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        pred_mask = mask[:, :, None].expand(-1, -1, per_unit).reshape(B, -1, *unit, 1)
        pred_mask = undo_windowing(pred_mask, self.tokens_spatial_shape_final, unit).reshape(B, -1)
        return x, pred_mask

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, masked: torch.Tensor):
        label = self.get_pixel_label(x, masked)
        pred = pred[masked]
        loss = (pred.float() - label.float()).pow(2).mean()
        return loss, pred, label

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.6, mask: torch.Tensor | None = None):
        """Returns ``(loss, pred, label, mask)`` as the official model (its signature, default
        included: training always passes the recipe's ratio from conf/); ``mask`` True = kept unit,
        ``pred``/``label`` are ``[num_masked_patches, patch_pixels]``."""
        latent, mask = self.forward_encoder(x, mask_ratio, mask)
        pred, pred_mask = self.forward_decoder(latent, mask)
        loss, pred, label = self.forward_loss(x, pred, ~pred_mask)
        return loss, pred, label, mask
