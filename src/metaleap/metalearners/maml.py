"""MAML (Finn, Abbeel & Levine, 2017): differentiate the query loss through the inner steps.

Each task unrolls its inner SGD steps θ^{i+1} = θ^i − α∇f(θ^i) from θ⁰ functionally, with
``torch.func.functional_call`` and ``create_graph=True``; ``finish`` takes the query loss at
θ^K and backpropagates it to θ⁰: the exact (second-order) meta-gradient. The graph holds all
K steps, so memory grows linearly with K (the paper ran MAML with 5 inner steps only).
BatchNorm runs on batch statistics; its running statistics are updated in a per-task copy of
θ⁰'s buffers, outside autograd.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metaleap.metalearners.base import TaskHandle, running
from metaleap.metalearners.theta import ThetaLearner


class _MAMLHandle(TaskHandle):
    """``model`` runs the caller's network at the current functional iterate θ^i."""

    query_grad = True

    def __init__(self, learner: MAML, model: nn.Module, lr: float) -> None:
        super().__init__(learner, self._forward, None, model)
        self.net, self.lr = model, lr
        theta = dict(learner.theta.items())
        # θ⁰ itself (so the graph reaches it), plus fresh leaves for per-task parameters
        self.params: dict[str, Tensor] = {**theta, **{
            n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()
            if n not in theta and p.requires_grad}}
        self.buffers = {n: b.clone() for n, b in learner.init_buffers.items()}

    def _forward(self, x: Tensor) -> Tensor:
        return functional_call(self.net, {**self.params, **self.buffers}, (x,))

    def step(self, loss: Tensor) -> None:
        grads = torch.autograd.grad(loss, list(self.params.values()), create_graph=True,
                                    allow_unused=True)
        self.params = {n: p if g is None else p - self.lr * g
                       for (n, p), g in zip(self.params.items(), grads, strict=True)}
        super().report(loss)

    def report(self, loss: Tensor) -> None:
        raise RuntimeError("MAML takes its inner steps functionally: call t.step(loss)")

    def _finish(self, final_loss: Tensor) -> None:
        learner: MAML = self.learner  # type: ignore[assignment]
        learner.mean.add(torch.autograd.grad(final_loss, learner.theta.values(),
                                             allow_unused=True))
        self.params = self.buffers = {}  # free the unrolled graph before the next task


class MAML(ThetaLearner):
    """Second-order MAML; ``options`` as :class:`~metaleap.methods.MetaOptions`.

    ``task(model, optimizer)`` takes the inner learning rate from ``optimizer``, which must be
    plain SGD (no momentum, weight decay or schedule): MAML differentiates through its steps,
    taken functionally; ``model`` is never modified.
    """

    @contextmanager
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        if model is None or not isinstance(optimizer, torch.optim.SGD):
            raise ValueError("MAML needs the task's model and a plain torch.optim.SGD")
        group = optimizer.param_groups[0]
        if group["momentum"] or group["weight_decay"] or group["maximize"]:
            raise ValueError("MAML unrolls plain SGD only: no momentum, weight decay or maximize")
        with running(_MAMLHandle(self, model, float(group["lr"]))) as handle:
            yield handle
