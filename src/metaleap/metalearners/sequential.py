"""Baselines that learn their tasks one after another in one network, not an initialization.

The paper's Multi-CV comparison (§4.2; docs/multicv.md) includes two continual-learning methods:
Progressive Nets (:mod:`metaleap.metalearners.progressive`) and HAT
(:mod:`metaleap.metalearners.hat`). Neither hands a new task a θ⁰ to start from: each grows
or gates one network across tasks and trains the new task inside it. So they do not fit
:class:`~metaleap.metalearners.MetaLearner`'s per-task handle over the caller's model; they
share this smaller interface instead, and a protocol trains their tasks with its own loop::

    net = HAT(num_classes=[10, 26, 10], options, channels=32, blocks=4, seed=0)
    for index, data in enumerate(tasks):                # pretraining tasks, then the new one
        with net.task(index, batches_per_epoch=len(data)) as t:
            opt = torch.optim.SGD(t.parameters, lr=0.1)  # any optimizer and schedule
            for x, y in data:
                t.backward(t.loss(t.forward(x), y))      # the method's gradient rules inside
                opt.step()
                opt.zero_grad()
                t.stepped()                              # the method's post-step rules

The network holds every task it will see from the start (its columns, heads, masks), so a
checkpoint between tasks is its ``state_dict`` and :meth:`initialization` is the whole
network: what the new task trains inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class SequentialTask(ABC):
    """One task of a :class:`SequentialLearner` being trained.

    ``parameters`` are what the task's optimizer steps (the rest of the network is frozen or
    protected). :meth:`backward` computes the gradients and applies the method's rules to
    them; :meth:`stepped` follows each optimizer step.
    """

    parameters: list[nn.Parameter]

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """The task's logits for ``x``."""

    @abstractmethod
    def mode(self, train: bool) -> None:
        """Training mode (batch statistics, the method's training schedule) or evaluation."""

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training loss of one batch (cross-entropy, plus the method's penalty)."""
        return F.cross_entropy(logits, y)

    def backward(self, loss: Tensor) -> None:
        """Gradients of ``loss`` for the task's parameters."""
        loss.backward()

    @abstractmethod
    def stepped(self) -> None:
        """After each optimizer step."""


class SequentialLearner(nn.Module, ABC):
    """A network that learns tasks in sequence (Progressive Nets, HAT).

    Args (of every subclass):
        num_classes: each task's number of classes, in the order the tasks are learned
            (pretraining tasks, then the new one).
        options: the method's options dataclass (its registry entry's, :mod:`metaleap.methods`).
        channels, blocks: the width and depth of the convolutional blocks (as
            :class:`~metaleap.models.ConvNet`: 3×3 conv, BatchNorm, ReLU, 2× max-pool).
        seed: every weight is drawn from streams of this seed.
        image_size: input height and width (one channel).
    """

    def __init__(self, num_classes: Sequence[int], blocks: int, image_size: int) -> None:
        super().__init__()
        if not num_classes or min(num_classes) < 1:
            raise ValueError(f"every task needs at least one class, got {list(num_classes)}")
        side = image_size
        for _ in range(blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {blocks} blocks")
        self.num_classes = list(num_classes)
        self.side = side

    @abstractmethod
    def task(self, index: int, batches_per_epoch: int) -> AbstractContextManager[SequentialTask]:
        """Train task ``index`` (after tasks ``0 … index − 1``); ``batches_per_epoch`` sets
        schedules that restart every epoch (HAT's gate annealing)."""

    def initialization(self) -> dict[str, Tensor]:
        """The whole network: what a new task trains inside."""
        return {n: t.detach() for n, t in self.state_dict().items()}

    def extra_state(self) -> dict[str, Any]:
        """Nothing beyond the module's state: a task's optimizer lives only during the task."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`extra_state`)."""


def check_index(learner: SequentialLearner, index: int) -> None:
    """``index`` names one of the learner's tasks."""
    if not 0 <= index < len(learner.num_classes):
        raise IndexError(f"{type(learner).__name__} holds {len(learner.num_classes)} tasks, "
                         f"not {index}")
