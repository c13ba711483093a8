"""Multi-headed finetuning (a baseline of docs/experiments.md): pretrain one network on the
pooled tasks.

The pretraining tasks share one encoder and each has its own linear head (task ``index`` →
head ``index``). The tasks of a meta-batch train that one network with ordinary SGD, their
steps interleaved by the caller (one batch of each task in turn), each through its own head.
The initialization for a new task is the encoder alone: a held-out task keeps the fresh head
of its own model.

The tasks train in sequence on one network, so a meta-step cannot be split across processes
without changing what this baseline is: the update is in place, the contribution carries the
task counts and losses only, and distributed meta-training runs every finetuning task on every
process (identically; see :attr:`MetaLearner.interleaved`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metaleap.leap import Contribution
from metaleap.metalearners.base import DEFAULT_CONTEXT, Context, MetaLearner, TaskHandle, running
from metaleap.models import MultiHeadNet
from metaleap.seeding import generator


@dataclass
class FinetuneOptions:
    """Settings of the pretraining SGD (its learning rate is the protocol's inner lr)."""

    momentum: float = 0.0
    """momentum of the pretraining SGD (0: plain SGD, as the inner loops of the other methods)"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")


class Finetune(MetaLearner):
    """Pretrain a multi-headed network; hand its encoder on as the initialization.

    Args:
        model: a network with an ``encoder`` and an ``nn.Linear`` ``head`` (e.g.
            :class:`~metaleap.models.ConvNet`); its encoder is trained in place.
        options: :class:`FinetuneOptions`.
        context: ``num_tasks`` heads (``num_classes`` wide, when given), drawn from the
            stream ``(seed, "finetune-heads")``; the pretraining SGD runs at ``inner_lr``.
    """

    name, label, color = "finetune", "Finetuning (multi-head)", "tab:blue"
    Options = FinetuneOptions
    interleaved = True

    def __init__(self, model: nn.Module, options: FinetuneOptions | None = None,
                 context: Context = DEFAULT_CONTEXT) -> None:
        super().__init__()
        options = options or FinetuneOptions()
        self.net = MultiHeadNet(model, context.num_tasks,
                                generator(context.seed, "finetune-heads"),
                                widths=context.num_classes or None)
        # the pretraining SGD steps the network whose encoder is handed on: the meta-optimizer
        self.meta_optimizer = torch.optim.SGD(self.net.parameters(), lr=context.inner_lr,
                                              momentum=options.momentum)

    @contextmanager
    def task(self, model: nn.Module | None = None,
             optimizer: torch.optim.Optimizer | None = None, *,
             index: int = 0) -> Iterator[TaskHandle]:
        """Task ``index`` trains the shared network through its head, with its own SGD."""
        if model is not None or optimizer is not None:
            raise ValueError("finetuning trains its own multi-headed network: "
                             "call task(None, None, index=...)")
        if not 0 <= index < len(self.net.heads):
            raise IndexError(f"task index {index} has no head ({len(self.net.heads)} heads)")
        self.net.train()
        with running(TaskHandle(self, lambda x: self.net(x, index), self.meta_optimizer)
                     ) as handle:
            yield handle

    def _contribution(self) -> Contribution:
        return Contribution({})  # the losses only (added by the base class)

    def _apply(self, contribution: Contribution) -> dict[str, float]:
        return {}  # the shared network was trained in place

    def initialization(self) -> dict[str, Tensor]:
        """The encoder's parameters and buffers under the model's names (``"encoder.…"``)."""
        return {n: t.detach() for n, t in self.net.state_dict(keep_vars=True).items()
                if not n.startswith("heads.")}

