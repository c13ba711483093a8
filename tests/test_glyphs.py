"""Glyph alphabets, the offline Omniglot stand-in: content, determinism, cache, tasks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from metaleap.tasks import glyphs_render
from metaleap.tasks.base import Task
from metaleap.tasks.glyphs import (
    GlyphAlphabets,
    available_alphabets,
    build_glyphs,
    list_alphabets,
    preview_sheet,
)

DEBIAN_FONTS = all(Path(d).is_dir() for d in glyphs_render.DEBIAN_FONT_DIRS.values())
SMALL = {"alphabets": ["Greek", "Hebrew"], "fonts": "matplotlib", "progress": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> GlyphAlphabets:
    """Two alphabets drawn with matplotlib's fonts: a build of a few seconds."""
    return GlyphAlphabets(cache_dir=tmp_path_factory.mktemp("glyphs"), workers=1, **SMALL)


def test_images_shape_range_and_centring(small: GlyphAlphabets) -> None:
    assert small.names == ["Greek", "Hebrew"] and len(small) == 2
    for i in range(len(small)):
        chars = small.characters(i)
        assert 20 <= len(chars) <= 55 and len(set(chars)) == len(chars)
        images = small.images(i)
        assert images.dtype == torch.uint8 and images.shape == (len(chars), 20, 1, 28, 28)
        flat = images.flatten(0, 2)
        assert (flat.amax((1, 2)) == 255).all() and (flat.amin((1, 2)) == 0).all()
        assert flat[:, :2].max() == 0 and flat[:, -2:].max() == 0  # the margin stays blank
        assert flat[:, :, :2].max() == 0 and flat[:, :, -2:].max() == 0
        assert len({img.numpy().tobytes() for img in flat}) == len(flat)  # no two alike


def test_task_splits_labels_and_values(small: GlyphAlphabets) -> None:
    task = small.task(0, seed=3)
    assert isinstance(task, Task) and task.name == "Greek" and task.num_classes == 20
    assert task.train_x.shape == (300, 1, 28, 28) and task.test_x.shape == (100, 1, 28, 28)
    for x in (task.train_x, task.test_x):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert task.train_y.dtype == torch.int64
    assert torch.equal(torch.bincount(task.train_y), torch.full((20,), 15))
    assert torch.equal(torch.bincount(task.test_y), torch.full((20,), 5))
    for label in range(20):  # no drawer both trains and tests a character
        train = {x.numpy().tobytes() for x in task.train_x[task.train_y == label]}
        assert not train & {x.numpy().tobytes() for x in task.test_x[task.test_y == label]}


def test_tasks_depend_only_on_seed_and_index(small: GlyphAlphabets) -> None:
    a, b = small.task(1, seed=7), small.task(1, seed=7)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, small.task(1, seed=8).train_x)
    assert not torch.equal(a.train_x, small.task(0, seed=7).train_x)


def test_too_small_alphabet_raises(small: GlyphAlphabets) -> None:
    hebrew = small.names.index("Hebrew")
    with pytest.raises(ValueError, match="fewer than ways"):
        small.task(hebrew, seed=0, ways=len(small.characters(hebrew)) + 1)
    with pytest.raises(ValueError, match="drawers"):
        small.task(hebrew, seed=0, train_per_class=16, test_per_class=5)


def test_same_inputs_give_a_byte_identical_file(small: GlyphAlphabets, tmp_path: Path) -> None:
    again = build_glyphs(cache_dir=tmp_path, workers=2, **SMALL)  # other processes, same bytes
    assert again.name == small.path.name
    assert again.read_bytes() == small.path.read_bytes()


def test_cache_reused_when_unchanged_rebuilt_when_changed(tmp_path: Path) -> None:
    args = {"cache_dir": tmp_path, "workers": 1, "fonts": "matplotlib", "progress": False,
            "alphabets": ["Hebrew"]}
    first = build_glyphs(**args)
    stamp = first.stat().st_mtime_ns
    assert build_glyphs(**args) == first and first.stat().st_mtime_ns == stamp
    reseeded = build_glyphs(seed=1, **args)
    larger = GlyphAlphabets(size=32, **args)
    assert len({first, reseeded, larger.path}) == 3
    assert larger.images(0).shape[-2:] == (32, 32)
    assert not torch.equal(GlyphAlphabets(**args).images(0),
                           GlyphAlphabets(seed=1, **args).images(0))


def test_manifest_traces_the_inputs(small: GlyphAlphabets) -> None:
    m = small.manifest
    assert (m["seed"], m["size"], m["version"], m["fonts"]) == (0, 28, 1, "matplotlib")
    assert [a["name"] for a in m["alphabet_list"]] == small.names
    assert all(re.fullmatch("[0-9a-f]{64}", f["sha256"]) for f in m["font_list"])
    for i, alphabet in enumerate(m["alphabet_list"]):
        assert list(alphabet["characters"]) == small.characters(i)
        assert small.fonts(i) == [m["font_list"][k]["name"] for k in alphabet["fonts"]]
    assert small.path.with_suffix(".json").exists()


def test_matplotlib_fonts_alone_give_ten_alphabets() -> None:
    alphabets = available_alphabets("matplotlib")
    assert len(alphabets) >= 10
    assert {"Latin", "Greek", "Cyrillic", "Hebrew"} <= alphabets.keys()
    assert all(20 <= len(chars) <= 55 for chars in alphabets.values())


@pytest.mark.skipif(not DEBIAN_FONTS, reason="Debian fonts (fonts-noto-core, fonts-dejavu-*, "
                    "fonts-freefont-ttf, fonts-unifont) are not installed")
def test_debian_fonts_give_forty_alphabets() -> None:
    alphabets = available_alphabets("all", workers=2)
    assert len(alphabets) >= 40
    assert all(20 <= len(chars) <= 55 for chars in alphabets.values())


def test_missing_debian_fonts_warn_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(glyphs_render, "DEBIAN_FONT_DIRS", {"fonts-nothing": str(tmp_path / "x")})
    monkeypatch.setattr(glyphs_render, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = glyphs_render.font_files("all")
        assert files == glyphs_render.font_files("matplotlib")
        glyphs_render.font_files("all")
    assert len(caught) == 1 and "fonts-nothing" in str(caught[0].message)
    with pytest.raises(ValueError, match="fonts must be"):
        glyphs_render.font_files("system")


def test_preview_sheet_and_listing(small: GlyphAlphabets, tmp_path: Path) -> None:
    path = preview_sheet(small, tmp_path / "sheet.png", drawers=10, chars=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.height >= 4 * 28
    table = list_alphabets(small)
    assert "Greek" in table and "Hebrew" in table and "DejaVu Sans" in table


def test_cache_key_does_not_depend_on_where_the_fonts_are_installed(tmp_path, monkeypatch):
    """The same font files in another folder (another venv) are the same data: same key."""
    import shutil

    from metaleap.tasks import glyphs, glyphs_render

    font, source = glyphs_render.font_files("matplotlib")[0]
    keys = []
    for place in ("a", "b"):
        (tmp_path / place).mkdir()
        copy = tmp_path / place / font.name
        shutil.copy(font, copy)
        monkeypatch.setattr(glyphs_render, "font_files", lambda fonts, copy=copy: [(copy, source)])
        keys.append(glyphs._key(glyphs._options(28, 0, "matplotlib", None, 1)[0]))
    assert keys[0] == keys[1]
    (tmp_path / "b" / font.name).write_bytes(b"another font")  # other content: another key
    assert glyphs._key(glyphs._options(28, 0, "matplotlib", None, 1)[0]) != keys[0]
