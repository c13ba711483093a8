"""One interface for every method that produces an initialization for new tasks.

A meta-learner owns θ⁰ (and whatever else it learns) and a meta-optimizer. The protocol feeds
it meta-batches of :class:`TaskStream` and, for evaluation, asks for :meth:`initialization`.
Nothing here knows about datasets: a task arrives as an iterator of ``(x, y)`` batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]


@dataclass
class TaskStream:
    """One task of a meta-batch as a meta-learner sees it.

    ``batches`` yields ``steps + 1`` batches: one per inner step, then one more that gives
    f(θ^K) (Leap's last segment) or the query gradient (FOMAML, MAML). ``index`` identifies
    the pretraining task (finetuning's head).
    """

    index: int
    batches: Iterator[Batch]


class MetaLearner(nn.Module, ABC):
    """Learns, over meta-steps, an initialization from which new tasks train.

    Subclasses set ``name`` and implement :meth:`meta_step`; their learned state lives in
    module parameters/buffers plus :meth:`extra_state` (e.g. the meta-optimizer), so a run can
    be checkpointed as plain tensors and resumed bit-identically.
    """

    name: ClassVar[str]
    #: False for methods whose initialization does not learn (no meta-steps are run).
    meta_trains: ClassVar[bool] = True

    @abstractmethod
    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        """Adapt from θ⁰ on each task of the meta-batch and update θ⁰ once; return metrics."""

    @abstractmethod
    def initialization(self) -> dict[str, Tensor]:
        """The state a fresh model loads (``load_state_dict(strict=False)``) for a new task."""

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (plain tensors, numbers, dicts, lists)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


# ------------------------------------------------------------------------ shared helpers
Exclude = Callable[[str], bool] | Sequence[str]
LossFn = Callable[[Tensor, Tensor], Tensor]


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
    ``final``: the loss on the extra batch after adaptation, f(θ^K).
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.tasks = 0

    def add(self, first: Tensor, last: Tensor, final: Tensor) -> None:
        for key, value in (("first", first), ("last", last), ("final", final)):
            value = value.detach().float()
            self.sums[key] = value if key not in self.sums else self.sums[key] + value
        self.tasks += 1

    def metrics(self) -> dict[str, float]:
        if not self.tasks:
            return {"tasks": 0.0}
        means = torch.stack([self.sums[k] for k in ("first", "last", "final")]) / self.tasks
        first, last, final = means.tolist()
        return {"loss_first": first, "loss_last": last, "loss_final": final,
                "tasks": float(self.tasks)}


class MeanGrad:
    """The mean over a meta-batch of per-task meta-gradients, non-finite tasks dropped.

    :meth:`add` folds one task's contribution (a list shaped like the meta-parameters;
    ``None`` entries count as zero) and says whether it was kept; :meth:`write` sets the
    mean as ``.grad`` of the meta-parameters (nothing if every task was dropped).
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.sum: list[Tensor] | None = None
        self.kept = self.dropped = 0

    @torch.no_grad()
    def add(self, grads: Sequence[Tensor | None]) -> bool:
        grads = [torch.zeros_like(p) if g is None else g.detach()
                 for p, g in zip(self.params, grads, strict=True)]
        if not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.dropped += 1
            return False
        if self.sum is None:
            self.sum = [g.clone() for g in grads]
        else:
            torch._foreach_add_(self.sum, grads)
        self.kept += 1
        return True

    @torch.no_grad()
    def write(self) -> None:
        if self.sum is None:
            return
        for p, total in zip(self.params, self.sum, strict=True):
            mean = total.div_(self.kept)
            p.grad = mean if p.grad is None else p.grad.add_(mean)


class InitializationLearner(MetaLearner):
    """Plumbing shared by the methods that meta-learn θ⁰ with inner SGD and a meta-optimizer.

    ``model`` is the working network: each task copies θ⁰ into it and trains it in place with
    plain SGD (``inner_lr``). Parameters that ``exclude`` names (e.g. ``"head."`` params) are
    per-task: not meta-learned, reset at every task to their values at construction and left
    out of :meth:`initialization`. Buffers (BatchNorm statistics) are reset to their values at
    construction at every task (the "reset" policy; all steps run in train mode). Subclasses
    create ``self.meta_optimizer`` over their θ⁰; its state is the :meth:`extra_state`.
    """

    meta_optimizer: torch.optim.Optimizer

    def __init__(self, model: nn.Module, *, inner_lr: float, exclude: Exclude = (),
                 loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__()
        self.model = model
        self.inner_lr = inner_lr
        self.loss_fn = loss_fn
        self.is_excluded = excluder(model, exclude)
        self.per_task = NamedTensors(
            {n: p for n, p in model.named_parameters() if self.is_excluded(n)}, parameters=False)

    def meta_names(self) -> list[str]:
        """The names of the model's meta-learned (trainable, not excluded) parameters."""
        return [n for n, p in self.model.named_parameters()
                if p.requires_grad and not self.is_excluded(n)]

    def inner_optimizer(self) -> torch.optim.Optimizer:
        """Plain SGD over all the working model's parameters (the per-task ones included)."""
        return torch.optim.SGD(self.model.parameters(), lr=self.inner_lr)

    def adapt(self, task: TaskStream, observe: Callable[[Tensor], None] | None = None
              ) -> tuple[Tensor, Tensor, Batch]:
        """K inner SGD steps on all but the last batch of ``task``, from the model as it is.

        ``observe(loss)`` runs just before each step (gradients in place). Returns the loss of
        the first and of the last step, and the extra batch, not yet used.
        """
        opt = self.inner_optimizer()
        losses: list[Tensor] = []
        for (x, y), last in with_last(task.batches):
            if last:
                return losses[0], losses[-1], (x, y)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            if observe is not None:
                observe(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[1:] = [loss]  # keep the first and the latest
        raise RuntimeError("unreachable: with_last always flags the last batch")

    def extra_state(self) -> dict[str, Any]:
        return {"meta_optimizer": self.meta_optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])

    def meta_update(self) -> None:
        """Step θ⁰ with the meta-gradient now in ``.grad``, then clear it."""
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)


class ThetaLearner(InitializationLearner):
    """An :class:`InitializationLearner` holding θ⁰ itself (Reptile, FOMAML, MAML).

    θ⁰ is ``self.theta`` (parameters under the model's names), the buffers θ⁰ starts every
    task with are ``self.init_buffers``; ``meta_optimizer`` (``"sgd"`` or ``"adam"``, with
    ``meta_lr``) steps θ⁰. ``exclude`` and ``loss_fn`` as in :class:`InitializationLearner`
    (defaults: no per-task parameters, cross-entropy); the lr defaults are SPEC §2.1's.
    """

    def __init__(self, model: nn.Module, *, inner_lr: float = 0.1, meta_lr: float = 0.1,
                 meta_optimizer: str = "sgd", exclude: Exclude = (),
                 loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__(model, inner_lr=inner_lr, exclude=exclude, loss_fn=loss_fn)
        params = dict(model.named_parameters())
        self.theta = NamedTensors({n: params[n] for n in self.meta_names()}, parameters=True)
        self.init_buffers = NamedTensors(dict(model.named_buffers()), parameters=False)
        self.meta_optimizer = make_meta_optimizer(self.theta.parameters(), meta_optimizer,
                                                  meta_lr)

    def begin_task(self) -> None:
        """Load θ⁰, the per-task parameters' init and the initial buffers into the model."""
        self.theta.load_into(self.model)
        self.per_task.load_into(self.model)
        self.init_buffers.load_into(self.model)

    def model_meta_parameters(self) -> list[Tensor]:
        """The working model's parameters that θ⁰ initialises, in θ⁰'s order."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.theta.names]

    def initialization(self) -> dict[str, Tensor]:
        out = {n: t.detach() for n, t in self.theta.items()}
        out.update(self.init_buffers.items())
        return out
