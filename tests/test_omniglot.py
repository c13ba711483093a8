"""Tests for the Omniglot loader on small fake trees made here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omniglot_tree import make_tree

from metaleap.tasks.errors import DataError
from metaleap.tasks.omniglot import OmniglotAlphabets

# half -> alphabet -> number of characters (Tiny has too few and must be dropped)
TREE = {
    "images_background": {"Alpha": 20, "Tiny": 5},
    "images_evaluation": {"Beta": 25, "Gamma": 21},
}
DRAWINGS = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("omniglot"), TREE)


@pytest.fixture(scope="module")
def omni(root: Path) -> OmniglotAlphabets:
    return OmniglotAlphabets(root)


def test_merges_halves_and_drops_small_alphabets(omni: OmniglotAlphabets) -> None:
    assert omni.names == ["Alpha", "Beta", "Gamma"]
    assert len(omni) == 3
    assert omni.sources == ["images_background", "images_evaluation", "images_evaluation"]
    assert omni.dropped == ["Tiny"]
    assert [len(omni.characters(i)) for i in range(3)] == [20, 25, 21]
    assert omni.characters(1)[:2] == ["character01", "character02"]


def test_either_half_alone(tmp_path: Path) -> None:
    make_tree(tmp_path, {"images_evaluation": {"Beta": 20}}, drawings=2)
    assert OmniglotAlphabets(tmp_path).names == ["Beta"]


def test_images_are_resized_and_ink_high(omni: OmniglotAlphabets) -> None:
    x = omni.images(0)
    assert x.shape == (20, DRAWINGS, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    # Background (white in the PNG) becomes 0, the black bar becomes ink near 1.
    assert x[:, :, :, -3:, :].max() == 0  # below every bar: white paper
    assert (x == 0).float().mean() > 0.7
    assert x.amax(dim=(2, 3, 4)).min() > 0.9
    # The bar of character 0 sits near the top, of character 19 lower down.
    rows = torch.arange(28, dtype=torch.float32)
    def centre(img: torch.Tensor) -> float:
        return float((img.sum(-1) * rows).sum() / img.sum())
    assert centre(x[0, 0, 0]) < centre(x[19, 0, 0])


def test_size_argument(root: Path) -> None:
    omni = OmniglotAlphabets(root, size=14)
    task = omni.task(0, seed=0, ways=5, train_per_class=2, test_per_class=1)
    assert task.train_x.shape == (10, 1, 14, 14)


def _identify(omni: OmniglotAlphabets, index: int, x: torch.Tensor) -> list[tuple[int, int]]:
    """(character, drawing) of each image in ``x``, by exact match with ``omni.images``."""
    all_imgs = omni.images(index).flatten(2)  # (chars, drawings, pixels)
    match = (all_imgs[:, :, None] == x.flatten(1)[None, None]).all(-1)  # (chars, drawings, n)
    out = []
    for i in range(x.shape[0]):
        hits = match[:, :, i].nonzero().tolist()
        assert len(hits) == 1
        out.append(tuple(hits[0]))
    return out


def test_task_splits(omni: OmniglotAlphabets) -> None:
    task = omni.task(1, seed=3)
    assert task.name == "Beta" and task.num_classes == 20
    assert task.train_x.shape == (300, 1, 28, 28) and task.test_x.shape == (100, 1, 28, 28)
    assert task.train_y.dtype == torch.int64 and task.val_x is None
    assert torch.equal(torch.bincount(task.train_y), torch.full((20,), 15))
    assert torch.equal(torch.bincount(task.test_y), torch.full((20,), 5))
    train_ids = _identify(omni, 1, task.train_x)
    test_ids = _identify(omni, 1, task.test_x)
    chars = set()
    for c in range(20):
        tr = {ids for ids, y in zip(train_ids, task.train_y.tolist(), strict=True) if y == c}
        te = {ids for ids, y in zip(test_ids, task.test_y.tolist(), strict=True) if y == c}
        assert len({ch for ch, _ in tr | te}) == 1  # one character per label
        assert len(tr) == 15 and len(te) == 5 and not tr & te  # 20 distinct drawings
        chars |= {ch for ch, _ in tr}
    assert len(chars) == 20  # 20 different characters


def test_task_chooses_characters_when_alphabet_is_larger(omni: OmniglotAlphabets) -> None:
    chosen = set()
    for seed in range(4):
        task = omni.task(1, seed=seed, ways=20, train_per_class=1, test_per_class=0)
        chosen.add(frozenset(ch for ch, _ in _identify(omni, 1, task.train_x)))
    assert len(chosen) > 1 and all(len(c) == 20 for c in chosen)


def test_task_determinism(omni: OmniglotAlphabets, root: Path) -> None:
    a, b = omni.task(2, seed=7), OmniglotAlphabets(root).task(2, seed=7)
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    c = omni.task(2, seed=8)
    assert not torch.equal(a.train_x, c.train_x)


def test_task_argument_errors(omni: OmniglotAlphabets) -> None:
    with pytest.raises(ValueError):
        omni.task(0, seed=0, ways=21)
    with pytest.raises(DataError, match="fewer than the 21"):
        omni.task(0, seed=0, ways=2, train_per_class=16, test_per_class=5)


def test_error_root_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        OmniglotAlphabets(tmp_path / "nope")


def test_error_root_is_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        OmniglotAlphabets(tmp_path / "f")


def test_error_no_halves(tmp_path: Path) -> None:
    (tmp_path / "images_train").mkdir()
    with pytest.raises(DataError, match="neither images_background/ nor images_evaluation/"):
        OmniglotAlphabets(tmp_path)


def test_error_alphabet_without_characters(tmp_path: Path) -> None:
    (tmp_path / "images_background" / "Empty").mkdir(parents=True)
    (tmp_path / "images_background" / "Empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="Empty has no character folders"):
        OmniglotAlphabets(tmp_path)


def test_error_character_without_pngs(tmp_path: Path) -> None:
    make_tree(tmp_path, {"images_background": {"A": 20}}, drawings=1)
    bad = tmp_path / "images_background" / "A" / "character21"
    bad.mkdir()
    (bad / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="character21 has no PNG"):
        OmniglotAlphabets(tmp_path)


def test_error_unreadable_png(tmp_path: Path) -> None:
    make_tree(tmp_path, {"images_background": {"A": 20}}, drawings=2)
    broken = tmp_path / "images_background" / "A" / "character03" / "0003_02.png"
    broken.write_bytes(b"not a png")
    omni = OmniglotAlphabets(tmp_path)
    with pytest.raises(DataError, match="unreadable PNG .*0003_02.png"):
        omni.task(0, seed=0, train_per_class=1, test_per_class=1)


def test_error_no_usable_alphabet(tmp_path: Path) -> None:
    make_tree(tmp_path, {"images_background": {"Small": 19}}, drawings=1)
    with pytest.raises(DataError, match="no usable alphabet.*Small"):
        OmniglotAlphabets(tmp_path)


def test_error_duplicate_alphabet(tmp_path: Path) -> None:
    make_tree(tmp_path, {"images_background": {"A": 20}, "images_evaluation": {"A": 20}},
               drawings=1)
    with pytest.raises(DataError, match="appears in both"):
        OmniglotAlphabets(tmp_path)


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_preload_with_threads(root: Path) -> None:
    a, b = OmniglotAlphabets(root), OmniglotAlphabets(root)
    a.preload(workers=2)
    assert torch.equal(a.images(0), b.images(0))
