"""Small building blocks of Hiera: drop path, layer scale, MLP, mask-unit attention, block."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT); timm's abs-win Hiera weights use it."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def pool_tokens(x: torch.Tensor, stride: int, mode: str = "max") -> torch.Tensor:
    """Pool unrolled tokens: the outermost ``stride`` groups are the finest spatial offsets.

    See :mod:`abswin.models.unroll`: after unrolling, a 2x2 max-pool is a max over the first
    dimension of a free view.
    """
    x = x.view(x.shape[0], stride, -1, x.shape[-1])
    return _max1(x) if mode == "max" else x.mean(dim=1)


def _max1(x: torch.Tensor) -> torch.Tensor:
    """Max over dim 1 (the pooling window), as the official ``max(dim).values``.

    Not ``amax``: same forward, but ``max`` sends the gradient to one argmax (as the official
    model) where ``amax`` splits it over ties, and its backward (a scatter with the saved
    indices) compiles to much cheaper code than amax's compare-count-divide (about 20% of the
    bf16 step of ``torch.compile``'d Hiera-B on CPU).
    """
    return x.max(dim=1).values


class MaskUnitAttention(nn.Module):
    """Multi-head attention within mask units (windows) or globally, with optional q-pooling.

    Tokens arrive unrolled: ``[B, N, C]`` with ``N = tokens_per_unit * num_units`` and the unit
    index *fastest*. Instead of moving units into the batch (a copy), we fold them into the head
    dimension: q, k and v become ``[B, units * heads, tokens_per_unit, head_dim]`` views whose
    last dimension is contiguous. Those are 4-D, so ``scaled_dot_product_attention`` picks its
    fused kernels (flash / memory-efficient on GPU, flash on CPU) for window *and* global
    attention; a 5-D layout silently falls back to the math kernel.

    q, k and v come from three GEMMs on slices of one ``qkv`` weight (same parameters and
    state-dict keys as the official model): each output is then contiguous per token, which is
    what makes the head-folding view possible without a copy.

    Exception: bf16/fp16 on CPU (autocast or low-precision input) uses
    :meth:`_forward_math` (one qkv GEMM, explicit softmax attention), because the CPU flash
    kernel is slow there; see :func:`_use_math_attention`.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        heads: int,
        q_stride: int = 1,
        window_size: int = 0,
        use_mask_unit_attn: bool = False,
    ):
        super().__init__()
        if dim_out % heads:
            raise ValueError(f"dim_out={dim_out} is not divisible by heads={heads}")
        self.dim = dim
        self.dim_out = dim_out
        self.heads = heads
        self.q_stride = q_stride
        self.window_size = window_size  # tokens per mask unit *after* q-pooling
        self.use_mask_unit_attn = use_mask_unit_attn
        self.head_dim = dim_out // heads
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        units = N // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        per_unit = N // units
        if _use_math_attention(x):
            return self._forward_math(x, units, per_unit)
        w = self.qkv.weight.chunk(3, dim=0)
        b = self.qkv.bias.chunk(3, dim=0) if self.qkv.bias is not None else (None,) * 3
        shape = (B, per_unit, units * self.heads, self.head_dim)
        q = F.linear(x, w[0], b[0])
        if self.q_stride > 1:
            q = _max1(q.view(B, self.q_stride, -1, self.dim_out))
        q = q.view(B, -1, units * self.heads, self.head_dim).transpose(1, 2)
        k = F.linear(x, w[1], b[1]).view(shape).transpose(1, 2)
        v = F.linear(x, w[2], b[2]).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, units*heads, n, head_dim]
        out = out.transpose(1, 2).reshape(B, -1, self.dim_out)
        return self.proj(out)

    def _forward_math(self, x: torch.Tensor, units: int, per_unit: int) -> torch.Tensor:
        """Explicit ``softmax(q k^T) v`` with one fused qkv GEMM (see :func:`_use_math_attention`).

        The softmax scale is folded into the q rows of the (small) weight; max-pooling q commutes
        with it. One copy puts q, k and v in ``[B * units * heads, n, head_dim]`` order, so both
        attention GEMMs are plain ``bmm`` calls on contiguous (or transposed) operands.
        """
        B = x.shape[0]
        H, d, C = self.heads, self.head_dim, self.dim_out
        scale = x.new_ones(3 * C, dtype=self.qkv.weight.dtype)
        scale[:C] = d**-0.5
        b = self.qkv.bias * scale if self.qkv.bias is not None else None
        qkv = F.linear(x, self.qkv.weight * scale[:, None], b)  # [B, n, units, 3 * C]
        qkv = qkv.view(B, per_unit, units, 3, H, d).permute(3, 0, 2, 4, 1, 5)
        q, k, v = qkv.reshape(3, B * units * H, per_unit, d).unbind(0)
        if self.q_stride > 1:
            q = _max1(q.view(q.shape[0], self.q_stride, -1, d))
        attn = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(attn, v).view(B, units, H, -1, d)  # [B, units, heads, n, d]
        out = out.permute(0, 3, 1, 2, 4).reshape(B, -1, C)
        return self.proj(out)


