"""One open interface for every method that gives new tasks their initialization.

The caller owns each task's training loop; a meta-learner hands out a per-task handle and
splits its meta-step in three, so a loop of any shape (any loss, optimizer, schedule, early
stopping) and any number of processes fit::

    for task in meta_batch:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)    # any inner optimizer
        with learner.task(model, opt, index=task.index) as t:
            for x, y in task.batches:
                t.step(loss_fn(t.model(x), y))                # or t.report(loss); opt.step()
            t.finish(loss_fn(t.model(xq), yq))                # f(θ^K): final or query loss
    contribution = learner.contribution()                     # local sums and counts
    contribution = reduce(contribution)                       # all-reduce; identity on one process
    metrics = learner.apply(contribution)                     # divide, write .grad, meta-step

:meth:`MetaLearner.meta_update` chains the last three. A protocol that hands the learner a
whole meta-batch calls :meth:`MetaLearner.meta_step` instead: it gives each task as a
:class:`MetaBatchTask` (its network, its inner optimizer and a steppable training loop), and
the learner decides how the tasks train: one after another from θ⁰ (the default), or
interleaved on one shared network (finetuning), and which of them this process trains.
Nothing here knows about datasets; :mod:`metaleap.metalearners.supervised` builds the
classic supervised meta-step on top.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor, nn

from metaleap.shared import (
    ONE_PROCESS,
    Contribution,
    Exclude,
    LossLog,
    Processes,
    Reduce,
    single_process,
)

T = TypeVar("T")
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Context:
    """What a protocol tells every method about its tasks (each method reads what it needs)."""

    num_tasks: int = 1
    """number of pretraining tasks (finetuning keeps one head per task)"""
    seed: int = 0
    """the run's seed (finetuning draws its heads from the stream (seed, "finetune-heads"))"""
    inner_lr: float = 0.1
    """the inner SGD learning rate (finetuning pretrains its own network with it)"""
    exclude: Exclude = ()
    """per-task parameters (names or a predicate), e.g. a fresh output head: never in θ⁰"""
    num_classes: tuple[int, ...] = ()
    """each pretraining task's number of classes when tasks differ (finetuning sizes its
    heads by it); empty: every task has the model's head width"""


DEFAULT_CONTEXT = Context()


