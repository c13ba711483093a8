"""No pretraining (SPEC §2.1 baseline): every new task starts from one fixed random init."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from metaleap.metalearners.base import Exclude, MetaLearner, NamedTensors, TaskStream, excluder


class Scratch(MetaLearner):
    """θ⁰ frozen at ``model``'s seeded initialization; a meta-step reads no data.

    ``exclude`` names per-task parameters (e.g. the head) left out of :meth:`initialization`,
    as for the other methods.
    """

    name = "scratch"
    meta_trains = False
    meta_trains = False

    def __init__(self, model: nn.Module, *, exclude: Exclude = ()) -> None:
        super().__init__()
        excluded = excluder(model, exclude)
        state = dict(model.named_parameters())
        self.theta = NamedTensors({n: p for n, p in state.items() if not excluded(n)},
                                  parameters=False)
        self.init_buffers = NamedTensors(dict(model.named_buffers()), parameters=False)

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        return {}

    def initialization(self) -> dict[str, Tensor]:
        return {**dict(self.theta.items()), **dict(self.init_buffers.items())}
