"""The run shape every protocol shares: the contract between a protocol and the trainer.

A protocol (a package of :mod:`metaleap.protocols`) binds its config and data in a
:class:`StudyProtocol`, which yields one :class:`MethodRun` per (seed, method). The generic
trainer (:mod:`metaleap.protocols.trainer`) drives each run: it resumes it, calls
:meth:`MethodRun.meta_step` and :meth:`MethodRun.evaluate` with a :class:`RunContext`
(progress saved inside the step by an interrupted run, and a way to save more), validates,
checkpoints and reports to a :class:`Store`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import Tensor

from metaleap import seeding
from metaleap.shared import ONE_PROCESS, Processes
from metaleap.tasks.base import Task
from metaleap.tasks.errors import DataError

K = TypeVar("K")


class DivergedError(RuntimeError):
    """Meta-training produced a non-finite initialization."""


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the run it should resume."""


class Store(Protocol):
    """Where a study reports: metrics, checkpoints, results and exported initializations."""

    def log(self, record: dict[str, Any]) -> None: ...

    def save_state(self, key: str, state: dict[str, Any]) -> None: ...

    def load_state(self, key: str) -> dict[str, Any] | None: ...

    def save_result(self, key: str, result: dict[str, Any]) -> None: ...

    def load_result(self, key: str) -> dict[str, Any] | None: ...

    def export_initialization(self, key: str, tensors: dict[str, Tensor],
                              metadata: dict[str, str]) -> None: ...


class Learner(Protocol):
    """What the trainer needs of a run's learner: a
    :class:`~metaleap.metalearners.MetaLearner` or a
    :class:`~metaleap.metalearners.SequentialLearner`."""

    def initialization(self) -> dict[str, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """What the trainer hands a meta-step or the evaluation.

    ``resumed``: the progress an interrupted run saved inside this very meta-step (or
    evaluation), ``None`` when it starts afresh. ``save(progress)`` checkpoints ``progress``
    (plain tensors and data) with the learner's state and the run's own, so a run killed
    inside a long step resumes there. ``bars``: whether to show progress bars. ``tally``: what
    meta-training did to θ⁰ so far (meta-steps, those that moved θ⁰, tasks dropped).
    """

    resumed: dict[str, Any] | None = None
    save: Callable[[dict[str, Any]], None] = lambda progress: None
    bars: bool = False
    tally: dict[str, int] = field(default_factory=dict)


class MethodRun(ABC):
    """One method on one seed, as a protocol defines it; the trainer drives it.

    ``learner`` holds every tensor that changes (a checkpoint is its state, its extra state,
    the run's :meth:`state` and the step count: random streams derive from (seed, purpose,
    step, task), so nothing else is needed to resume). ``meta_steps``, ``eval_every`` and
    ``checkpoint_every`` set the schedule; :meth:`stopped` may end it early.
    """

    method: str
    seed: int
    learner: Learner
    meta_steps: int
    eval_every: int
    checkpoint_every: int
    #: Whether the run needs every process (its meta-step or evaluation is shared among
    #: them); under torchrun, consecutive runs that do not are shared out whole, one process
    #: each (:func:`metaleap.protocols.trainer.run_study`).
    collective: bool = True
    #: Whether the evaluation needs no other process and saves no progress (one held-out
    #: task); under torchrun, the evaluations of consecutive meta-trained runs are then
    #: shared out, one process each (:func:`metaleap.protocols.trainer.run_study`).
    evaluation_alone: bool = False

    @property
    def key(self) -> str:
        return f"seed{self.seed}-{self.method}"

    @abstractmethod
    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        """Meta-step number ``step`` (0-based); returns its metrics."""

    @abstractmethod
    def validate(self, step: int) -> dict[str, Any] | None:
        """The validation record after ``step`` meta-steps, or None without validation."""

    @abstractmethod
    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        """The (seed, method) result: held-out tasks trained from the initialization."""

    @abstractmethod
    def export_metadata(self) -> dict[str, str]:
        """Metadata stored with the exported initialization (safetensors header)."""

    def state(self) -> dict[str, Any]:
        """The run's own state beside the learner's (plain data, checkpointed with it), e.g.
        an early-stopping counter; none by default."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint; a run that keeps none refuses some."""
        if state:
            raise CheckpointError(f"checkpoints/{self.key}.pt holds run state this protocol "
                                  "never saves")

    def stopped(self) -> bool:
        """Whether meta-training ends before ``meta_steps`` (early stopping); the trainer asks
        after every meta-step."""
        return False


class StudyProtocol(ABC):
    """A protocol bound to its configuration, data, device and processes: its runs."""

    name: ClassVar[str]
    device: torch.device
    processes: Processes = ONE_PROCESS

    @abstractmethod
    def config_record(self) -> dict[str, Any]:
        """The resolved configuration, as written to ``config.json``."""

    @abstractmethod
    def data_identity(self) -> dict[str, Any]:
        """What identifies the data: resuming on other data is refused."""

    def data_digest(self) -> dict[str, Any] | None:
        """What the data's bytes are: ``{"sha256": ..., ...}`` with per-task digests beside
        it, recorded in ``provenance.json`` as ``data_content`` (resuming on data whose
        ``sha256`` differs is refused), or ``None`` where the data are not stored bytes (the
        default)."""
        return None

    @abstractmethod
    def runs(self) -> Iterator[MethodRun]:
        """Every (seed, method) run, in order."""

    def notes(self) -> list[str]:
        """Lines the command prints before the study runs (none by default)."""
        return []


def digest_of(parts: dict[str, str]) -> str:
    """One SHA-256 of named digests (``name\tdigest`` lines, in the given order)."""
    return hashlib.sha256("".join(f"{name}\t{digest}\n" for name, digest in parts.items())
                          .encode()).hexdigest()


def taskset_digest(taskset: Any) -> dict[str, Any] | None:
    """:meth:`StudyProtocol.data_digest` of a task set: its own ``content_digest()`` if it has
    one (the glyph alphabets), else a SHA-256 of each task's ``images(index)`` and one of
    those (``sha256``), else ``None`` (a task set that exposes no images, or whose images do
    not stack into one tensor per task)."""
    own = getattr(taskset, "content_digest", None)
    if callable(own):
        return own()
    images = getattr(taskset, "images", None)
    if not callable(images):
        return None
    try:
        tasks = {name: hashlib.sha256(images(i).contiguous().cpu().numpy()).hexdigest()
                 for i, name in enumerate(taskset.names)}
    except DataError:  # e.g. Omniglot characters with different numbers of drawings
        return None
    return {"sha256": digest_of(tasks), "alphabets": tasks}


class SeedTasks(Generic[K]):
    """One seed's tasks on a device, each built on first use (``build(key, seed)``) and kept
    until another seed is asked for: a study runs its seeds one after another."""

    def __init__(self, build: Callable[[K, int], Task], device: torch.device) -> None:
        self.build, self.device = build, device
        self._tasks: dict[K, Task] = {}
        self._seed: int | None = None

    def get(self, key: K, seed: int) -> Task:
        if seed != self._seed:
            self._tasks, self._seed = {}, seed
        if key not in self._tasks:
            self._tasks[key] = self.build(key, seed).to(self.device)
        return self._tasks[key]


def meta_batch_picks(pool: int, size: int, seed: int, step: int) -> list[int]:
    """Positions in a pool of ``pool`` pretraining tasks forming meta-step ``step``'s batch
    (``size`` at most): the stream (seed, "meta-batch", step), identical for every method."""
    order = torch.randperm(pool, generator=seeding.generator(seed, "meta-batch", step))
    return order[:min(size, pool)].tolist()
