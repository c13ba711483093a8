"""Multi-headed finetuning (a baseline of docs/experiments.md): pretrain one network on the
pooled tasks.

The pretraining tasks share one encoder and each has its own linear head (task ``index`` →
head ``index``). The tasks of a meta-batch train that one network with ordinary SGD, their
steps interleaved (one inner step of each unfinished task in turn: :meth:`train_tasks`),
each through its own head with its own SGD. The initialization for a new task is the encoder
alone: a held-out task keeps the fresh head of its own model.

The tasks train in sequence on one network, so a meta-step cannot be split across processes
without changing what this baseline is: the update is in place, the contribution carries the
task counts and losses only, and distributed meta-training runs every finetuning task on every
process (identically: :meth:`share`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    Context,
    MetaBatchTask,
    MetaLearner,
    TaskHandle,
    TaskRun,
    running,
)
from metaleap.methods import FinetuneOptions
from metaleap.models import MultiHeadNet
from metaleap.seeding import generator
from metaleap.shared import ONE_PROCESS, Contribution, Processes

T = TypeVar("T")


class Finetune(MetaLearner):
    """Pretrain a multi-headed network; hand its encoder on as the initialization.

    Args:
        model: a network with an ``encoder`` and an ``nn.Linear`` ``head`` (e.g.
            :class:`~metaleap.models.ConvNet`); its encoder is trained in place.
        options: :class:`~metaleap.methods.FinetuneOptions`.
        context: ``num_tasks`` heads (``num_classes`` wide, when given), drawn from the
            stream ``(seed, "finetune-heads")``; a task of :meth:`task` without an optimizer
            trains with SGD at ``inner_lr``.
    """

    def __init__(self, model: nn.Module, options: FinetuneOptions | None = None,
                 context: Context = DEFAULT_CONTEXT) -> None:
        super().__init__()
        self.options = options or FinetuneOptions()
        self.inner_lr = context.inner_lr
        self.net = MultiHeadNet(model, context.num_tasks,
                                generator(context.seed, "finetune-heads"),
                                widths=context.num_classes or None)

    def parameters_of(self, index: int) -> list[nn.Parameter]:
        """What task ``index`` trains: the shared encoder and its own head."""
        return [*self.net.encoder.parameters(), *self.net.heads[index].parameters()]

    @contextmanager
    def task(self, model: nn.Module | None = None,
             optimizer: torch.optim.Optimizer | None = None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        """Task ``index`` trains the shared network through its head, with ``optimizer`` over
        :meth:`parameters_of` (default: SGD at the context's ``inner_lr`` and the options'
        momentum)."""
        if model is not None:
            raise ValueError("finetuning trains its own multi-headed network: "
                             "call task(None, optimizer, index=...)")
        if not 0 <= index < len(self.net.heads):
            raise IndexError(f"task index {index} has no head ({len(self.net.heads)} heads)")
        if optimizer is None:
            optimizer = torch.optim.SGD(self.parameters_of(index), lr=self.inner_lr,
                                        momentum=self.options.momentum)
        self.net.train()
        with running(TaskHandle(self, lambda x: self.net(x, index), optimizer, self.net)
                     ) as handle:
            yield handle

    def share(self, tasks: Sequence[T], processes: Processes) -> list[T]:
        """Every task, on every process: they train one network in place."""
        return list(tasks)

    def meta_step(self, tasks: Sequence[MetaBatchTask], processes: Processes = ONE_PROCESS
                  ) -> tuple[list[TaskRun], dict[str, float]]:
        """Every task, on this process as on every other: the losses are not reduced (they
        would count each task once per process)."""
        return self.train_tasks(self.share(tasks, processes)), self.meta_update()

    def train_tasks(self, tasks: Sequence[MetaBatchTask]) -> list[TaskRun]:
        """Round-robin: one inner step of each unfinished task in turn, each through its head
        with its own optimizer (``momentum`` from the options); then every task closes, in
        order, on the network all of them trained."""
        with ExitStack() as stack:
            runs = []
            for task in tasks:
                params: Iterable[Tensor] = self.parameters_of(task.index)
                optimizer = task.optimizer(params, momentum=self.options.momentum)
                handle = stack.enter_context(self.task(None, optimizer, index=task.index))
                runs.append(task.start(handle))
            active = [run for run in runs if not run.done]
            while active:
                for run in list(active):
                    run.advance()
                    if run.done:
                        active.remove(run)
            for run in runs:
                run.close()
        return runs

    def _contribution(self) -> Contribution:
        return Contribution({})  # the losses only (added by the base class)

    def _apply(self, contribution: Contribution) -> dict[str, float]:
        return {}  # the shared network was trained in place

    def initialization(self) -> dict[str, Tensor]:
        """The encoder's parameters and buffers under the model's names (``"encoder.…"``)."""
        return {n: t.detach() for n, t in self.net.state_dict(keep_vars=True).items()
                if not n.startswith("heads.")}
