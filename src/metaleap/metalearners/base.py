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

:meth:`MetaLearner.meta_update` chains the last three. Nothing here knows about datasets;
:mod:`metaleap.metalearners.supervised` builds the classic supervised meta-step on top.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from metaleap.leap import Contribution, Reduce, add_mean_to_grad, single_process

if TYPE_CHECKING:
    from metaleap.metalearners.batched import BatchedTasks

Batch = tuple[Tensor, Tensor]
Exclude = Callable[[str], bool] | Sequence[str]
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


@dataclass(frozen=True)
class TaskStream:
    """One task of a meta-batch for the supervised helper.

    ``batches`` yields ``steps + 1`` batches: one per inner step, then one more that gives
    f(θ^K) (Leap's last segment) or the query loss (FOMAML, MAML). ``index`` identifies the
    pretraining task (finetuning's head).
    """

    index: int
    batches: Iterator[Batch]


class TaskHandle:
    """One running task: train ``model``, report each step's loss, finish with f(θ^K).

    ``model`` is what the loop calls on its inputs: the caller's network (MAML: a functional
    view of it through the unrolled steps; finetuning: its shared network through head
    ``index``). :meth:`step` is backward, report, optimizer step and ``zero_grad``; a loop
    that steps itself calls :meth:`report` just before ``optimizer.step()``, after any
    gradient clipping.
    """

    def __init__(self, learner: MetaLearner, model: Callable[[Tensor], Tensor],
                 optimizer: torch.optim.Optimizer | None) -> None:
        self.learner, self.model, self.optimizer = learner, model, optimizer
        self.first: Tensor | None = None
        self.last: Tensor | None = None
        self.finished = False

    def step(self, loss: Tensor) -> None:
        """One inner step on ``loss`` (a scalar with its graph): backward, then the update."""
        if self.optimizer is None:
            raise RuntimeError(f"{self.learner.name}: this task has no optimizer to step")
        loss.backward()
        self.report(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def report(self, loss: Tensor) -> None:
        """The loss f(θ^i) of the step about to be taken."""
        loss = loss.detach()
        self.first = loss if self.first is None else self.first
        self.last = loss

    def finish(self, final_loss: Tensor) -> None:
        """Close the task with f(θ^K): the loss after the last step (final or query batch)."""
        if self.first is None or self.last is None:
            raise RuntimeError(f"{self.learner.name}: finish() before any step was reported")
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


class ThetaHandle(TaskHandle):
    """A task of a :class:`ThetaLearner`: ``params`` are the model's θ⁰ parameters."""

    def __init__(self, learner: MetaLearner, model: nn.Module,
                 optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        super().__init__(learner, model, optimizer)
        self.params = params


class MetaLearner(nn.Module, ABC):
    """Learns, over meta-steps, an initialization from which new tasks train.

    Subclasses set ``name``, ``label``, ``color`` and ``Options`` (a dataclass of the
    method's own settings, checked by its ``check()``), and implement :meth:`task`,
    :meth:`_contribution`, :meth:`_apply` and :meth:`initialization`. Learned state lives in
    module parameters and buffers plus :meth:`extra_state` (the meta-optimizer), so a run is
    checkpointed as plain tensors and resumed bit-identically.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    color: ClassVar[str]
    Options: ClassVar[type]
    #: False for methods whose initialization does not learn (no meta-steps are run).
    meta_trains: ClassVar[bool] = True
    #: True when the tasks of a meta-batch train one shared network, so their steps are
    #: interleaved (finetuning); ``task`` then takes no model and no optimizer, and the
    #: meta-batch is not split across processes: each runs all of it, identically.
    interleaved: ClassVar[bool] = False
    #: Whether f(θ^K) passed to ``finish`` must carry its graph (a query gradient).
    query_grad: ClassVar[bool] = False
    #: The optimizer that steps θ⁰ (its state is checkpointed), if the method has one.
    meta_optimizer: torch.optim.Optimizer | None = None

    def __init__(self) -> None:
        super().__init__()
        self._losses = LossLog()

    @abstractmethod
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> AbstractContextManager[TaskHandle]:
        """A context manager giving the handle of one task (θ⁰ loaded into ``model``)."""

    def contribution(self) -> Contribution:
        """This process's sums over the tasks finished since the last :meth:`apply`."""
        sums = self._contribution()
        sums.sums.update(self._losses.sums())
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
        parameters; :mod:`metaleap.metalearners.batched`), or ``None`` when the method has no
        batched form and its tasks train one after another."""
        return None

    def progress_state(self, handle: TaskHandle | None = None) -> dict[str, Any]:
        """The meta-step so far as plain tensors: the finished tasks' sums and, given its
        ``handle``, the running task's. A protocol whose tasks run for hours checkpoints
        this inside a meta-step; restore it with :meth:`load_progress_state`."""
        raise NotImplementedError(f"{self.name} cannot be checkpointed inside a meta-step")

    def load_progress_state(self, state: dict[str, Any], handle: TaskHandle | None = None
                            ) -> None:
        """Restore :meth:`progress_state`; a running task's part into ``handle``, whose task
        was begun on a model with its parameters and optimizer already restored."""
        raise NotImplementedError(f"{self.name} cannot be checkpointed inside a meta-step")

    def step_meta_optimizer(self) -> None:
        """Step θ⁰ with the meta-gradient now in ``.grad``, then clear it."""
        assert self.meta_optimizer is not None
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------ shared helpers
def excluder(model: nn.Module, exclude: Exclude) -> Callable[[str], bool]:
    """``exclude`` (parameter names or a predicate on the name) as a predicate, names checked."""
    if callable(exclude):
        return exclude
    names = frozenset(exclude)
    unknown = names - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"exclude names parameters the model lacks: {sorted(unknown)}")
    return names.__contains__


class NamedTensors(nn.Module):
    """Tensors kept under a model's dotted names, as this module's parameters or buffers.

    Dots become ``"__"`` in the attribute names (as in :class:`metaleap.Leap`); :meth:`items`
    gives the model's names back, :meth:`load_into` copies the values into a model.
    """

    def __init__(self, tensors: dict[str, Tensor], parameters: bool) -> None:
        super().__init__()
        self.names = list(tensors)
        for n, t in tensors.items():
            value = t.detach().clone()
            if parameters:
                self.register_parameter(_mangle(n), nn.Parameter(value))
            else:
                self.register_buffer(_mangle(n), value)

    def items(self) -> list[tuple[str, Tensor]]:
        return [(n, getattr(self, _mangle(n))) for n in self.names]

    def values(self) -> list[Tensor]:
        return [getattr(self, _mangle(n)) for n in self.names]

    @torch.no_grad()
    def load_into(self, model: nn.Module) -> None:
        """Copy every tensor into the model's parameter or buffer of the same name."""
        if not self.names:
            return
        state = dict(model.named_parameters())
        state.update(model.named_buffers())
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"the model lacks {missing}: it does not match this learner")
        torch._foreach_copy_([state[n] for n in self.names], self.values())


