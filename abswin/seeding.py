"""The one way abswin derives a seed from several numbers (a base seed, an epoch, a sample, a step,
a rank): :func:`derive_seed`, through ``numpy.random.SeedSequence``, whose hashing mixes every part
into every bit, so that nearby inputs (step 7 and step 8, rank 0 and rank 1) give unrelated streams.
Python's ``hash`` of a tuple is not meant for that, and ``seed + epoch`` makes (seed 1, epoch 0) and
(seed 0, epoch 1) the same stream."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*parts: int) -> int:
    """A seed in ``[0, 2**63)`` (valid for ``torch.manual_seed`` and ``numpy.random.default_rng``)
    that depends on every part and on their order. Parts are integers; a negative one is taken
    modulo ``2**64``."""
    if not parts:
        raise ValueError("derive_seed needs at least one part")
    entropy = [int(p) % 2**64 for p in parts]
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(high) << 31 | int(low) >> 1
