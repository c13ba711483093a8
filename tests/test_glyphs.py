"""Glyph alphabets, the offline Omniglot stand-in: content, determinism, cache, tasks."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save

from metaleap.cli import main
from metaleap.tasks import DataError, glyphs, glyphs_render, glyphs_render_v2, open_taskset
from metaleap.tasks.base import Task
from metaleap.tasks.glyphs import (
    GlyphAlphabets,
    available_alphabets,
    build_glyphs,
    list_alphabets,
    preview_sheet,
    separation_stats,
    stats_table,
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


# --- data version 2 and the version-1 freeze --------------------------------------------------

@pytest.fixture(scope="module")
def small_v2(tmp_path_factory: pytest.TempPathFactory) -> GlyphAlphabets:
    """Version 2 of the same two alphabets."""
    return GlyphAlphabets(cache_dir=tmp_path_factory.mktemp("glyphs2"), workers=1, version=2,
                          **SMALL)


# Version 1 as committed results were made with it: the hash of its drawing code, and where
# the environment is the reference one (the software its key hashes), its cache key. Its bytes
# are not pinned: version 1 draws through MKL's matrix products, whose rounding follows the
# CPU's code path (docs/experiments.md, "Data identity by content"), so no digest of them holds
# on every x86-64 CPU; a run's own data are checked by their recorded digest instead.
V1_CODE = "b75b4e4517df5227"
V1_REFERENCE = {
    "software": {"fonttools": "4.68.0", "pillow": "13.0.0", "freetype": "2.14.3",
                 "numpy": "2.4.6", "torch": "2.13.0", "unicode": "14.0.0"},
    "font_files": "4e94f53c880d22c5",  # SHA-256 of the JSON list of (file name, SHA-256)
    "key": "de70039c1620b713",
}


def test_version_1_is_unchanged(small: GlyphAlphabets) -> None:
    options, _ = glyphs._options(28, 0, "matplotlib", ["Greek", "Hebrew"], None)
    assert options["code"] == V1_CODE, "glyphs_render.py is version 1's frozen drawing code"
    assert options["version"] == 1 and set(options["software"]) == set(V1_REFERENCE["software"])
    assert small.path.name.startswith("glyphs-v1-") and "version" not in small.identity()
    fonts = hashlib.sha256(json.dumps(options["font_files"]).encode()).hexdigest()[:16]
    if options["software"] != V1_REFERENCE["software"] or fonts != V1_REFERENCE["font_files"]:
        pytest.skip("not the reference software: version 1's key differs here")
    assert small.path.name == f"glyphs-v1-{V1_REFERENCE['key']}.safetensors"


def test_v2_is_deterministic_and_keyed_apart(small: GlyphAlphabets, small_v2: GlyphAlphabets,
                                             tmp_path: Path) -> None:
    again = build_glyphs(cache_dir=tmp_path, workers=2, version=2, **SMALL)
    assert again.name == small_v2.path.name and again.name.startswith("glyphs-v2-")
    assert again.read_bytes() == small_v2.path.read_bytes()
    assert small_v2.names == small.names  # the same alphabets and letters as version 1
    assert [small_v2.characters(i) for i in range(2)] == [small.characters(i) for i in range(2)]
    m = small_v2.manifest
    assert m["version"] == 2 and "scikit-image" in m["software"]
    assert small_v2.identity()["version"] == 2
    assert small_v2.identity()["key"] != small.identity()["key"]
    for i in range(len(small_v2)):  # one skeleton font, an outline one, among the letters'
        entry = m["alphabet_list"][i]
        assert len(small_v2.fonts(i)) == 1 and entry["fonts"][0] in entry["letter_fonts"]


def test_v2_images_and_tasks(small_v2: GlyphAlphabets) -> None:
    for i in range(len(small_v2)):
        images = small_v2.images(i)
        assert images.dtype == torch.uint8 and images.shape[1:] == (20, 1, 28, 28)
        flat = images.flatten(0, 2)
        assert (flat.amax((1, 2)) == 255).all()
        assert flat[:, :2].max() == 0 and flat[:, -2:].max() == 0  # the margin stays blank
        assert flat[:, :, :2].max() == 0 and flat[:, :, -2:].max() == 0
    task = small_v2.task(0, seed=3)
    assert task.train_x.shape == (300, 1, 28, 28) and task.test_x.shape == (100, 1, 28, 28)


def test_v2_drawers_of_a_character_differ(small_v2: GlyphAlphabets) -> None:
    for i in range(len(small_v2)):
        x = small_v2.images(i).flatten(2).float() / 255  # (characters, drawers, pixels)
        for drawn in x:
            d = torch.cdist(drawn, drawn)
            off = d[~torch.eye(20, dtype=torch.bool)]
            assert off.min() > 1.0 and off.mean() > 4.0  # no two drawers nearly alike


def test_v2_style_is_per_alphabet_and_drawer() -> None:
    greek, hebrew = (glyphs_render_v2.drawer_styles(0, a) for a in ("Greek", "Hebrew"))
    assert glyphs_render_v2.drawer_styles(0, "Greek")[3]["pen"] == greek[3]["pen"]
    for g, h in zip(greek, hebrew, strict=True):  # no drawer's style recurs in another alphabet
        assert all(g[k] != h[k] for k in glyphs_render_v2.STYLE)
        assert not (g["habit_field"] == h["habit_field"]).any()
    assert len({s["pen"] for s in greek}) == 20  # 20 different drawers
    for k, (low, high) in glyphs_render_v2.STYLE.items():
        assert all(low <= s[k] <= high for s in greek + hebrew)
    assert glyphs_render_v2.drawer_styles(1, "Greek")[0]["pen"] != greek[0]["pen"]


def test_v2_skeleton_font_prefers_outline_regular_sans() -> None:
    def font(name: str, source: str = "fonts-noto-core", weight: int = 400, italic=False):
        return glyphs_render.FontInfo("x", 0, name, name, weight, italic, "", source)

    fonts = [font("Unifont", "fonts-unifont"), font("Noto Sans Foo Bold", weight=700),
             font("Noto Serif Foo Regular"), font("Noto Sans Foo Regular")]
    assert glyphs_render_v2.skeleton_font(fonts) == 3
    assert glyphs_render_v2.skeleton_font(fonts[:3]) == 2
    assert glyphs_render_v2.skeleton_font(fonts[:1]) == 0  # a bitmap font only as a last resort
    pair = [font("DejaVu Sans", "fonts-dejavu-core/extra"), fonts[3]]
    assert glyphs_render_v2.skeleton_font(pair) == 0
    assert glyphs_render_v2.skeleton_font(pair, "Foo") == 1  # a design made for the script


def test_separation_stats_against_hand_values() -> None:
    # 2 characters x 2 drawers, 1x2 images: character 0 = [1, 0] and [1, 1] (distance 1),
    # character 1 = [0, 0] and [0, 3] (distance 3); between: |[1,0]-[0,0]| = 1,
    # |[1,0]-[0,3]| = sqrt(10), |[1,1]-[0,0]| = sqrt(2), |[1,1]-[0,3]| = sqrt(5).
    images = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 3.0]]])
    got = separation_stats(images.reshape(2, 2, 1, 1, 2), ways=20)
    between = (1 + 10 ** 0.5 + 2 ** 0.5 + 5 ** 0.5) / 4
    assert got["within"] == pytest.approx(2.0) and got["between"] == pytest.approx(between)
    assert got["ratio"] == pytest.approx(2.0 / between)
    # leave one drawer out: [1,0] -> nearest of drawer 1: [1,1] (1) vs [0,3] (sqrt 10): right;
    # [1,1] -> [1,0] (1) vs [0,0] (sqrt 2): right; [0,0] -> [1,1] (sqrt 2) vs [0,3] (3): wrong;
    # [0,3] -> [1,0] (sqrt 10) vs [0,0] (3): right.
    assert got["nn_accuracy"] == pytest.approx(0.75)
    # uint8 images are scaled to [0, 1]; ways picks characters spread over the alphabet
    as_bytes = (images * 85).to(torch.uint8).reshape(2, 2, 1, 1, 2)
    assert separation_stats(as_bytes)["within"] == pytest.approx(2.0 / 3)
    four = torch.arange(4.0).reshape(4, 1, 1) * torch.ones(4, 2, 3)
    assert separation_stats(four, ways=2)["between"] == pytest.approx(2 * 3 ** 0.5)
    table = stats_table({1: [got, got], 2: [got]})
    assert "0.750 ± 0.000 [0.750, 0.750]" in table and table.count("\n") == 3


def test_unknown_version_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "glyphs", "--version", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "metaleap: error: unknown glyph data version 3: use 1 or 2"
    for spec in ("glyphs:v3", "glyphs:2", "glyphs:"):
        with pytest.raises(DataError, match="glyph data version"):
            open_taskset(spec)
    with pytest.raises(DataError, match="version"):
        build_glyphs(version=0)


def test_data_specs_select_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    monkeypatch.setattr(glyphs, "GlyphAlphabets", lambda **kw: opened.append(kw) or kw)
    for spec in ("glyphs", "glyphs:v1", "glyphs:v2"):
        open_taskset(spec, size=16)
    assert [(kw["size"], kw["version"]) for kw in opened] == [(16, 1), (16, 1), (16, 2)]


def test_cli_stats_and_preview_default_to_version_2(tmp_path: Path, monkeypatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    built = []
    real = glyphs.GlyphAlphabets

    def small_set(**kw):
        built.append(kw["version"])
        return real(**{**kw, "fonts": "matplotlib", "alphabets": ["Hebrew"], "workers": 1,
                       "progress": False, "cache_dir": tmp_path})

    monkeypatch.setattr(glyphs, "GlyphAlphabets", small_set)
    assert main(["data", "glyphs", "--stats"]) == 0
    out = capsys.readouterr().out
    assert built == [1, 2] and re.search(r"^1 +1 ", out, re.M) and re.search(r"^2 +1 ", out, re.M)
    sheet = tmp_path / "sheet.png"
    assert main(["data", "glyphs", "--preview", str(sheet)]) == 0
    assert built[-1] == 2 and "data version 2" in capsys.readouterr().out
    assert main(["data", "glyphs", "--version", "1", "--list"]) == 0
    assert built[-1] == 1 and "data version 1" in capsys.readouterr().out


# --- a damaged cache entry is reported in one line and rebuilt -----------------------------

def _images_span(data: bytes) -> tuple[int, int]:
    """Where the ``images`` tensor's bytes lie in a safetensors file."""
    n = int.from_bytes(data[:8], "little")
    lo, hi = json.loads(data[8:8 + n])["images"]["data_offsets"]
    return 8 + n + lo, 8 + n + hi


