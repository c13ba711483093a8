"""Omniglot alphabets from the standard folder layout (docs/experiments.md).

``ROOT/images_background/`` and/or ``ROOT/images_evaluation/``, each holding
``ALPHABET/CHARACTER/*.png`` (105×105, black strokes on white). Both halves are merged into one
list of alphabets sorted by name; alphabets with fewer than ``min_characters`` characters are
dropped (46 of the 50 remain; the authors' code drops them too). Images are resized to
``size``×``size`` as the authors' ``resize.py`` does (``resample="authors"``, see
``RESAMPLE``), inverted to ink-high and cached in memory as ``uint8`` the first time an
alphabet is used (or all at once by ``preload``). Every problem with the tree raises
``DataError`` naming what is wrong and where. ``metaleap data omniglot --download``
(:mod:`metaleap.tasks.omniglot_download`) puts the tree in its default folder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from metaleap import seeding
from metaleap.tasks.base import Task
from metaleap.tasks.errors import DataError

SPLITS = ("images_background", "images_evaluation")
#: How ``load_png`` downsamples: "authors" (the default): Pillow's LANCZOS on the PNG as stored,
#: as the authors' ``resize.py``; Pillow resamples 1-bit images (Omniglot's) by nearest
#: neighbour whatever filter is asked, so the result stays black and white. "lanczos":
#: LANCZOS on the grayscale image (antialiased). "bilinear": antialiased bilinear on the
#: grayscale image (metaleap before the choice existed).
RESAMPLE = ("authors", "lanczos", "bilinear")


def _natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``character2`` before ``character10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _subdirs(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))


def _pngs(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() == ".png"), key=lambda p: _natural_key(p.name))


def load_png(path: Path, size: int, resample: str = "authors") -> np.ndarray:
    """One Omniglot PNG as an ink-high ``uint8`` array (size, size); ``DataError`` if unreadable.

    Downsampled as ``resample`` says (``RESAMPLE``), in grayscale, then inverted.
    """
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {RESAMPLE}, got {resample!r}")
    try:
        with Image.open(path) as im:
            if im.size == (size, size):
                gray = im.convert("L")
            elif resample == "authors":
                gray = im.resize((size, size), Image.Resampling.LANCZOS).convert("L")
            else:
                gray = im.convert("L").resize((size, size), Image.Resampling.LANCZOS
                                              if resample == "lanczos"
                                              else Image.Resampling.BILINEAR)
            return 255 - np.asarray(gray, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"Omniglot: unreadable PNG {path}: {e}") from e


class OmniglotAlphabets:
    """The Omniglot alphabets under ``root`` as a ``TaskSet`` (one task per alphabet).

    ``names``: alphabet folder names, sorted; ``sources[i]``: which half it came from;
    ``dropped``: alphabets with fewer than ``min_characters`` characters, left out;
    ``resample``: how images are downsampled (``RESAMPLE``).
    """

    def __init__(self, root: str | Path, size: int = 28, min_characters: int = 20,
                 resample: str = "authors") -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}, got {resample!r}")
        self.root = Path(root)
        self.size = int(size)
        self.resample = resample
        self.min_characters = int(min_characters)
        if not self.root.exists():
            raise DataError(f"Omniglot: root {self.root} does not exist")
        if not self.root.is_dir():
            raise DataError(f"Omniglot: root {self.root} is not a directory")
        halves = [self.root / s for s in SPLITS if (self.root / s).is_dir()]
        if not halves:
            raise DataError(f"Omniglot: neither {SPLITS[0]}/ nor {SPLITS[1]}/ found in "
                            f"{self.root}")
        found: dict[str, tuple[str, list[tuple[str, list[Path]]]]] = {}
        self.dropped: list[str] = []
        for half in halves:
            for alphabet in _subdirs(half):
                if alphabet.name in found:
                    raise DataError(f"Omniglot: alphabet {alphabet.name!r} appears in both "
                                    f"{found[alphabet.name][0]}/ and {half.name}/")
                characters = _subdirs(alphabet)
                if not characters:
                    raise DataError(f"Omniglot: alphabet folder {alphabet} has no character "
                                    "folders")
                chars: list[tuple[str, list[Path]]] = []
                for character in characters:
                    pngs = _pngs(character)
                    if not pngs:
                        raise DataError(f"Omniglot: character folder {character} has no PNG "
                                        "files")
                    chars.append((character.name, pngs))
                if len(chars) < self.min_characters:
                    self.dropped.append(alphabet.name)
                    continue
                found[alphabet.name] = (half.name, chars)
        if not found:
            detail = (f"; dropped for fewer than {self.min_characters} characters: "
                      f"{', '.join(sorted(self.dropped))}" if self.dropped else "")
            raise DataError(f"Omniglot: no usable alphabet under {self.root}{detail}")
        self._names = sorted(found, key=_natural_key)
        self.dropped.sort(key=_natural_key)
        self.sources = [found[n][0] for n in self._names]
        self._chars = [found[n][1] for n in self._names]
        self._cache: dict[int, list[np.ndarray]] = {}

    @property
    def names(self) -> list[str]:
        """Alphabet names, by task index."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return (f"OmniglotAlphabets(root={str(self.root)!r}, size={self.size}, "
                f"resample={self.resample!r}, alphabets={len(self)}, "
                f"dropped={len(self.dropped)})")

    def identity(self) -> dict[str, object]:
        """The folder, the image size, the resampling and a SHA-256 of every used PNG's relative
        path and size (a run folder made before ``resample`` existed, with bilinear images, is
        thereby told that its data differ)."""
        digest = hashlib.sha256()
        for chars in self._chars:
            for _, pngs in chars:
                for p in pngs:
                    digest.update(f"{p.relative_to(self.root)}\t{p.stat().st_size}\n".encode())
        return {"kind": "omniglot", "path": str(self.root.resolve()), "size": self.size,
                "resample": self.resample, "min_characters": self.min_characters,
                "files_sha256": digest.hexdigest(), "alphabets": self.names}

    def characters(self, index: int) -> list[str]:
        """Character folder names of alphabet ``index``, in label-independent (sorted) order."""
        return [name for name, _ in self._chars[index]]

    def num_drawings(self, index: int) -> list[int]:
        """Number of PNGs of each character of alphabet ``index`` (20 in Omniglot)."""
        return [len(pngs) for _, pngs in self._chars[index]]

    def _decoded(self, index: int, workers: int = 1) -> list[np.ndarray]:
        """Per character a ``uint8`` array (drawings, size, size), decoded once and cached."""
        if index not in self._cache:
            files = [p for _, pngs in self._chars[index] for p in pngs]
            if workers > 1:
                with ThreadPoolExecutor(workers) as pool:
                    flat = list(pool.map(lambda p: load_png(p, self.size, self.resample),
                                         files))
            else:
                flat = [load_png(p, self.size, self.resample) for p in files]
            out, start = [], 0
            for n in self.num_drawings(index):
                out.append(np.stack(flat[start:start + n]))
                start += n
            self._cache[index] = out
        return self._cache[index]

    def preload(self, workers: int = 4) -> None:
        """Decode every alphabet now (Pillow releases the GIL, so threads help)."""
        for i in range(len(self)):
            self._decoded(i, workers)

    def images(self, index: int) -> Tensor:
        """All drawings of alphabet ``index``: float32 (characters, drawings, 1, size, size).

        Needs the same number of drawings for every character (true of Omniglot).
        """
        counts = set(self.num_drawings(index))
        if len(counts) != 1:
            raise DataError(f"Omniglot: alphabet {self._names[index]!r} has characters with "
                            f"different numbers of drawings {sorted(counts)}")
        arr = np.stack(self._decoded(index))[:, :, None]
        return torch.from_numpy(arr).float().div_(255.0)

    def task(self, index: int, seed: int, ways: int = 20, train_per_class: int = 15,
             test_per_class: int = 5) -> Task:
        """``ways`` characters of alphabet ``index``; per character, disjoint train/test images.

        All choices come from ``seeding.generator(seed, "task", name)``: the characters (labels
        follow the drawn order), then for each label a permutation of its drawings, the first
        ``train_per_class`` for training and the next ``test_per_class`` for test.
        """
        name = self._names[index]
        chars = self._chars[index]
        if not 1 <= ways <= len(chars):
            raise ValueError(f"ways must be in 1..{len(chars)} for alphabet {name!r}, got {ways}")
        if train_per_class < 1 or test_per_class < 0:
            raise ValueError("need train_per_class >= 1 and test_per_class >= 0")
        need = train_per_class + test_per_class
        g = seeding.generator(seed, "task", name)
        chosen = torch.randperm(len(chars), generator=g)[:ways].tolist()
        decoded = self._decoded(index)
        train_x: list[np.ndarray] = []
        test_x: list[np.ndarray] = []
        for c in chosen:
            imgs = decoded[c]
            if len(imgs) < need:
                raise DataError(f"Omniglot: character {name}/{chars[c][0]} has {len(imgs)} "
                                f"drawings, fewer than the {need} a task needs")
            perm = torch.randperm(len(imgs), generator=g).numpy()
            train_x.append(imgs[perm[:train_per_class]])
            test_x.append(imgs[perm[train_per_class:need]])
        return Task(
            name=name,
            num_classes=ways,
            train_x=_to_float(train_x),
            train_y=torch.arange(ways).repeat_interleave(train_per_class),
            test_x=_to_float(test_x),
            test_y=torch.arange(ways).repeat_interleave(test_per_class),
        )


def _to_float(parts: Sequence[np.ndarray]) -> Tensor:
    """Concatenate ``uint8`` (n, H, W) arrays into float32 (N, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.concatenate(parts)[:, None]).float().div_(255.0)


__all__ = ["RESAMPLE", "SPLITS", "OmniglotAlphabets", "load_png"]
