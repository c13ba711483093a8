"""Each method's contribution from T tasks trained as one computation (batched tasks).

A caller that trains the T tasks of a meta-batch together keeps their parameters stacked: one
tensor of shape (T, …) per parameter name, row t being task t's θ^i. It asks the learner for
:meth:`MetaLearner.batched` (``None`` when the method has no batched form: MAML, whose inner
steps are functional, and finetuning, whose tasks share one network) and drives the handle
as the sequential loop drives a task's handle::

    handle = learner.batched(T)                  # every task starts from θ⁰
    for i in range(K):                           # the T tasks take their step i together
        handle.observe(params, grads, losses)    # θ^i, ∇f(θ^i), f(θ^i): just before the step
        ...                                      # the inner SGD step of every task
    handle.finish(params, final_losses, query_grads, buffers)   # θ^K, f(θ^K)
    learner.meta_update(reduce)                  # as after T sequential tasks

``finish`` folds the tasks into the learner in task order, with the same per-task math as
the sequential handles (Leap's increments, Reptile's θ⁰ − θ^K, FOMAML's ∇f(θ^K), the loss
log), so a batched meta-step equals a sequential one up to float rounding. Nothing here
knows about models or data: the tensors come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metaleap.leap import Leap, increment
from metaleap.metalearners.base import FlatMean, MetaLearner

Stacked = dict[str, Tensor]
"""Per-task tensors under the model's names, stacked along a leading task dimension."""


class BatchedTasks:
    """T tasks of ``learner`` trained together; ``names`` are θ⁰'s parameters, in its order.

    The base class keeps the loss log (f(θ⁰), f(θ^{K−1}) and f(θ^K) of every task, as the
    sequential handle does); a method adds its contribution in :meth:`_finish`.
    """

    #: Whether :meth:`finish` needs ∇f(θ^K) of every task's query loss (FOMAML).
    query_grad = False

    def __init__(self, learner: MetaLearner, names: Sequence[str], count: int) -> None:
        self.learner, self.names, self.count = learner, list(names), count
        self.first: Tensor | None = None
        self.last: Tensor | None = None
        self.steps = 0

    def observe(self, params: Stacked, grads: Stacked, losses: Tensor) -> None:
        """Step i of every task: θ^i (``params``), ∇f(θ^i) (``grads``) and f(θ^i) (``losses``,
        shape (T,)), read just before the inner optimizer steps."""
        losses = losses.detach()
        self.first = losses if self.first is None else self.first
        self.last = losses
        self.steps += 1

    def finish(self, params: Stacked, final_losses: Tensor, query_grads: Stacked | None,
               buffers: Stacked) -> None:
        """Close every task at θ^K with f(θ^K) (``final_losses``); ``query_grads`` is
        ∇f(θ^K) of those losses when the method asks for it (:attr:`query_grad`), ``buffers``
        the tasks' final buffers. Folds the tasks into the learner in task order."""
        if self.first is None or self.last is None:
            raise RuntimeError(f"{type(self.learner).__name__}: finish() before any step was "
                               "observed")
        final_losses = final_losses.detach()
        with torch.no_grad():
            self._finish(params, final_losses, query_grads, buffers)
        for t in range(self.count):
            self.learner._losses.add(self.first[t], self.last[t], final_losses[t])

    def _finish(self, params: Stacked, final_losses: Tensor, query_grads: Stacked | None,
                buffers: Stacked) -> None:
        """The method's contribution of the T tasks."""

    def flat(self, tensors: Stacked) -> Tensor:
        """θ⁰'s entries of ``tensors`` as one (T, |θ⁰|) matrix, in θ⁰'s order (a copy)."""
        return torch.cat([tensors[n].detach().reshape(self.count, -1) for n in self.names], 1)


class LeapPaths(BatchedTasks):
    """Leap's pull-forward increments for T tasks at once (docs/leap.md), rows of (T, |θ⁰|).

    Each segment adds :func:`metaleap.leap.increment` of every row (the formula
    :meth:`metaleap.Leap.observe` computes task by task) to the task's row of the
    accumulator, and its d_p term to the task's path. ``finish`` closes segment K with f(θ^K)
    and folds each row into the core with :meth:`metaleap.Leap.fold` (its non-finite check
    and buffer policy), in task order.
    """

    def __init__(self, learner: MetaLearner, leap: Leap, count: int) -> None:
        super().__init__(learner, leap.names, count)
        self.leap = leap
        empty = torch.empty(0)
        #: θ^i and g_i of every task (T, |θ⁰|), f_i (T,): the point the next segment leaves
        self.prev, self.grad, self.loss = empty, empty, empty
        #: Σ_i increment_i (T, |θ⁰|), the paths d_p (T,), whether every loss was finite (T,)
        self.acc, self.path, self.finite = empty, empty, empty

    def observe(self, params: Stacked, grads: Stacked, losses: Tensor) -> None:
        theta = self.flat(params)
        losses = losses.detach().to(theta.dtype)
        if self.steps:
            self._segment(theta, losses)
        else:
            self.acc = torch.zeros_like(theta)
            self.path = torch.zeros(self.count, dtype=theta.dtype, device=theta.device)
            self.finite = torch.ones(self.count, dtype=torch.bool, device=theta.device)
        self.prev, self.grad, self.loss = theta, self.flat(grads), losses
        self.finite &= torch.isfinite(losses)
        super().observe(params, grads, losses)

    @torch.no_grad()
    def _segment(self, theta: Tensor, losses: Tensor) -> None:
        """Add increment_i of every task (:func:`metaleap.leap.increment`, row by row) for the
        segment from the stored point to ``theta``."""
        leap = self.leap
        self.finite &= torch.isfinite(losses)
        step, term = increment(theta - self.prev, losses - self.loss if leap.loss_term else None,
                               self.grad, leap.metric, leap.stabilizer)
        self.acc.add_(step)
        self.path += term

    def _finish(self, params: Stacked, final_losses: Tensor, query_grads: Stacked | None,
                buffers: Stacked) -> None:
        self._segment(self.flat(params), final_losses.to(self.acc.dtype))
        for t in range(self.count):
            self.leap.fold(self.acc[t], self.path[t], self.finite[t], self.steps,
                           {n: b[t] for n, b in buffers.items()})


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
