"""The classic supervised meta-step (docs/experiments.md), built on the per-task interface.

Each task of a meta-batch starts from θ⁰ (its per-task parameters, such as a fresh head,
reset to their starting values), trains K plain-SGD steps on its batches, and closes with the
loss of one more batch, f(θ^K). Finetuning's tasks share one network, so their steps are
interleaved: one batch of each unfinished task in turn. Then the meta-learner's contribution
is reduced (across processes, if any) and applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from metaleap.leap import Reduce, single_process
from metaleap.metalearners.base import (
    Batch,
    LossFn,
    MetaLearner,
    NamedTensors,
    TaskHandle,
    TaskStream,
    with_last,
)


class SupervisedMetaStep:
    """Runs supervised meta-steps of ``learner`` with the working network ``model``.

    Args:
        learner: any :class:`MetaLearner`.
        model: the network each task trains (unused by interleaved learners, which train
            their own); its parameters outside the learner's initialization are per-task and
            are reset to their present values at the start of every task.
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

    def __call__(self, tasks: Sequence[TaskStream], reduce: Reduce = single_process
                 ) -> dict[str, float]:
        """Adapt from θ⁰ on every task and take one meta-step; returns the metrics."""
        if not self.learner.meta_trains:
            return {}
        if self.learner.interleaved:
            self.run_interleaved(tasks)
        else:
            for task in tasks:
                self.run_task(task)
        return self.learner.meta_update(reduce)

    def _final(self, handle: TaskHandle, batch: Batch) -> None:
        x, y = batch
        with torch.set_grad_enabled(self.learner.query_grad):
            handle.finish(self.loss_fn(handle.model(x), y))

    def run_task(self, task: TaskStream) -> None:
        """Train one task from θ⁰ on its batches and finish it (its contribution is kept)."""
        model = self.model
        model.train()
        self.per_task.load_into(model)
        opt = torch.optim.SGD(model.parameters(), lr=self.inner_lr)
        with self.learner.task(model, opt, index=task.index) as t:
            for (x, y), last in with_last(task.batches):
                if last:
                    self._final(t, (x, y))
                else:
                    t.step(self.loss_fn(t.model(x), y))

    def run_interleaved(self, tasks: Sequence[TaskStream]) -> None:
        """Train the tasks of a shared network, their steps interleaved, and finish each."""
        with ExitStack() as stack:
            handles = [stack.enter_context(self.learner.task(None, None, index=task.index))
                       for task in tasks]
            streams = [with_last(task.batches) for task in tasks]
            query: list[Batch | None] = [None] * len(tasks)
            active = list(range(len(tasks)))
            while active:  # round-robin: one inner batch of each unfinished task in turn
                for i in list(active):
                    (x, y), last = next(streams[i])
                    if last:
                        query[i] = (x, y)
                        active.remove(i)
                    else:
                        handles[i].step(self.loss_fn(handles[i].model(x), y))
            for handle, batch in zip(handles, query, strict=True):
                self._final(handle, batch)  # type: ignore[arg-type]

