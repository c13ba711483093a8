"""Explicit random streams: every random choice derives from (seed, purpose, index...).

Nothing in metaleap reads the global RNG. A stream is a ``torch.Generator`` seeded with a
64-bit hash of its key, so the same key gives the same stream in any process, in any order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *index: int | str) -> int:
    """A 63-bit integer that depends only on ``(seed, purpose, *index)``."""
    key = repr((int(seed), str(purpose), *index)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generator(seed: int, purpose: str, *index: int | str, device: str | torch.device = "cpu"
              ) -> torch.Generator:
    """A ``torch.Generator`` for the stream ``(seed, purpose, *index)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, purpose, *index))
    return g


def numpy_rng(seed: int, purpose: str, *index: int | str) -> np.random.Generator:
    """A NumPy ``Generator`` for the stream ``(seed, purpose, *index)``."""
    return np.random.default_rng(derive_seed(seed, purpose, *index))