def _use_math_attention(x: torch.Tensor) -> bool:
    """Explicit ``softmax(q k^T) v`` instead of SDPA: only for bf16/fp16 autocast on CPU.

    There the fused CPU flash kernel is ~2.5x slower than two batched GEMMs plus a softmax
    (mostly its backward; Hiera's windows are short, 16-64 tokens, so the GEMMs are small and
    many). The scores are then rounded to bf16 before the softmax (which accumulates in fp32),
    as in the original Hiera code under AMP. fp32 on CPU and every GPU dtype keep SDPA.
    """
    if x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)
    return x.dtype in (torch.bfloat16, torch.float16)


class HieraBlock(nn.Module):
    """Pre-norm transformer block; at a stage transition it widens and q-pools the residual.

    ``expand_proj=True`` is the official transition (a linear projection of the normed input,
    max-pooled); ``False`` is timm's projection-free one (concatenate max- and mean-pooled
    input, which needs ``dim_out == 2 * dim``).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        q_stride: int = 1,
        window_size: int = 0,
        use_mask_unit_attn: bool = False,
        layer_scale_init: float | None = None,
        expand_proj: bool = True,
    ):
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.expand_proj = expand_proj
        if dim != dim_out and expand_proj:
            self.proj = nn.Linear(dim, dim_out)
        elif dim != dim_out and dim_out != 2 * dim:
            raise ValueError(f"a transition without projection needs dim_out == 2*dim, got {dim}->{dim_out}")
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, window_size, use_mask_unit_attn)
        self.ls1 = LayerScale(dim_out, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=norm_eps)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio))
        self.ls2 = LayerScale(dim_out, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            stride = self.attn.q_stride
            if self.expand_proj:
                x = pool_tokens(self.proj(x_norm), stride)
            else:
                x = torch.cat([pool_tokens(x, stride, "max"), pool_tokens(x, stride, "mean")], dim=-1)
        x = x + self.drop_path(self.ls1(self.attn(x_norm)))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x


class Head(nn.Module):
    """Dropout + linear classifier. Returns logits (never probabilities) in train and eval mode.

    The official Hiera head applies softmax in eval mode; ours never does, so losses and
    metrics see the same kind of output everywhere. Apply ``.softmax(-1)`` yourself for
    probabilities.

    ``batchnorm=True`` is MAE's linear-probe head: a BatchNorm without affine parameters before the
    projection (``head.norm``), which standardises each feature of a frozen encoder, so that one
    lr suits every encoder (MAE, He et al. 2022, A.1). Like any BatchNorm it normalises with the
    batch's statistics in train mode and with its running ones in eval mode.
    """

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0, batchnorm: bool = False,
                 eps: float = 1e-6):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=eps) if batchnorm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(self.norm(x)))
