"""The classic supervised meta-step (docs/experiments.md), built on the per-task interface.

Each task of a meta-batch starts from θ⁰ (its per-task parameters, such as a fresh head,
reset to their starting values), trains K plain-SGD steps on its batches, and closes with
the loss of one more batch, f(θ^K). The learner decides how the tasks train
(:meth:`~metaleap.metalearners.MetaLearner.meta_step`: one after another, or interleaved on
finetuning's shared network) and which of them this process trains; then its contribution is
reduced across processes and applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.metalearners.base import LossFn, MetaLearner, TaskHandle
from metaleap.metalearners.theta import NamedTensors
from metaleap.shared import ONE_PROCESS, Processes

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class TaskStream:
    """One task of a meta-batch for the supervised helper.

    ``batches`` yields ``steps + 1`` batches: one per inner step, then one more that gives
    f(θ^K) (Leap's last segment) or the query loss (FOMAML, MAML). ``index`` identifies the
    pretraining task (finetuning's head).
    """

    index: int
    batches: Iterator[Batch]


def with_last(batches: Iterable[Batch]) -> Iterator[tuple[Batch, bool]]:
    """Yield ``(batch, is_last)``: the inner-step batches, then the extra batch flagged True.

    Lazy (one batch of look-ahead), so a long task never sits in memory at once. A task needs
    at least one inner step and the extra batch.
    """
    it = iter(batches)
    prev = next(it, None)
    count = 0
    for batch in it:
        yield prev, False  # type: ignore[misc]
        prev, count = batch, count + 1
    if prev is None or count == 0:
        raise ValueError("a TaskStream must yield at least 2 batches (K ≥ 1 steps + 1 extra)")
    yield prev, True


class SupervisedMetaStep:
    """Runs supervised meta-steps of ``learner`` with the working network ``model``.

    Args:
        learner: any :class:`MetaLearner`.
        model: the network each task trains (unused by finetuning, which trains its own);
            its parameters outside the learner's initialization are per-task and are reset
            to their present values at the start of every task.
        inner_lr: learning rate of the inner SGD.
        loss_fn: the task loss, ``loss_fn(outputs, y)``.

    Example::

        step = SupervisedMetaStep(learner, model, inner_lr=0.1)
        metrics = step(meta_batch)     # a list of TaskStream
    """

    def __init__(self, learner: MetaLearner, model: nn.Module, *, inner_lr: float,
                 loss_fn: LossFn = F.cross_entropy) -> None:
        self.learner, self.model, self.inner_lr, self.loss_fn = learner, model, inner_lr, loss_fn
        learned = learner.initialization()
        self.per_task = NamedTensors({n: p for n, p in model.named_parameters()
                                      if n not in learned}, parameters=False)

    def __call__(self, tasks: Sequence[TaskStream], processes: Processes = ONE_PROCESS
                 ) -> dict[str, float]:
        """Adapt from θ⁰ on every task (this process's share) and take one meta-step;
        returns the metrics."""
        return self.learner.meta_step([_Supervised(self, task) for task in tasks],
                                      processes)[1]

    def train(self, tasks: Sequence[TaskStream]) -> None:
        """Adapt from θ⁰ on every task and finish each, without the meta-update: the
        learner keeps their contribution (:meth:`MetaLearner.contribution`)."""
        self.learner.train_tasks([_Supervised(self, task) for task in tasks])


class _Supervised:
    """One :class:`TaskStream` as a :class:`~metaleap.metalearners.base.MetaBatchTask`."""

    def __init__(self, step: SupervisedMetaStep, task: TaskStream) -> None:
        self.step, self.index, self.batches = step, task.index, task.batches

    def model(self) -> nn.Module:
        model = self.step.model
        model.train()
        self.step.per_task.load_into(model)
        return model

    def optimizer(self, params: Iterable[Tensor], momentum: float = 0.0
                  ) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.step.inner_lr, momentum=momentum)

    def start(self, handle: TaskHandle) -> _Steps:
        return _Steps(handle, self.batches, self.step.loss_fn)


class _Steps:
    """Inner steps on a stream's batches; its extra batch gives f(θ^K)."""

    def __init__(self, handle: TaskHandle, batches: Iterable[tuple[Tensor, Tensor]],
                 loss_fn: LossFn) -> None:
        self.handle, self.loss_fn = handle, loss_fn
        self.stream = with_last(batches)
        self.query: tuple[Tensor, Tensor] | None = None

    @property
    def done(self) -> bool:
        return self.query is not None

    def advance(self) -> None:
        (x, y), last = next(self.stream)
        if last:
            self.query = (x, y)
        else:
            self.handle.step(self.loss_fn(self.handle.model(x), y))

    def close(self) -> None:
        assert self.query is not None
        x, y = self.query
        self.handle.close(lambda: self.loss_fn(self.handle.model(x), y))
