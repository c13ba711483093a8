"""Task sources: glyph alphabets (default), Omniglot folders, Multi-CV datasets."""

from __future__ import annotations

from metaleap.tasks.base import Task, TaskSet, batches
from metaleap.tasks.errors import DataError

__all__ = ["DataError", "Task", "TaskSet", "batches", "open_taskset"]


def open_taskset(spec: str, size: int = 28, ways: int = 20) -> TaskSet:
    """The alphabets named by ``spec``: ``"glyphs"`` (data version 1), ``"glyphs:v1"``,
    ``"glyphs:v2"``, ``"omniglot:PATH"`` or ``"omniglot"`` (the folder that ``metaleap data
    omniglot --download`` fills, :func:`metaleap.tasks.omniglot_download.default_folder`).

    Alphabets with fewer than ``max(ways, 20)`` characters are left out (docs/experiments.md).
    """
    kind, sep, path = spec.partition(":")
    if kind == "glyphs":
        if sep and not (path[:1] == "v" and path[1:].isdigit()):
            raise DataError(f"unknown data {spec!r}: glyph data versions are 'glyphs:v1' and "
                            "'glyphs:v2'")
        from metaleap.tasks.glyphs import GlyphAlphabets, check_version

        return GlyphAlphabets(size=size, version=check_version(int(path[1:]) if sep else 1))
    if kind == "omniglot":
        from metaleap.tasks.omniglot import OmniglotAlphabets
        from metaleap.tasks.omniglot_download import require_downloaded

        root = path if path else require_downloaded()
        return OmniglotAlphabets(root, size=size, min_characters=max(ways, 20))
    raise DataError(f"unknown data {spec!r}: use 'glyphs', 'glyphs:v2', 'omniglot' or "
                    "'omniglot:PATH'")