def _mangle(name: str) -> str:
    return name.replace(".", "__")


def make_meta_optimizer(params: Iterable[Tensor], name: str, lr: float,
                        **kwargs: Any) -> torch.optim.Optimizer:
    """The meta-optimizer over θ⁰: ``"sgd"`` (the paper's Omniglot choice) or ``"adam"``."""
    kinds: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD,
                                                     "adam": torch.optim.Adam}
    if name not in kinds:
        raise ValueError(f"meta_optimizer must be one of {sorted(kinds)}, got {name!r}")
    return kinds[name](params, lr=lr, **kwargs)


def with_last(batches: Iterable[Batch]) -> Iterator[tuple[Batch, bool]]:
    """Yield ``(batch, is_last)``: the inner-step batches, then the extra batch flagged True.

    Lazy (one batch of look-ahead), so a long task never sits in memory at once. A task needs
    at least one inner step and the extra batch.
    """
    it = iter(batches)
    prev = next(it, None)
    count = 0
    for batch in it:
        yield prev, False  # type: ignore[misc]
        prev, count = batch, count + 1
    if prev is None or count == 0:
        raise ValueError("a TaskStream must yield at least 2 batches (K ≥ 1 steps + 1 extra)")
    yield prev, True


class LossLog:
    """Per-task losses summed as tensors (no host sync per step), read once per meta-step.

    ``first``: f(θ⁰) on the first batch; ``last``: the last inner step's loss f(θ^{K−1});
    ``final``: the loss after adaptation, f(θ^K).
    """

    KEYS = ("loss_first", "loss_last", "loss_final")

    def __init__(self) -> None:
        self.totals: dict[str, Tensor] = {}
        self.tasks = 0

    def add(self, first: Tensor, last: Tensor, final: Tensor) -> None:
        for key, value in zip(self.KEYS, (first, last, final), strict=True):
            value = value.detach().float()
            self.totals[key] = value if key not in self.totals else self.totals[key] + value
        self.tasks += 1

    def sums(self) -> dict[str, Tensor]:
        """The sums as :class:`Contribution` entries (``"finished"``: tasks, dropped or not)."""
        zero = torch.zeros(())
        return {"finished": torch.tensor(self.tasks),
                **{k: self.totals.get(k, zero) for k in self.KEYS}}

    def state(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "tasks": self.tasks}

    def load_state(self, state: dict[str, Any]) -> None:
        self.totals, self.tasks = dict(state["totals"]), int(state["tasks"])

    @classmethod
    def metrics(cls, contribution: Contribution) -> dict[str, float]:
        """Mean losses over the finished tasks, and their number."""
        tasks = contribution.count("finished")
        if not tasks:
            return {"tasks": 0.0}
        first, last, final = (torch.stack([contribution.sums[k] for k in cls.KEYS]) / tasks
                              ).tolist()
        return {"loss_first": first, "loss_last": last, "loss_final": final,
                "tasks": float(tasks)}


