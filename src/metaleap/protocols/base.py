"""What every protocol shares: configurations with presets and overrides, and the run shape.

A protocol is four things: its config dataclass (every number, one source of truth, with
presets), its task source, its evaluation and its summary. It hands the generic meta-trainer
(:mod:`metaleap.protocols.trainer`) one :class:`MethodRun` per (seed, method); the trainer
owns resume, validation curves, checkpoints, the divergence check, logging and progress.

Settings are given as ``key=value`` (``--set``): a global field of the config, or
``METHOD.key=value`` for one method only, either a per-method field of the protocol (such as
``inner_steps``) or a field of the method's options dataclass (such as ``leap.metric``).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
import textwrap
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

from metaleap.leap import Contribution
from metaleap.metalearners import ALL_METHODS, MetaLearner, make_options

C = TypeVar("C")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any work is done."""


class DivergedError(RuntimeError):
    """Meta-training produced a non-finite initialization."""


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the run it should resume."""


def parse_value(text: str, like: Any, key: str) -> Any:
    """``text`` as the type of ``like`` (bool, int, float, str or a comma-separated list)."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(like, list):
            items = [t for t in text.split(",") if t]
            return [parse_value(t, like[0], key) for t in items] if like else items
        return type(like)(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected {type(like).__name__}") from None


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), bases included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_settings(cfg: Any) -> str:
    """Every setting of ``cfg``, ``key = value  # doc``: the global fields, then for each of
    its methods the per-method protocol fields and the method's options (``METHOD.key``)."""
    docs = field_docs(type(cfg))
    lines = [f"{f.name} = {getattr(cfg, f.name)!r}  # {docs.get(f.name, '')}"
             for f in dataclasses.fields(cfg) if f.name != "per_method"]
    for method in cfg.methods:
        options = cfg.options(method)
        option_docs = field_docs(type(options))
        lines += ["", f"# {ALL_METHODS[method].label}"]
        lines += [f"{method}.{k} = {getattr(cfg.for_method(method), k)!r}"
                  for k in cfg.PER_METHOD]
        lines += [f"{method}.{f.name} = {getattr(options, f.name)!r}  # "
                  f"{option_docs.get(f.name, '')}" for f in dataclasses.fields(options)]
    return "\n".join(lines)


def option_fields(method: str) -> dict[str, Any]:
    """The default options of ``method`` as a dict."""
    return dataclasses.asdict(ALL_METHODS[method].Options())


class MethodConfig:
    """Mixin for protocol configs with ``methods`` and sparse ``per_method`` settings.

    A subclass lists in ``PER_METHOD`` the protocol fields a method may override; every
    other ``METHOD.key`` must be a field of that method's options.
    """

    PER_METHOD: ClassVar[tuple[str, ...]] = ()
    methods: list[str]
    per_method: dict[str, dict[str, Any]]

    def for_method(self: C, method: str) -> C:
        """This config with ``method``'s protocol-field overrides applied."""
        over = self.per_method.get(method, {})  # type: ignore[attr-defined]
        return dataclasses.replace(self, **{k: v for k, v in over.items()  # type: ignore
                                            if k in self.PER_METHOD})  # type: ignore

    def options(self, method: str) -> Any:
        """``method``'s options dataclass, with the overrides, checked."""
        over = {k: v for k, v in self.per_method.get(method, {}).items()
                if k not in self.PER_METHOD}
        try:
            return make_options(method, **over)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{method}: {e}") from None

    def resolved_methods(self) -> dict[str, dict[str, Any]]:
        """Every method's full settings: its protocol fields and its options."""
        return {m: {**{k: getattr(self.for_method(m), k) for k in self.PER_METHOD},
                    **dataclasses.asdict(self.options(m))} for m in self.methods}


def _example(cfg: Any, key: str) -> Any:
    """A value of field ``key``'s type: its value, or for an empty list one item of the
    annotated type (``list[int]`` gives ``[0]``)."""
    value = getattr(cfg, key)
    if isinstance(value, list) and not value:
        args = typing.get_args(typing.get_type_hints(type(cfg))[key])
        return [args[0]()] if args else value
    return value


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
    """``cfg`` with ``key=value`` and ``METHOD.key=value`` overrides applied (parsed, not
    checked: see the config's ``check``)."""
    names = {f.name for f in dataclasses.fields(cfg)} - {"per_method"}  # type: ignore[arg-type]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        method, dot, sub = key.partition(".")
        if dot:
            if method not in ALL_METHODS:
                raise ConfigError(f"--set {key}: unknown method {method!r}")
            options = option_fields(method)
            per_method = cfg.PER_METHOD  # type: ignore[attr-defined]
            if sub in per_method:
                like = getattr(cfg, sub)
            elif sub in options:
                like = options[sub]
            else:
                raise ConfigError(
                    f"--set {key}: a method may override {', '.join(per_method)} or its "
                    f"options ({', '.join(options) or 'none'})")
            per = {m: dict(v) for m, v in cfg.per_method.items()}  # type: ignore[attr-defined]
            per.setdefault(method, {})[sub] = parse_value(text, like, key)
            cfg = dataclasses.replace(cfg, per_method=per)  # type: ignore[type-var]
        elif key in names:
            cfg = dataclasses.replace(  # type: ignore[type-var]
                cfg, **{key: parse_value(text, _example(cfg, key), key)})
        else:
            raise ConfigError(f"--set {key}: unknown key; known: {', '.join(sorted(names))}")
    return cfg


