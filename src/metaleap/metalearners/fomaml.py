"""First-order MAML (Finn, Abbeel & Levine, 2017): the query gradient at the final iterate.

Each task adapts θ⁰ → θ^K with the caller's optimizer; its meta-gradient is ∇f(θ^K) of the
query loss passed to ``finish`` (it must carry its graph), the Jacobian ∂θ^K/∂θ⁰ taken as the
identity. The meta-batch mean is stepped by the meta-optimizer (SPEC §2.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from metaleap.metalearners.base import MetaOptions, TaskHandle, ThetaLearner, running


class _FOMAMLHandle(TaskHandle):
    def __init__(self, learner: FOMAML, model: nn.Module, optimizer: torch.optim.Optimizer,
                 params: list[Tensor]) -> None:
        super().__init__(learner, model, optimizer)
        self.params = params

    def _finish(self, final_loss: Tensor) -> None:
        if not final_loss.requires_grad:
            raise ValueError("FOMAML needs the query loss with its graph (not under no_grad)")
        grads = torch.autograd.grad(final_loss, self.params, allow_unused=True)  # ∇f(θ^K)
        self.learner.mean.add(grads)  # type: ignore[attr-defined]


class FOMAML(ThetaLearner):
    """First-order MAML; ``options`` as :class:`~metaleap.metalearners.base.MetaOptions`."""

    name, label, color = "fomaml", "FOMAML", "tab:purple"
    Options = MetaOptions
    query_grad = True

    @contextmanager
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        if model is None or optimizer is None:
            raise ValueError("FOMAML needs the task's model and its inner optimizer")
        with running(_FOMAMLHandle(self, model, optimizer, self.begin(model))) as handle:
            yield handle