class TaskHandle:
    """One running task: train ``model``, report each step's loss, finish with f(θ^K).

    ``model`` is what the loop calls on its inputs: the caller's network (MAML: a functional
    view of it through the unrolled steps; finetuning: its shared network through head
    ``index``); ``module`` is the network being trained (whose train or eval mode a loop
    sets). :meth:`step` is backward, report, optimizer step and ``zero_grad``; a loop that
    steps itself calls :meth:`report` just before ``optimizer.step()``, after any gradient
    clipping, and ends with :meth:`close` (or :meth:`finish`).
    """

    #: Whether f(θ^K) must carry its graph (a query gradient: FOMAML, MAML); :meth:`close`
    #: computes it with or without one accordingly.
    query_grad: ClassVar[bool] = False

    def __init__(self, learner: MetaLearner, model: Callable[[Tensor], Tensor],
                 optimizer: torch.optim.Optimizer | None, module: nn.Module) -> None:
        self.learner, self.model, self.optimizer, self.module = learner, model, optimizer, module
        self.first: Tensor | None = None
        self.last: Tensor | None = None
        self.finished = False

    def step(self, loss: Tensor) -> None:
        """One inner step on ``loss`` (a scalar with its graph): backward, then the update."""
        if self.optimizer is None:
            raise RuntimeError(f"{type(self.learner).__name__}: this task has no optimizer "
                               "to step")
        loss.backward()
        self.report(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def report(self, loss: Tensor) -> None:
        """The loss f(θ^i) of the step about to be taken."""
        loss = loss.detach()
        self.first = loss if self.first is None else self.first
        self.last = loss

    def close(self, final_loss: Callable[[], Tensor]) -> None:
        """:meth:`finish` with ``final_loss()``, computed with its graph only when the method
        needs a query gradient (:attr:`query_grad`)."""
        with torch.set_grad_enabled(self.query_grad):
            self.finish(final_loss())

    def finish(self, final_loss: Tensor) -> None:
        """Close the task with f(θ^K): the loss after the last step (final or query batch)."""
        if self.first is None or self.last is None:
            raise RuntimeError(f"{type(self.learner).__name__}: finish() before any step was "
                               "reported")
        self._finish(final_loss)
        self.learner._losses.add(self.first, self.last, final_loss)
        self.finished = True

    def _finish(self, final_loss: Tensor) -> None:
        """The method's contribution of this task."""

    def progress_state(self) -> dict[str, Tensor | None]:
        """The losses reported so far (for a checkpoint inside the task)."""
        return {"first": self.first, "last": self.last}

    def load_progress_state(self, state: dict[str, Tensor | None]) -> None:
        self.first, self.last = state["first"], state["last"]


class TaskRun(Protocol):
    """One task of a meta-batch as its protocol trains it, one inner step at a time."""

    @property
    def done(self) -> bool:
        """Whether the task has taken its last inner step."""

    def advance(self) -> None:
        """Take one inner step (through the handle the run was started on)."""

    def close(self) -> None:
        """Close the handle with f(θ^K), the loss after the last step
        (:meth:`TaskHandle.close`)."""


class MetaBatchTask(Protocol):
    """A task of a meta-batch as a protocol hands it to :meth:`MetaLearner.meta_step`."""

    @property
    def index(self) -> int:
        """The pretraining task (finetuning's head)."""

    def model(self) -> nn.Module:
        """The network the task trains (the learner loads θ⁰ into it)."""

    def optimizer(self, params: Iterable[Tensor], momentum: float = 0.0
                  ) -> torch.optim.Optimizer:
        """The task's inner optimizer over ``params``."""

    def start(self, handle: TaskHandle) -> TaskRun:
        """Begin the task's training on ``handle`` (its forward, module and optimizer)."""


class MetaLearner(nn.Module, ABC):
    """Learns, over meta-steps, an initialization from which new tasks train.

    Subclasses implement :meth:`task`, :meth:`_contribution`, :meth:`_apply` and
    :meth:`initialization`; what the method is called and its options live in its registry
    entry (:mod:`metaleap.methods`). Learned state lives in module parameters and buffers plus
    :meth:`extra_state` (the meta-optimizer), so a run is checkpointed as plain tensors and
    resumed bit-identically.
    """

    #: The optimizer that steps θ⁰ (its state is checkpointed), if the method has one.
    meta_optimizer: torch.optim.Optimizer | None = None
    #: Whether :meth:`batched` gives a handle (the method declares it; protocols read it).
    batched_form: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._losses = LossLog()

    @abstractmethod
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> AbstractContextManager[TaskHandle]:
        """A context manager giving the handle of one task (θ⁰ loaded into ``model``)."""

    def share(self, tasks: Sequence[T], processes: Processes) -> list[T]:
        """The tasks of a meta-batch this process trains: its share (the default), or all of
        them for a method whose tasks train one shared network (every process then runs the
        same steps)."""
        return processes.share(tasks)

    def meta_step(self, tasks: Sequence[MetaBatchTask], processes: Processes = ONE_PROCESS
                  ) -> tuple[list[TaskRun], dict[str, float]]:
        """One meta-step: train this process's share of ``tasks`` from θ⁰, finish each, and
        apply the sums of every process; returns the task runs (in order) and the metrics."""
        runs = self.train_tasks(self.share(tasks, processes))
        return runs, self.meta_update(processes.reduce)

    def train_tasks(self, tasks: Sequence[MetaBatchTask]) -> list[TaskRun]:
        """Train ``tasks`` one after another, each from θ⁰ on its own network."""
        runs = []
        for task in tasks:
            model = task.model()
            with self.task(model, task.optimizer(model.parameters()), index=task.index) as t:
                run = task.start(t)
                while not run.done:
                    run.advance()
                run.close()
            runs.append(run)
        return runs

    def contribution(self) -> Contribution:
        """This process's sums over the tasks finished since the last :meth:`apply`."""
        sums = dataclasses.replace(self._contribution(), losses=self._losses.sums())
        self._losses = LossLog()
        return sums

    def apply(self, contribution: Contribution) -> dict[str, float]:
        """Take the meta-step from the (reduced) sums; returns the meta-batch's metrics."""
        return {**LossLog.metrics(contribution), **self._apply(contribution)}

    def meta_update(self, reduce: Reduce = single_process) -> dict[str, float]:
        """``apply(reduce(contribution()))``: the meta-step on what the tasks contributed."""
        return self.apply(reduce(self.contribution()))

    @abstractmethod
    def _contribution(self) -> Contribution: ...

    @abstractmethod
    def _apply(self, contribution: Contribution) -> dict[str, float]: ...

    @abstractmethod
    def initialization(self) -> dict[str, Tensor]:
        """The state a fresh model loads (``load_state_dict(strict=False)``) for a new task."""

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (plain tensors, numbers, dicts, lists)."""
        if self.meta_optimizer is None:
            return {}
        return {"meta_optimizer": self.meta_optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        if self.meta_optimizer is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])

    def batched(self, count: int) -> BatchedTasks | None:
        """A handle for ``count`` tasks trained from θ⁰ as one computation (stacked
        parameters; :class:`BatchedTasks`), or ``None`` when the method has no
        batched form and its tasks train one after another (:attr:`batched_form` says which)."""
        return None

    def progress_state(self, handle: TaskHandle | None = None) -> dict[str, Any]:
        """The meta-step so far as plain tensors: the finished tasks' sums and, given its
        ``handle``, the running task's. A protocol whose tasks run for hours checkpoints
        this inside a meta-step; restore it with :meth:`load_progress_state`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed inside a "
                                  "meta-step")

    def load_progress_state(self, state: dict[str, Any], handle: TaskHandle | None = None
                            ) -> None:
        """Restore :meth:`progress_state`; a running task's part into ``handle``, whose task
        was begun on a model with its parameters and optimizer already restored."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed inside a "
                                  "meta-step")

    def step_meta_optimizer(self) -> None:
        """Step θ⁰ with the meta-gradient now in ``.grad``, then clear it."""
        assert self.meta_optimizer is not None
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)




@contextmanager
def running(handle: TaskHandle) -> Iterator[TaskHandle]:
    """Yield ``handle``; a task that ends without ``finish`` raises (it contributed nothing)."""
    yield handle
    if not handle.finished:
        raise RuntimeError(f"a {type(handle.learner).__name__} task ended without finish: "
                           "it was discarded")


Stacked = dict[str, Tensor]
"""Per-task tensors under the model's names, stacked along a leading task dimension."""