class FlatMean:
    """Per-task meta-gradients summed into one flat buffer, non-finite tasks dropped.

    :meth:`add` folds one task's contribution (a list shaped like ``params``; ``None``
    entries count as zero); :meth:`sums` gives the :class:`Contribution` entries and starts
    over; :meth:`write` sets the mean of (reduced) sums as ``.grad`` of ``params``.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.total: Tensor | None = None
        self.kept = self.dropped = 0

    @torch.no_grad()
    def add(self, grads: Sequence[Tensor | None]) -> bool:
        flat = torch.cat([(torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                          for p, g in zip(self.params, grads, strict=True)])
        if not bool(torch.isfinite(flat).all()):
            self.dropped += 1
            return False
        self.total = flat if self.total is None else self.total.add_(flat)
        self.kept += 1
        return True

    def sums(self) -> dict[str, Tensor]:
        first = self.params[0]
        total = self.total if self.total is not None else torch.zeros(
            sum(p.numel() for p in self.params), dtype=first.dtype, device=first.device)
        out = {"grad": total, "tasks": torch.tensor(self.kept),
               "dropped": torch.tensor(self.dropped)}
        self.total, self.kept, self.dropped = None, 0, 0
        return out

    def write(self, contribution: Contribution) -> None:
        kept = contribution.count("tasks")
        if kept:
            add_mean_to_grad(self.params, contribution.sums["grad"], kept)


@dataclass
class MetaOptions:
    """Settings of a method that steps θ⁰ with a meta-optimizer."""

    meta_lr: float = 0.1
    """learning rate of the meta-optimizer (0.1 in docs/experiments.md; the paper's FOMAML
    used 0.5)"""
    meta_optimizer: str = "sgd"
    """the meta-optimizer over θ⁰: "sgd" (the paper's Omniglot choice) or "adam" (Multi-CV)"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not (math.isfinite(self.meta_lr) and self.meta_lr > 0):
            raise ValueError(f"meta_lr must be a positive number, got {self.meta_lr}")
        if self.meta_optimizer not in ("sgd", "adam"):
            raise ValueError(f"meta_optimizer must be 'sgd' or 'adam', got "
                             f"{self.meta_optimizer!r}")


class ThetaLearner(MetaLearner):
    """A learner holding θ⁰ itself and stepping it with a meta-optimizer (Reptile, FOMAML, MAML).

    θ⁰ is ``self.theta`` (parameters under the model's names: the trainable ones that
    ``context.exclude`` leaves in); ``self.init_buffers`` are the buffers each task starts
    with (the "reset" policy). Subclasses give the per-task handle.
    """

    def __init__(self, model: nn.Module, options: MetaOptions | None = None,
                 context: Context = DEFAULT_CONTEXT) -> None:
        super().__init__()
        self.options = options = options or MetaOptions()
        excluded = excluder(model, context.exclude)
        params = dict(model.named_parameters())
        self.theta = NamedTensors({n: p for n, p in params.items()
                                   if p.requires_grad and not excluded(n)}, parameters=True)
        self.init_buffers = NamedTensors(dict(model.named_buffers()), parameters=False)
        self.meta_optimizer = make_meta_optimizer(self.theta.parameters(),
                                                  options.meta_optimizer, options.meta_lr)
        self.mean = FlatMean(self.theta.values())

    #: The per-task handle: ``Handle(learner, model, optimizer, θ⁰ parameters of model)``.
    Handle: ClassVar[type[ThetaHandle]]

    def begin(self, model: nn.Module) -> list[Tensor]:
        """Load θ⁰ and the initial buffers into ``model``; its θ⁰ parameters, in θ⁰'s order."""
        self.theta.load_into(model)
        self.init_buffers.load_into(model)
        params = dict(model.named_parameters())
        return [params[n] for n in self.theta.names]

    @contextmanager
    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        if model is None or optimizer is None:
            raise ValueError(f"{self.name} needs the task's model and its inner optimizer")
        with running(self.Handle(self, model, optimizer, self.begin(model))) as handle:
            yield handle

    def _contribution(self) -> Contribution:
        return Contribution(self.mean.sums())

    def _apply(self, contribution: Contribution) -> dict[str, float]:
        self.mean.write(contribution)
        self.step_meta_optimizer()
        return {"dropped": float(contribution.count("dropped"))}

    def initialization(self) -> dict[str, Tensor]:
        out = {n: t.detach() for n, t in self.theta.items()}
        out.update(self.init_buffers.items())
        return out


@contextmanager
def running(handle: TaskHandle) -> Iterator[TaskHandle]:
    """Yield ``handle``; a task that ends without ``finish`` raises (it contributed nothing)."""
    yield handle
    if not handle.finished:
        raise RuntimeError(f"a {handle.learner.name} task ended without finish(final_loss): "
                           "it was discarded")