def resolve_preset(config: Callable[..., C], presets: dict[str, dict[str, Any]], preset: str,
                   overrides: Sequence[str] = (), **fields: Any) -> C:
    """``presets[preset]``, then ``fields``, then ``key=value`` overrides (``method.key=value``
    for one method), checked by the config's ``check()``."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    cfg = dataclasses.replace(config(**presets[preset]), **fields)  # type: ignore[type-var]
    cfg = apply_overrides(cfg, overrides)
    cfg.check()  # type: ignore[attr-defined]
    return cfg


# ---------------------------------------------------------------- value checks
def at_least(cfg: Any, low: int, *names: str) -> None:
    """Each named integer field is at least ``low``."""
    for name in names:
        if getattr(cfg, name) < low:
            raise ConfigError(f"{name} must be at least {low}, got {getattr(cfg, name)}")


def positive(cfg: Any, *names: str) -> None:
    """Each named float field is a finite positive number."""
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value}")


# ---------------------------------------------------------------- the run shape
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
        first = next(iter(contribution.sums.values()))
        return contribution.unflat(self.all_sum(contribution.flat(first.device)))


ONE_PROCESS = Processes()


class Store(Protocol):
    """Where a study reports: metrics, checkpoints, results and exported initializations."""

    def log(self, record: dict[str, Any]) -> None: ...

    def save_state(self, key: str, state: dict[str, Any]) -> None: ...

    def load_state(self, key: str) -> dict[str, Any] | None: ...

    def save_result(self, key: str, result: dict[str, Any]) -> None: ...

    def load_result(self, key: str) -> dict[str, Any] | None: ...

    def export_initialization(self, key: str, tensors: dict[str, Tensor],
                              metadata: dict[str, str]) -> None: ...


class MethodRun(ABC):
    """One method on one seed, as a protocol defines it; the trainer drives it.

    ``learner`` holds every tensor that changes (a checkpoint is its state, its extra state,
    the run's :meth:`state` and the step count: random streams derive from (seed, purpose,
    step, task), so nothing else is needed to resume). ``meta_steps``, ``eval_every`` and
    ``checkpoint_every`` set the schedule; :meth:`stopped` may end it early.
    """

    method: str
    seed: int
    learner: MetaLearner
    meta_steps: int
    eval_every: int
    checkpoint_every: int

    @property
    def key(self) -> str:
        return f"seed{self.seed}-{self.method}"

    @abstractmethod
    def meta_step(self, step: int) -> dict[str, float]:
        """Meta-step number ``step`` (0-based); returns its metrics."""

    @abstractmethod
    def validate(self, step: int) -> dict[str, Any] | None:
        """The validation record after ``step`` meta-steps, or None without validation."""

    @abstractmethod
    def evaluate(self, init: dict[str, Tensor], progress: bool) -> dict[str, Any]:
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

    def save_progress(self, step: int, progress: dict[str, Any]) -> None:
        """Checkpoint ``progress`` (plain tensors and data) as the run's state inside
        meta-step ``step`` (or the evaluation, with ``step`` the meta-steps run), with the
        learner's; on resume :meth:`load_state` receives it. The trainer sets this."""
        raise RuntimeError("save_progress is set by the trainer (metaleap.protocols.trainer)")


class StudyProtocol(ABC):
    """A protocol bound to its configuration and data: its runs and their summary."""

    name: ClassVar[str]

    @abstractmethod
    def config_record(self) -> dict[str, Any]:
        """The resolved configuration, as written to ``config.json``."""

    @abstractmethod
    def data_identity(self) -> dict[str, Any]:
        """What identifies the data: resuming on other data is refused."""

    @abstractmethod
    def runs(self) -> Iterator[MethodRun]:
        """Every (seed, method) run, in order."""