class BatchedTasks:
    """T tasks of ``learner`` trained as one computation; ``names`` are θ⁰'s parameters, in
    its order.

    A caller that trains the T tasks of a meta-batch together keeps their parameters stacked
    (:data:`Stacked`: row t is task t's θ^i), asks the learner for :meth:`MetaLearner.batched`
    (``None`` when the method has no batched form: MAML, whose inner steps are functional,
    and finetuning, whose tasks share one network) and drives the handle as the sequential
    loop drives a task's::

        handle = learner.batched(T)                  # every task starts from θ⁰
        for i in range(K):                           # the T tasks take their step i together
            handle.observe(params, grads, losses)    # θ^i, ∇f(θ^i), f(θ^i): before the step
            ...                                      # the inner SGD step of every task
        handle.finish(params, final_losses, query_grads, buffers)   # θ^K, f(θ^K)
        learner.meta_update(reduce)                  # as after T sequential tasks

    ``finish`` folds the tasks into the learner in task order, with the per-task math of the
    method's sequential handle (each method's subclass lives beside it), so a batched
    meta-step equals a sequential one up to float rounding. The base class keeps the loss
    log (f(θ⁰), f(θ^{K−1}) and f(θ^K) of every task); a method adds its contribution in
    :meth:`_finish`. Nothing here knows about models or data.
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
