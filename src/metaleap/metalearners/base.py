"""One interface for every method that produces an initialization for new tasks.

A meta-learner owns θ⁰ (and whatever else it learns) and a meta-optimizer. The protocol feeds
it meta-batches of :class:`TaskStream` and, for evaluation, asks for :meth:`initialization`.
Nothing here knows about datasets: a task arrives as an iterator of ``(x, y)`` batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
