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
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor, nn

from metaleap.leap import (
    Contribution,
    Reduce,
    add_exactly,
    add_mean_to_grad,
    mangle,
    single_process,
)
from metaleap.methods import MetaOptions

if TYPE_CHECKING:
    from metaleap.metalearners.batched import BatchedTasks

T = TypeVar("T")
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


def _local_sum(tensor: Tensor) -> Tensor:
    return tensor


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes that share a study (1 of 1 by default).

    ``all_sum`` sums a tensor over every process and returns the result on each (the
    all-reduce of :mod:`metaleap.distributed`); with one process it returns its input.
    """

    rank: int = 0
    world: int = 1
    all_sum: Callable[[Tensor], Tensor] = _local_sum

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous block of a list that every process holds; the first
        ``len % world`` processes take one item more. Contiguous blocks keep the order of the
        sums: the all-reduce then adds whole partial sums of consecutive tasks."""
        size, extra = divmod(len(items), self.world)
        start = self.rank * size + min(self.rank, extra)
        return list(items[start:start + size + (self.rank < extra)])

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            self.all_sum(torch.zeros(1))

    def reduce(self, contribution: Contribution) -> Contribution:
        """A meta-learner's contribution summed over processes, in one all-reduce."""
        if self.world == 1:
            return contribution
        return contribution.unflat(self.all_sum(contribution.flat(contribution.device)))

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (plain tensors and data, as a checkpoint holds), in rank
        order: each writes its ``torch.save`` bytes into its row of a zero table that is
        all-reduced (after one all-reduce of the sizes), so every process receives them
        exactly; they are read back with the weights-only loader, never as arbitrary
        objects."""
        if self.world == 1:
            return [value]
        buffer = io.BytesIO()
        torch.save(value, buffer)
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        sizes = torch.zeros(self.world, dtype=torch.int64)
        sizes[self.rank] = len(data)
        sizes = self.all_sum(sizes)
        table = torch.zeros(self.world, int(sizes.max()), dtype=torch.int32)
        table[self.rank, :len(data)] = data
        table = self.all_sum(table)
        return [torch.load(io.BytesIO(table[r, :int(n)].to(torch.uint8).numpy().tobytes()),
                           weights_only=True) for r, n in enumerate(sizes.tolist())]


ONE_PROCESS = Processes()


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


class ThetaHandle(TaskHandle):
    """A task of a :class:`ThetaLearner`: ``params`` are the model's θ⁰ parameters."""

    def __init__(self, learner: MetaLearner, model: nn.Module,
                 optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        super().__init__(learner, model, optimizer, model)
        self.params = params


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
        parameters; :mod:`metaleap.metalearners.batched`), or ``None`` when the method has no
        batched form and its tasks train one after another."""
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
                self.register_parameter(mangle(n), nn.Parameter(value))
            else:
                self.register_buffer(mangle(n), value)

    def items(self) -> list[tuple[str, Tensor]]:
        return [(n, getattr(self, mangle(n))) for n in self.names]

    def values(self) -> list[Tensor]:
        return [getattr(self, mangle(n)) for n in self.names]

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
        """The sums, :attr:`Contribution.losses` (``"finished"``: tasks, dropped or not)."""
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
        tasks = int(contribution.losses["finished"])
        if not tasks:
            return {"tasks": 0.0}
        first, last, final = (torch.stack([contribution.losses[k] for k in cls.KEYS]) / tasks
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
        self.total = add_exactly(self.total, flat)
        self.kept += 1
        return True

    def sums(self) -> dict[str, Tensor]:
        first = self.params[0]
        total = self.total if self.total is not None else torch.zeros(
            sum(p.numel() for p in self.params), dtype=torch.float64, device=first.device)
        out = {"grad": total, "tasks": torch.tensor(self.kept),
               "dropped": torch.tensor(self.dropped)}
        self.total, self.kept, self.dropped = None, 0, 0
        return out

    def write(self, contribution: Contribution) -> None:
        kept = contribution.count("tasks")
        if kept:
            add_mean_to_grad(self.params, contribution.sums["grad"], kept)


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
            raise ValueError(f"{type(self).__name__} needs the task's model and its inner "
                             "optimizer")
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
        raise RuntimeError(f"a {type(handle.learner).__name__} task ended without finish: "
                           "it was discarded")
