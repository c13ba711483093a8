"""How every Multi-CV task trains (docs/multicv.md): SGD with cosine annealing and early
stopping, one step at a time, so tasks can be interleaved."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap.metalearners import TaskHandle
from metaleap.protocols.evaluation import error_rate
from metaleap.protocols.multicv.config import MultiCVConfig
from metaleap.tasks.base import Task, batches


@dataclass
class Patience:
    """Early stopping: stop after ``patience`` values in a row without a new minimum.

    A value counts as an improvement only when strictly below the best so far (a NaN never
    does). :meth:`state` is plain data, so the counter is checkpointed and resumes exactly.
    """

    patience: int
    best: float = math.inf
    since: int = 0

    def update(self, value: float) -> bool:
        """Record ``value``; True when training should stop."""
        if value < self.best:
            self.best, self.since = value, 0
        else:
            self.since += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        return self.since >= self.patience

    def state(self) -> dict[str, float | int]:
        return {"best": self.best, "since": self.since}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.since = float(state["best"]), int(state["since"])


class Trainee(Protocol):
    """One task being trained, as :class:`InnerTraining` drives it (a meta-learner's task, a
    held-out network, or a :class:`~metaleap.metalearners.SequentialTask`)."""

    def forward(self, x: Tensor) -> Tensor: ...

    def mode(self, train: bool) -> None: ...

    def loss(self, logits: Tensor, y: Tensor) -> Tensor: ...

    def backward(self, loss: Tensor) -> None: ...

    def stepped(self) -> None: ...


class ModelTrainee:
    """A network trained on cross-entropy; ``handle`` (a meta-learner's task) sees each
    step's loss after the backward pass, before the optimizer steps."""

    def __init__(self, forward: Callable[[Tensor], Tensor], module: nn.Module,
                 handle: TaskHandle | None = None) -> None:
        self._forward, self.module, self.handle = forward, module, handle

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)

    def mode(self, train: bool) -> None:
        self.module.train(train)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def backward(self, loss: Tensor) -> None:
        loss.backward()
        if self.handle is not None:
            self.handle.report(loss)

    def stepped(self) -> None:
        """Nothing after the step."""


def batches_per_epoch(task: Task, batch_size: int) -> int:
    return math.ceil(task.train_y.numel() / batch_size)


class InnerTraining:
    """One task trained by SGD with cosine annealing and early stopping (docs/multicv.md).

    At most ``max_epochs`` epochs of the task's training split, in shuffled batches from
    ``generator``; ``CosineAnnealingLR`` takes the learning rate from its initial value to 0
    over that maximum. The validation error is measured before the first step and every
    ``val_every`` steps; training stops after ``patience`` validations in a row without a
    new best, or at the maximum. One more batch of the stream, :meth:`final_batch`, gives
    f(θ^K). :meth:`advance` takes one step, so several tasks can be interleaved.

    Each step's training error is that of its batch before the step (train mode). ``curve``
    averages them over each validation interval; ``error_auc`` is the mean error over the
    maximum number of steps, the steps after an early stop counted at the last interval's
    error: the area under the training-error curve, normalised, comparable between runs
    that stopped at different times.
    """

    def __init__(self, cfg: MultiCVConfig, task: Task, trainee: Trainee,
                 optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        if task.val_x is None or task.val_y is None:
            raise ValueError(f"{task.name} has no validation split for early stopping")
        self.task, self.trainee, self.optimizer = task, trainee, optimizer
        self.val_x, self.val_y = task.val_x, task.val_y
        self.val_every = cfg.val_every
        self.max_steps = cfg.max_epochs * batches_per_epoch(task, cfg.batch_size)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.max_steps)
        self.stream = batches(task, cfg.batch_size, self.max_steps + 1, generator)
        self.patience = Patience(cfg.patience)
        self.errors: list[Tensor] = []
        self.val_errors: list[float] = []
        self.done = self._validate()

    @property
    def steps(self) -> int:
        """SGD steps taken."""
        return len(self.errors)

    def _validate(self) -> bool:
        self.trainee.mode(False)
        error = error_rate(self.trainee.forward, self.val_x, self.val_y)
        self.trainee.mode(True)
        self.val_errors.append(error)
        return self.patience.update(error)

    def advance(self) -> None:
        """One SGD step, then a validation when one is due."""
        x, y = next(self.stream)
        logits = self.trainee.forward(x)
        self.errors.append((logits.argmax(1) != y).float().mean().detach())
        self.trainee.backward(self.trainee.loss(logits, y))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.trainee.stepped()
        if self.steps % self.val_every == 0 or self.steps == self.max_steps:
            stop = self._validate()
            self.done = stop or self.steps == self.max_steps

    def run(self, progress: bool = False, desc: str = "") -> InnerTraining:
        """Train until stopped."""
        with tqdm(total=self.max_steps, desc=desc, unit="step", disable=not progress,
                  leave=False, dynamic_ncols=True) as bar:
            while not self.done:
                self.advance()
                bar.update()
        return self

    def final_batch(self) -> tuple[Tensor, Tensor]:
        """The batch after the last step, for f(θ^K)."""
        return next(self.stream)

    @property
    def curve(self) -> list[float]:
        """Mean training error of each validation interval's steps."""
        e = torch.stack(self.errors).double()
        return [float(e[i:i + self.val_every].mean()) for i in range(0, len(e),
                                                                        self.val_every)]

    @property
    def error_auc(self) -> float:
        e = torch.stack(self.errors).double()
        return (float(e.sum()) + (self.max_steps - self.steps) * self.curve[-1]) / self.max_steps

    def scores(self) -> dict[str, Any]:
        """The held-out record: errors of the final network (evaluation mode), the curves."""
        self.trainee.mode(False)
        test = error_rate(self.trainee.forward, self.task.test_x, self.task.test_y)
        train = error_rate(self.trainee.forward, self.task.train_x, self.task.train_y)
        self.trainee.mode(True)
        return {"test_error": test, "train_error": train, "error_auc": self.error_auc,
                "steps": self.steps, "max_steps": self.max_steps, "curve": self.curve,
                "val_errors": self.val_errors}
