"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omniglot_tree import make_tree

import metaleap.leap


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One intra-op thread per test process: the tests' tensors are small, where extra threads
    only add synchronisation, and ``pytest -n 2`` runs two processes on two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["python", "tensor"])
def step_scalars(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Leap's per-step scalars as Python numbers (its CPU path) or as 0-d tensors (its path on
    an accelerator, forced here on the CPU): a test that takes this fixture runs both."""
    if request.param == "tensor":
        monkeypatch.setattr(metaleap.leap, "_python_scalars", lambda like: False)
    return request.param


@pytest.fixture(scope="module")
def omniglot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-alphabet Omniglot tree (3 per half, 20 characters of 20 drawings each)."""
    root = tmp_path_factory.mktemp("omniglot")
    make_tree(root, {"images_background": {f"A{i}": 20 for i in range(3)},
                     "images_evaluation": {f"B{i}": 20 for i in range(3)}})
    return root
