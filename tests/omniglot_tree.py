"""Fake Omniglot trees for tests: the standard layout with small generated PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, char: int, drawing: int) -> None:
    """A 105×105 1-bit Omniglot-like PNG: white, with a black bar whose place encodes the ids."""
    pixels = np.ones((105, 105), dtype=bool)
    top = 5 + 3 * (char % 25)
    left = 5 + 4 * drawing
    pixels[top:top + 20, left:left + 16] = False
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_tree(root: Path, tree: dict[str, dict[str, int]], drawings: int = 20) -> Path:
    """``tree``: half (images_background/...) → alphabet → number of characters."""
    for half, alphabets in tree.items():
        for alphabet, n_chars in alphabets.items():
            for c in range(n_chars):
                for d in range(drawings):
                    name = f"{c + 1:04d}_{d + 1:02d}.png"
                    png(root / half / alphabet / f"character{c + 1:02d}" / name, c, d)
    return root
