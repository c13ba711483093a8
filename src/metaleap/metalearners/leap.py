"""Leap as a :class:`MetaLearner`: the pull-forward meta-gradient of :class:`metaleap.Leap`.

Each task starts from θ⁰, takes K inner SGD steps on its batches (Leap reads θ^i, ∇f(θ^i) and
f(θ^i) just before every step) and closes the K-th segment with f(θ^K), the loss of one
forward pass on the stream's extra batch (no gradient; train mode, like the inner steps).
SPEC §2.1 defaults: length metric, loss term and stabilizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.leap import BufferPolicy, Leap, Metric
from metaleap.metalearners.base import (
    Exclude,
    InitializationLearner,
    LossFn,
    LossLog,
    TaskStream,
    make_meta_optimizer,
)


class LeapLearner(InitializationLearner):
    """Leap (Flennerhag et al., 2019): descend the expected length of the learning paths.

    Args:
        model: the working network; θ⁰ starts as a copy of its parameters.
        inner_lr: lr of the inner SGD.
        meta_lr: lr of the meta-optimizer.
        meta_optimizer: ``"sgd"`` (Omniglot) or ``"adam"`` (Multi-CV).
        metric, loss_term, stabilizer, buffers: passed to :class:`metaleap.Leap`.
        exclude: per-task parameters (e.g. ``lambda n: n.startswith("head.")``), not in θ⁰.
        loss_fn: the task loss, ``loss_fn(logits, y)``.
    """

    name = "leap"

    def __init__(self, model: nn.Module, *, inner_lr: float = 0.1, meta_lr: float = 0.1,
                 meta_optimizer: str = "sgd", metric: Metric = "length",
                 loss_term: bool = True, stabilizer: bool = True, buffers: BufferPolicy = "reset",
                 exclude: Exclude = (), loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__(model, inner_lr=inner_lr, exclude=exclude, loss_fn=loss_fn)
        self.leap = Leap(model, metric=metric, loss_term=loss_term, stabilizer=stabilizer,
                         exclude=self.is_excluded, buffers=buffers)
        self.meta_optimizer = make_meta_optimizer(self.leap.parameters(), meta_optimizer, meta_lr)

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        model, log = self.model, LossLog()
        model.train()
        for task in tasks:
            self.leap.begin_task(model)  # θ⁰ and its buffers
            self.per_task.load_into(model)
            try:
                first, step_loss, (x, y) = self.adapt(
                    task, lambda loss: self.leap.observe(model, loss))
                with torch.no_grad():  # f(θ^K) closes the K-th segment
                    final = self.loss_fn(model(x), y)
            except BaseException:
                self.leap.abort_task()
                raise
            self.leap.end_task(model, final)
            log.add(first, step_loss, final)
        stats = self.leap.meta_grad()
        self.meta_update()
        return {**log.metrics(), "path": stats.mean_path, "dropped": float(stats.dropped)}

    def initialization(self) -> dict[str, Tensor]:
        return self.leap.initialization()
