"""First-order MAML (Finn, Abbeel & Levine, 2017): the query gradient at the final iterate.

Each task adapts θ⁰ → θ^K with K inner SGD steps; its meta-gradient is ∇f(θ^K) on the extra
(query) batch, the Jacobian ∂θ^K/∂θ⁰ taken as the identity. The meta-batch mean is stepped by
the meta-optimizer (SPEC §2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from metaleap.metalearners.base import LossLog, MeanGrad, TaskStream, ThetaLearner


class FOMAML(ThetaLearner):
    """First-order MAML; arguments as :class:`~metaleap.metalearners.base.ThetaLearner`."""

    name = "fomaml"

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        model, log = self.model, LossLog()
        model.train()
        mean = MeanGrad(self.theta.values())
        for task in tasks:
            self.begin_task()
            first, step_loss, (x, y) = self.adapt(task)
            query = self.loss_fn(model(x), y)
            query.backward()  # the query gradient ∇f(θ^K)
            mean.add([p.grad for p in self.model_meta_parameters()])
            model.zero_grad(set_to_none=True)
            log.add(first, step_loss, query)
        mean.write()
        self.meta_update()
        return {**log.metrics(), "dropped": float(mean.dropped)}
