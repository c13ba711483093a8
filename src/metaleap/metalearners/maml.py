"""MAML (Finn, Abbeel & Levine, 2017): differentiate the query loss through the inner steps.

Each task unrolls K inner SGD steps θ^{i+1} = θ^i − α∇f(θ^i) from θ⁰ with
``torch.func.functional_call`` and ``create_graph=True``, takes the loss on the extra (query)
batch at θ^K and backpropagates to θ⁰: the exact (second-order) meta-gradient. The graph holds
all K steps, so memory grows linearly with K (the paper ran MAML with 5 inner steps only).
BatchNorm runs in train mode on batch statistics; its running statistics are updated in a
per-task copy of θ⁰'s buffers, outside autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import functional_call

from metaleap.metalearners.base import LossLog, MeanGrad, TaskStream, ThetaLearner, with_last


class MAML(ThetaLearner):
    """Second-order MAML; arguments as :class:`~metaleap.metalearners.base.ThetaLearner`."""

    name = "maml"

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        model, log = self.model, LossLog()
        model.train()
        theta = dict(self.theta.items())
        mean = MeanGrad(list(theta.values()))
        for task in tasks:
            # θ⁰ itself (so the graph reaches it), plus fresh leaves for per-task parameters
            params: dict[str, Tensor] = {
                **theta, **{n: t.clone().requires_grad_() for n, t in self.per_task.items()}}
            buffers = {n: b.clone() for n, b in self.init_buffers.items()}
            first: Tensor | None = None
            for (x, y), last in with_last(task.batches):
                loss = self.loss_fn(functional_call(model, {**params, **buffers}, (x,)), y)
                if last:
                    break
                grads = torch.autograd.grad(loss, list(params.values()), create_graph=True,
                                            allow_unused=True)
                params = {n: p if g is None else p - self.inner_lr * g
                          for (n, p), g in zip(params.items(), grads, strict=True)}
                first = loss if first is None else first
                step_loss = loss
            meta_grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
            mean.add(meta_grads)
            log.add(first, step_loss, loss)  # type: ignore[arg-type]
            # free this task's unrolled graph before the next task builds its own
            del params, buffers, grads, meta_grads, loss, first, step_loss
        mean.write()
        self.meta_update()
        return {**log.metrics(), "dropped": float(mean.dropped)}
