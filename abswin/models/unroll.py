"""Unroll / reroll: the token order that makes Hiera's windowing and pooling free.

Hiera pools 2x2 (or 1x2x2) three times and attends within 8x8 mask units. Write a token
coordinate along one axis as ``h = u * 8 + a3 * 4 + a2 * 2 + a1`` where ``u`` is the mask
unit and ``a1, a2, a3`` are the offsets inside it, finest first. *Unrolling* orders the
tokens as ``[a1 (all axes), a2, a3, u (all axes)]``, outermost first. Then

* a q-pool is a max over the outermost group (``view(B, 4, -1, C).max(1)``), which also
  drops that group so the next pool is again outermost;
* mask unit ``u`` is the fastest index, so "the tokens of unit ``u``" is a strided view;
* masking whole units removes entries along the fastest index only.

The official code reaches this order with one permute-and-copy per stage; here the whole
order is one ``permute`` of a view, so unrolling costs a single copy (and rerolling a
stage output for dense features a single copy too). Both sides work for 2-D and 3-D.
"""

from __future__ import annotations

import math
from typing import Sequence


def _digits(size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Per axis: ``[units, s_last, ..., s_first]`` so that ``view`` splits each axis MSB-first."""
    out = []
    for axis, n in enumerate(size):
        steps = [s[axis] for s in strides]
        units = n // math.prod(steps)
        out.append([units] + steps[::-1])
    return out


def unroll(x, size: Sequence[int], strides: Sequence[Sequence[int]]):
    """``[B, *size, C]`` (any strides) -> ``[B, N, C]`` in unrolled order. One copy."""
    B, C = x.shape[0], x.shape[-1]
    D, S = len(size), len(strides)
    digits = _digits(size, strides)
    x = x.reshape(B, *[d for axis in digits for d in axis], C)
    # axis a occupies dims 1 + a*(S+1) + [0 .. S]: units first, then s_S ... s_1
    def dim(axis: int, k: int) -> int:  # k = 0 -> units, k = j -> stride j (1 = finest)
        return 1 + axis * (S + 1) + (0 if k == 0 else S + 1 - k)

    order = [0]
    for j in range(1, S + 1):
        order += [dim(a, j) for a in range(D)]
    order += [dim(a, 0) for a in range(D)]
    return x.permute(*order, x.dim() - 1).reshape(B, -1, C)


def reroll(x, size: Sequence[int], strides: Sequence[Sequence[int]], masked: bool = False):
    """Inverse of :func:`unroll` for a stage that has consumed some strides.

    ``size`` is the stage's token grid and ``strides`` the strides still in the token order
    (outermost first). Returns ``[B, *size, C]``, or with ``masked=True`` (only some mask
    units present) returns
    ``[B, num_units_present, *unit_shape, C]``.
    """
    B, C = x.shape[0], x.shape[-1]
    D, S = len(size), len(strides)
    unit_shape = [math.prod(s[a] for s in strides) for a in range(D)]
    if not masked:
        grid_units = [n // u for n, u in zip(size, unit_shape)]
        x = x.reshape(B, *[s for st in strides for s in st], *grid_units, C)
        # dims: strides j (1..S) axis a at 1 + (j-1)*D + a ; units axis a at 1 + S*D + a
        order = [0]
        for a in range(D):
            order.append(1 + S * D + a)
            order += [1 + (j - 1) * D + a for j in range(S, 0, -1)]
        return x.permute(*order, x.dim() - 1).reshape(B, *size, C)
    x = x.reshape(B, *[s for st in strides for s in st], -1, C)
    order = [0, 1 + S * D]
    for a in range(D):
        order += [1 + (j - 1) * D + a for j in range(S, 0, -1)]
    return x.permute(*order, x.dim() - 1).reshape(B, -1, *unit_shape, C)


def undo_windowing(x, size: Sequence[int], unit_shape: Sequence[int]):
    """``[B, num_units, *unit_shape, C]`` (all units, raster order) -> ``[B, *size, C]``."""
    B, C = x.shape[0], x.shape[-1]
    D = len(size)
    grid_units = [n // u for n, u in zip(size, unit_shape)]
    x = x.reshape(B, *grid_units, *unit_shape, C)
    order = [0] + [d for a in range(D) for d in (1 + a, 1 + D + a)]
    return x.permute(*order, x.dim() - 1).reshape(B, *size, C)
