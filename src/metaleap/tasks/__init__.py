"""Task sources: glyph alphabets (default), Omniglot folders, Multi-CV datasets."""

from __future__ import annotations

from metaleap.tasks.base import Task, TaskSet, batches
from metaleap.tasks.errors import DataError

__all__ = ["DataError", "Task", "TaskSet", "batches", "open_taskset"]


def open_taskset(spec: str, size: int = 28, ways: int = 20) -> TaskSet:
    """The alphabets named by ``spec``: ``"glyphs"`` or ``"omniglot:PATH"``.

    Alphabets with fewer than ``max(ways, 20)`` characters are left out (SPEC §2.1).
    """
    if spec == "glyphs":
        from metaleap.tasks.glyphs import GlyphAlphabets

        return GlyphAlphabets(size=size)
    kind, sep, path = spec.partition(":")
    if kind == "omniglot" and sep and path:
        from metaleap.tasks.omniglot import OmniglotAlphabets

        return OmniglotAlphabets(path, size=size, min_characters=max(ways, 20))
    raise DataError(f"unknown data {spec!r}: use 'glyphs' or 'omniglot:PATH'")
