"""The task API: what every task source produces and every protocol consumes.

A task is a classification problem with a training split, a held-out test split (and, for
Multi-CV, a validation split) and its number of classes. Images are ``float32`` tensors of
shape ``(N, 1, H, W)`` in ``[0, 1]`` with ink high and background 0; labels are ``int64`` in
``[0, num_classes)``. A task set gives tasks by index; a task depends only on
``(seed, index)``, never on the order in which tasks are drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Task:
    """One classification task (20 classes, 15 train / 5 test images per class:
    docs/experiments.md)."""

    name: str
    num_classes: int
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor | None = None
    val_y: Tensor | None = None

    def to(self, device: torch.device | str) -> Task:
        """This task with every tensor on ``device`` (itself if they are there already)."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **moved)


class TaskSet(Protocol):
    """A finite, indexable family of tasks (alphabets, datasets)."""

    @property
    def names(self) -> list[str]:
        """The name of each task, by index."""
        ...

    def __len__(self) -> int: ...

    def task(self, index: int, seed: int) -> Task:
        """Task ``index``; every random choice flows from ``(seed, index)``."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies the data (kind, version or hash, task names): JSON-able."""
        ...


Augment = Callable[[Tensor, torch.Generator], Tensor]


def batches(task: Task, batch_size: int, steps: int, generator: torch.Generator,
            augment: Augment | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """``steps`` training batches: shuffled epochs over the training split, augmented per batch.

    The batch order and the augmentation both draw from ``generator`` alone (a CPU generator:
    the same data on every device). Batches are on the task's device; the indices go there
    without waiting for the device.
    """
    n = task.train_y.numel()
    device = task.train_x.device
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        idx, order = order[:batch_size], order[batch_size:]
        if device.type != "cpu":
            idx = idx.to(device, non_blocking=True)
        x = task.train_x[idx]
        if augment is not None:
            x = augment(x, generator)
        yield x, task.train_y[idx]
