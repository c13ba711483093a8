"""Leap as a :class:`MetaLearner`: the pull-forward meta-gradient of :class:`metaleap.Leap`.

Each task starts from θ⁰ and trains with the caller's optimizer; Leap reads θ^i, ∇f(θ^i) and
f(θ^i) from the optimizer's pre-step hook (after clipping or unscaling), and ``finish`` closes
the K-th segment with f(θ^K), for instance one more forward pass on the next batch. The
defaults (docs/experiments.md): length metric, loss term and stabilizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from metaleap.leap import Leap, LeapTask, increment
from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    BatchedTasks,
    Context,
    MetaLearner,
    Stacked,
    TaskHandle,
    running,
)
from metaleap.metalearners.theta import make_meta_optimizer
from metaleap.methods import LeapOptions
from metaleap.shared import Contribution, excluder


class _LeapHandle(TaskHandle):
    def __init__(self, learner: LeapLearner, model: nn.Module,
                 optimizer: torch.optim.Optimizer, core: LeapTask) -> None:
        super().__init__(learner, model, optimizer, model)
        self.core = core

    def report(self, loss: Tensor) -> None:
        super().report(loss)
        self.core.report(loss)

    def _finish(self, final_loss: Tensor) -> None:
        self.core.finish(final_loss)


class LeapLearner(MetaLearner):
    """Leap (Flennerhag et al., 2019): descend the expected length of the learning paths.

    Args:
        model: a network of the tasks' shape; θ⁰ starts as a copy of its parameters.
        options: :class:`LeapOptions`.
        context: ``exclude`` names per-task parameters (e.g. a fresh head), not in θ⁰.
    """

    batched_form = True

    def __init__(self, model: nn.Module, options: LeapOptions | None = None,
                 context: Context = DEFAULT_CONTEXT) -> None:
        super().__init__()
        self.options = options = options or LeapOptions()
        self.leap = Leap(model, metric=options.metric,  # type: ignore[arg-type]
                         loss_term=options.loss_term, stabilizer=options.stabilizer,
                         exclude=excluder(model, context.exclude),
                         buffers=options.buffers)  # type: ignore[arg-type]
        self.meta_optimizer = make_meta_optimizer(self.leap.parameters(),
                                                  options.meta_optimizer, options.meta_lr)

    @contextmanager
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        if model is None or optimizer is None:
            raise ValueError("Leap needs the task's model and its inner optimizer")
        with self.leap.task(model, optimizer) as core, \
                running(_LeapHandle(self, model, optimizer, core)) as handle:
            yield handle

    def batched(self, count: int) -> BatchedTasks:
        return LeapPaths(self, self.leap, count)

    def _contribution(self) -> Contribution:
        return self.leap.contribution()

    def _apply(self, contribution: Contribution) -> dict[str, float]:
        stats = self.leap.apply(contribution)
        self.step_meta_optimizer()
        return {"path": stats.mean_path, "dropped": float(stats.dropped)}

    def progress_state(self, handle: TaskHandle | None = None) -> dict[str, Any]:
        state = {"leap": self.leap.progress_state(), "losses": self._losses.state()}
        if handle is not None:
            state["handle"] = handle.progress_state()
        return state

    def load_progress_state(self, state: dict[str, Any], handle: TaskHandle | None = None
                            ) -> None:
        self.leap.load_progress_state(state["leap"])
        self._losses.load_state(state["losses"])
        if handle is not None:
            handle.load_progress_state(state["handle"])

    def initialization(self) -> dict[str, Tensor]:
        return self.leap.initialization()


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
