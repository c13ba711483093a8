"""First-order MAML (Finn, Abbeel & Levine, 2017): the query gradient at the final iterate.

Each task adapts θ⁰ → θ^K with the caller's optimizer; its meta-gradient is ∇f(θ^K) of the
query loss passed to ``finish`` (it must carry its graph), the Jacobian ∂θ^K/∂θ⁰ taken as the
identity. The meta-batch mean is stepped by the meta-optimizer (docs/experiments.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaleap.metalearners.base import ThetaHandle, ThetaLearner
from metaleap.metalearners.batched import BatchedTasks, QueryGradients


class _FOMAMLHandle(ThetaHandle):
    query_grad = True

    def _finish(self, final_loss: Tensor) -> None:
        if not final_loss.requires_grad:
            raise ValueError("FOMAML needs the query loss with its graph (not under no_grad)")
        grads = torch.autograd.grad(final_loss, self.params, allow_unused=True)  # ∇f(θ^K)
        self.learner.mean.add(grads)  # type: ignore[attr-defined]


class FOMAML(ThetaLearner):
    """First-order MAML; ``options`` as :class:`~metaleap.methods.MetaOptions`."""

    Handle = _FOMAMLHandle

    def batched(self, count: int) -> BatchedTasks:
        return QueryGradients(self, self.theta.names, self.mean, count)
