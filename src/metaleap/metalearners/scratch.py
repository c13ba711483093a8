"""No pretraining (a baseline of docs/experiments.md): every new task starts from one fixed
random init."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    Context,
    MetaBatchTask,
    MetaLearner,
    TaskHandle,
    TaskRun,
)
from metaleap.metalearners.theta import NamedTensors
from metaleap.methods import NoOptions
from metaleap.shared import ONE_PROCESS, Contribution, Processes, excluder


class Scratch(MetaLearner):
    """θ⁰ frozen at ``model``'s seeded initialization; it never meta-trains.

    ``context.exclude`` names per-task parameters (e.g. the head) left out of
    :meth:`initialization`, as for the other methods.
    """

    def __init__(self, model: nn.Module, options: NoOptions | None = None,
                 context: Context = DEFAULT_CONTEXT) -> None:
        super().__init__()
        excluded = excluder(model, context.exclude)
        self.theta = NamedTensors({n: p for n, p in model.named_parameters()
                                   if not excluded(n)}, parameters=False)
        self.init_buffers = NamedTensors(dict(model.named_buffers()), parameters=False)

    def task(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None, *,
             index: int = 0) -> TaskHandle:
        raise RuntimeError("no pretraining does not meta-train: it has no tasks")

    def meta_step(self, tasks: Sequence[MetaBatchTask], processes: Processes = ONE_PROCESS
                  ) -> tuple[list[TaskRun], dict[str, float]]:
        """Nothing: no task is read, θ⁰ stays as it is."""
        return [], {}

    def _contribution(self) -> Contribution:
        return Contribution({})

    def _apply(self, contribution: Contribution) -> dict[str, float]:
        return {}

    def initialization(self) -> dict[str, Tensor]:
        return {**dict(self.theta.items()), **dict(self.init_buffers.items())}
