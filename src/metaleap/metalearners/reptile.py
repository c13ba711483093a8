"""Reptile (Nichol, Achiam & Schulman, 2018): move θ⁰ towards the tasks' final iterates.

Meta-gradient: the mean over the meta-batch of θ⁰ − θ^K (SPEC §2.1), stepped by the
meta-optimizer; with SGD, θ⁰ ← θ⁰ − meta_lr · mean(θ⁰ − θ^K). It equals Leap's meta-gradient
with the energy metric and neither loss term nor stabilizer (SPEC §1). The extra batch only
gives the ``loss_final`` metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metaleap.metalearners.base import LossLog, MeanGrad, TaskStream, ThetaLearner


class Reptile(ThetaLearner):
    """Reptile; arguments as :class:`~metaleap.metalearners.base.ThetaLearner`."""

    name = "reptile"

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        model, log = self.model, LossLog()
        model.train()
        theta = self.theta.values()
        mean = MeanGrad(theta)
        for task in tasks:
            self.begin_task()
            first, step_loss, (x, y) = self.adapt(task)
            with torch.no_grad():
                final = self.loss_fn(model(x), y)
            with torch.no_grad():
                mean.add(torch._foreach_sub(theta, self.model_meta_parameters()))  # θ⁰ − θ^K
            log.add(first, step_loss, final)
        mean.write()
        self.meta_update()
        return {**log.metrics(), "dropped": float(mean.dropped)}
