"""First-order MAML (Finn, Abbeel & Levine, 2017): the query gradient at the final iterate.

Each task adapts θ⁰ → θ^K with the caller's optimizer; its meta-gradient is ∇f(θ^K) of the
query loss passed to ``finish`` (it must carry its graph), the Jacobian ∂θ^K/∂θ⁰ taken as the
identity. The meta-batch mean is stepped by the meta-optimizer (docs/experiments.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metaleap.metalearners.base import BatchedTasks, MetaLearner, Stacked
from metaleap.metalearners.theta import ThetaHandle, ThetaLearner
from metaleap.shared import FlatMean


class _FOMAMLHandle(ThetaHandle):
    query_grad = True

    def _finish(self, final_loss: Tensor) -> None:
        if not final_loss.requires_grad:
            raise ValueError("FOMAML needs the query loss with its graph (not under no_grad)")
        grads = torch.autograd.grad(final_loss, self.params, allow_unused=True)  # ∇f(θ^K)
        self.learner.mean.add(grads)  # type: ignore[attr-defined]


class FOMAML(ThetaLearner):
    """First-order MAML; ``options`` as :class:`~metaleap.methods.MetaOptions`."""

    batched_form = True

    Handle = _FOMAMLHandle

    def batched(self, count: int) -> BatchedTasks:
        return QueryGradients(self, self.theta.names, self.mean, count)


class QueryGradients(BatchedTasks):
    """FOMAML's ∇f(θ^K) of each task's query loss, folded into the mean in task order."""

    query_grad = True

    def __init__(self, learner: MetaLearner, names: Sequence[str], mean: FlatMean,
                 count: int) -> None:
        super().__init__(learner, names, count)
        self.mean = mean

    def _finish(self, params: Stacked, final_losses: Tensor, query_grads: Stacked | None,
                buffers: Stacked) -> None:
        if query_grads is None:
            raise ValueError("FOMAML needs the query gradients ∇f(θ^K) of the final losses")
        for t in range(self.count):
            self.mean.add([query_grads[n][t] for n in self.names])
