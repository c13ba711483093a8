"""What every method shares: a meta-batch's sums and the processes that add them up.

A method's meta-step is ``apply(reduce(contribution()))``. Its :class:`Contribution` holds
sums over the tasks this process finished, never means, so one all-reduce across processes
(:class:`Processes`, :data:`Reduce`; :func:`single_process` on one) gives the global
meta-batch, and ``apply`` divides by the global count (:func:`add_mean_to_grad`). The sums
are kept in float64 (:func:`add_exactly`), so any split of float32 tasks over processes adds
up to what one process gives, bit for bit. :class:`FlatMean` is the flat sum of per-task
meta-gradients that Reptile, FOMAML and MAML keep; :class:`LossLog` the per-task losses every
method reports; :func:`excluder` and :func:`mangle` name θ⁰'s parameters. Leap's core
(:mod:`metaleap.leap`) and every learner (:mod:`metaleap.metalearners`) build on this module,
which knows nothing of either.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["ONE_PROCESS", "Contribution", "Exclude", "FlatMean", "LossLog", "Processes",
           "Reduce", "add_exactly", "add_mean_to_grad", "excluder", "mangle", "single_process"]

T = TypeVar("T")
#: Parameters left out of θ⁰ (a per-task head): their names, or a predicate on the name.
Exclude = Callable[[str], bool] | Sequence[str]


def mangle(name: str) -> str:
    """A model's dotted parameter name as a module attribute name (``"a.b"`` → ``"a__b"``)."""
    return name.replace(".", "__")


def excluder(model: nn.Module, exclude: Exclude) -> Callable[[str], bool]:
    """``exclude`` (parameter names or a predicate on the name) as a predicate, names checked."""
    if callable(exclude):
        return exclude
    names = frozenset(exclude)
    unknown = names - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"exclude names parameters the model lacks: {sorted(unknown)}")
    return names.__contains__


@dataclass
class Contribution:
    """A meta-batch's local sums: what processes add up before the meta-step is applied.

    Every entry is a tensor (flat or 0-d) that is *summed* across processes: never a mean,
    so one all-reduce of the concatenated entries gives the global meta-batch. ``sums`` are
    the method's own: a learner that can drop tasks counts the kept ones in ``"tasks"`` and
    the discarded ones in ``"dropped"``, beside its entries (Leap: ``"grad"``, Σ over kept
    tasks of Σ_i increment_i, and ``"path"``). ``buffers``: Σ of the kept tasks' final
    buffers by the model's name (Leap with ``buffers="average"``). ``losses``: the loss log
    of every finished task (:class:`metaleap.metalearners.base.LossLog`).
    """

    sums: dict[str, Tensor]
    buffers: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)

    def count(self, key: str) -> int:
        """A count entry of ``sums`` (``"tasks"``, ``"dropped"``) as an int."""
        return int(self.sums[key])

    def _entries(self) -> list[Tensor]:
        return [*self.sums.values(), *self.buffers.values(), *self.losses.values()]

    @property
    def device(self) -> torch.device:
        """Where the first entry lives (the device an all-reduce of :meth:`flat` runs on)."""
        return self._entries()[0].device

    def flat(self, device: torch.device | str) -> Tensor:
        """Every entry, in order, as one float64 vector on ``device`` (for one all-reduce)."""
        return torch.cat([v.detach().reshape(-1).to(device, torch.float64)
                          for v in self._entries()])

    def unflat(self, flat: Tensor) -> Contribution:
        """A contribution shaped like this one, its values read from :meth:`flat`'s layout."""
        parts = iter(flat.split([v.numel() for v in self._entries()]))

        def read(group: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: next(parts).reshape(v.shape).to(v.device, v.dtype)
                    for k, v in group.items()}

        return Contribution(read(self.sums), read(self.buffers), read(self.losses))


#: Sums a :class:`Contribution` over processes; the identity on one process.
Reduce = Callable[[Contribution], Contribution]


def single_process(contribution: Contribution) -> Contribution:
    """The reduce step of a single process: the local sums are the global ones."""
    return contribution


def add_exactly(total: Tensor | None, acc: Tensor) -> Tensor:
    """``total + acc`` with ``total`` kept in float64: a meta-batch's per-task sums are added
    where float32 values add without rounding (unless one coordinate's values span more than
    about 2^(29 − log2 tasks) in magnitude), so
    the sum, and the all-reduce of such sums, does not depend on how the tasks were ordered
    or split across processes (docs/experiments.md, "What makes two runs identical")."""
    if total is None:
        return acc.to(torch.float64, copy=True)
    return total.add_(acc)


@torch.no_grad()
def add_mean_to_grad(params: list[Tensor], total: Tensor, count: int) -> None:
    """Add ``total / count`` (flat, in ``params``' order; float64 sums are divided in float64,
    then rounded once to the parameters' dtype) to each parameter's ``.grad``."""
    mean = total.div_(count)
    for p, g in zip(params, mean.split([p.numel() for p in params]), strict=True):
        g = g.view_as(p).to(p.dtype, copy=True)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)


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
