"""θ⁰ held as tensors under a model's names, and the learners that step it themselves.

:class:`NamedTensors` keeps a model's parameters or buffers as a module's own (``"a.b"`` as
``a__b``); :class:`ThetaLearner` is the learner that holds θ⁰ so and steps it with a
meta-optimizer (:func:`make_meta_optimizer`) from the mean of per-task meta-gradients
(Reptile, FOMAML, MAML).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    Context,
    MetaLearner,
    TaskHandle,
    running,
)
from metaleap.methods import MetaOptions
from metaleap.shared import Contribution, FlatMean, excluder, mangle


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


class ThetaHandle(TaskHandle):
    """A task of a :class:`ThetaLearner`: ``params`` are the model's θ⁰ parameters."""

    def __init__(self, learner: MetaLearner, model: nn.Module,
                 optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        super().__init__(learner, model, optimizer, model)
        self.params = params


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