def _truncate(data: bytes, path: Path) -> bytes:
    return data[:1000]


def _flip_a_pixel(data: bytes, path: Path | None = None) -> bytes:
    lo, hi = _images_span(data)
    out = bytearray(data)
    out[(lo + hi) // 2] ^= 0xFF
    return bytes(out)


def _drop_the_labels(data: bytes, path: Path) -> bytes:
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return save({"images": tensors["images"]}, metadata=metadata)


@pytest.mark.parametrize("damage, why", [
    (_truncate, r"SafetensorError: .*"),
    (_flip_a_pixel, r"its tensors' SHA-256 is [0-9a-f]{12}…, its manifest records "
                    r"[0-9a-f]{12}…"),
    (_drop_the_labels, r"it holds the tensors \['images'\], not images and labels"),
])
def test_a_damaged_cache_entry_is_reported_in_one_line_and_rebuilt(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage,
        why: str) -> None:
    path = tmp_path / small.path.name
    original = small.path.read_bytes()
    path.write_bytes(original)
    path.write_bytes(damage(original, path))
    rebuilt = GlyphAlphabets(cache_dir=tmp_path, workers=1, **SMALL)
    err = capsys.readouterr().err
    assert re.fullmatch(rf"metaleap: warning: glyphs: cache file {re.escape(str(path))} is "
                        rf"damaged \({why}\); rebuilding it\n", err), err
    assert path.read_bytes() == original  # the same bytes as the first build
    assert torch.equal(rebuilt.images(1), small.images(1))
    GlyphAlphabets(cache_dir=tmp_path, workers=1, **SMALL)  # sound now: loaded, no warning
    assert capsys.readouterr().err == ""


def test_an_entry_under_another_key_is_rebuilt(small: GlyphAlphabets, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A file renamed to another entry's name (another alphabet set's key) is not loaded."""
    other = build_glyphs(cache_dir=tmp_path, workers=1, fonts="matplotlib", progress=False,
                         alphabets=["Hebrew"])
    copy = other.read_bytes()
    other.write_bytes(small.path.read_bytes())
    build_glyphs(cache_dir=tmp_path, workers=1, fonts="matplotlib", progress=False,
                 alphabets=["Hebrew"])
    assert "its manifest names the key" in capsys.readouterr().err
    assert other.read_bytes() == copy


def test_a_cache_file_without_the_digest_is_accepted_with_the_same_identity(
        small: GlyphAlphabets, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Files written before the content digest existed load without a warning, with the same
    identity and content digest as a file that has it."""
    assert small.manifest[glyphs.CONTENT_KEY] == small.content_digest()["sha256"]
    old_manifest = {k: v for k, v in small.manifest.items() if k != glyphs.CONTENT_KEY}
    path = tmp_path / small.path.name
    path.write_bytes(save(load_file(str(small.path)), metadata={
        "manifest": json.dumps(old_manifest, sort_keys=True, ensure_ascii=False)}))
    old = GlyphAlphabets(cache_dir=tmp_path, workers=1, **SMALL)
    assert capsys.readouterr().err == "" and path.read_bytes() != small.path.read_bytes()
    assert old.identity() == small.identity()
    assert old.content_digest() == small.content_digest()
    # the identity is the one computed before the digest existed
    fonts = [{**f, "path": Path(f["path"]).name} for f in old_manifest["font_list"]]
    text = json.dumps({**old_manifest, "font_list": fonts}, sort_keys=True, ensure_ascii=False)
    assert small.identity()["manifest_sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_content_digest_names_the_bytes_and_what_drew_them(small: GlyphAlphabets) -> None:
    digest = small.content_digest()
    tensors = load_file(str(small.path))
    assert digest["sha256"] == glyphs.tensors_sha256(tensors)
    assert list(digest["alphabets"]) == small.names
    for i, name in enumerate(small.names):
        expected = hashlib.sha256(small.images(i).numpy().tobytes()).hexdigest()
        assert digest["alphabets"][name] == expected
    assert digest["software"] == small.manifest["software"]
    assert "matplotlib/DejaVuSans.ttf" in digest["fonts"]
    assert all(re.fullmatch("[0-9a-f]{16}", v) for v in digest["fonts"].values())


def test_read_glyph_file_refuses_a_damaged_file_in_one_line(small: GlyphAlphabets,
                                                           tmp_path: Path) -> None:
    manifest, images, digest = glyphs.read_glyph_file(small.path)
    assert manifest == small.manifest and torch.equal(images, small.all_images())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_flip_a_pixel(small.path.read_bytes()))
    with pytest.raises(DataError, match=rf"^glyphs: {re.escape(str(bad))} is not a usable glyph "
                                        r"file \(its tensors' SHA-256 is .*\)$"):
        glyphs.read_glyph_file(bad)
    with pytest.raises(DataError, match="no file"):
        glyphs.read_glyph_file(tmp_path / "absent.safetensors")
