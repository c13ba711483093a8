"""First-order MAML (Finn, Abbeel & Levine, 2017): the query gradient at the final iterate.

Each task adapts θ⁰ → θ^K with K inner SGD steps; its meta-gradient is ∇f(θ^K) on the extra
(query) batch, the Jacobian ∂θ^K/∂θ⁰ taken as the identity. The meta-batch mean is stepped by
the meta-optimizer (SPEC §2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from metaleap.metalearners.base import LossLog, MeanGrad, TaskStream, ThetaLearner, with_last


class FOMAML(ThetaLearner):
    """First-order MAML; arguments as :class:`~metaleap.metalearners.base.ThetaLearner`."""

    name = "fomaml"

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        model, log = self.model, LossLog()
        model.train()
        mean = MeanGrad(self.theta.values())
        for task in tasks:
            self.begin_task()
            opt = self.inner_optimizer()
            first: Tensor | None = None
            for (x, y), last in with_last(task.batches):
                loss = self.loss_fn(model(x), y)
                loss.backward()
                if last:  # the query gradient ∇f(θ^K)
                    break
                opt.step()
                opt.zero_grad(set_to_none=True)
                first = loss if first is None else first
                step_loss = loss
            mean.add([p.grad for p in self.model_meta_parameters()])
            opt.zero_grad(set_to_none=True)
            log.add(first, step_loss, loss)  # type: ignore[arg-type]
        mean.write()
        self.meta_update()
        return {**log.metrics(), "dropped": float(mean.dropped)}
