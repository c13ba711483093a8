"""Reptile (Nichol, Achiam & Schulman, 2018): move θ⁰ towards the tasks' final iterates.

Meta-gradient: the mean over the meta-batch of θ⁰ − θ^K (docs/experiments.md), stepped by the
meta-optimizer; with SGD, θ⁰ ← θ⁰ − meta_lr · mean(θ⁰ − θ^K). It equals Leap's meta-gradient
with the energy metric and neither loss term nor stabilizer (docs/leap.md). The final loss only
gives the ``loss_final`` metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metaleap.metalearners.base import BatchedTasks, MetaLearner, Stacked
from metaleap.metalearners.theta import ThetaHandle, ThetaLearner
from metaleap.shared import FlatMean


class _ReptileHandle(ThetaHandle):
    @torch.no_grad()
    def _finish(self, final_loss: Tensor) -> None:
        learner: Reptile = self.learner  # type: ignore[assignment]
        learner.mean.add(torch._foreach_sub(learner.theta.values(), self.params))  # θ⁰ − θ^K


class Reptile(ThetaLearner):
    """Reptile; ``options`` as :class:`~metaleap.methods.MetaOptions`."""

    batched_form = True

    Handle = _ReptileHandle

    def batched(self, count: int) -> BatchedTasks:
        return ReptileDeltas(self, self.theta.values(), self.theta.names, self.mean, count)


class ReptileDeltas(BatchedTasks):
    """Reptile's θ⁰ − θ^K for each task, folded into the learner's mean in task order."""

    def __init__(self, learner: MetaLearner, theta: Sequence[Tensor], names: Sequence[str],
                 mean: FlatMean, count: int) -> None:
        super().__init__(learner, names, count)
        self.theta, self.mean = list(theta), mean

    def _finish(self, params: Stacked, final_losses: Tensor, query_grads: Stacked | None,
                buffers: Stacked) -> None:
        for t in range(self.count):
            self.mean.add([init - params[n][t] for n, init in zip(self.names, self.theta,
                                                                  strict=True)])
