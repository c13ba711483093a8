"""The method registry: one entry per method, the single source of what it is.

An entry (:class:`Method`) names the method, gives its one display name and colour, its
options dataclass (one field per setting, each with a docstring), its kind, the protocols it
runs in and whether studies compare every other method with it. Protocols, reports, the
budget study and the CLI filter this registry; none of them lists method names. The learner
class is named by its import path and loaded on first use, so this module (and with it
config resolution, ``metaleap settings`` and ``--help``) needs no torch.

Adding a method is one :func:`register` call (see ``docs/architecture.md``)::

    register(Method("mine", "My method", "tab:olive", MetaOptions, Mine,
                    protocols=frozenset({"transfer"})))
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from metaleap.choices import check_leap_options

#: A method handing new tasks an initialization, meta-trained on meta-batches of tasks
#: (:class:`metaleap.metalearners.MetaLearner`).
META_BATCH = "meta-batch"
#: A method learning tasks one after another inside one network
#: (:class:`metaleap.metalearners.SequentialLearner`).
SEQUENTIAL = "sequential"


# ------------------------------------------------------------------------ options
@dataclass
class NoOptions:
    """A method without settings."""

    def check(self) -> None:
        """Nothing to check."""


@dataclass
class MetaOptions:
    """Settings of a method that steps θ⁰ with a meta-optimizer."""

    meta_lr: float = 0.1
    """learning rate of the meta-optimizer (0.1 in docs/experiments.md; the paper's FOMAML
    used 0.5)"""
    meta_optimizer: str = "sgd"
    """the meta-optimizer over θ⁰: "sgd" (the paper's Omniglot choice) or "adam" (Multi-CV)"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not (math.isfinite(self.meta_lr) and self.meta_lr > 0):
            raise ValueError(f"meta_lr must be a positive number, got {self.meta_lr}")
        if self.meta_optimizer not in ("sgd", "adam"):
            raise ValueError(f"meta_optimizer must be 'sgd' or 'adam', got "
                             f"{self.meta_optimizer!r}")


@dataclass
class LeapOptions(MetaOptions):
    """Leap's settings (docs/leap.md); the meta-optimizer's as :class:`MetaOptions`."""

    metric: str = "length"
    """"length" (p = 1, the paper's choice) or "energy" (p = 2) of the learning path"""
    loss_term: bool = True
    """include the loss coordinate f(θ) in the path γ = (θ, f(θ))"""
    stabilizer: bool = True
    """use −|Δf| for Δf, so a step where the loss rose still pulls along −∇f (needs loss_term)"""
    buffers: str = "reset"
    """BatchNorm statistics: "reset" to θ⁰'s at each task, or "average" the tasks' final ones"""

    def check(self) -> None:
        super().check()
        check_leap_options(self.metric, self.loss_term, self.stabilizer, self.buffers)


@dataclass
class FinetuneOptions:
    """Settings of the pretraining SGD (its learning rate is the protocol's inner lr)."""

    momentum: float = 0.0
    """momentum of each pretraining task's SGD (0: plain SGD, as the inner loops of the other
    methods); a task's momentum starts from zero at every meta-step"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")


@dataclass
class ProgressiveOptions:
    """Settings of progressive networks."""

    alpha: float = 0.1
    """the adapters' scales α start uniform in [0, alpha) ("a random small value")"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {self.alpha}")


@dataclass
class HATOptions:
    """HAT's settings (the paper's values)."""

    s_max: float = 400.0
    """the largest gate scale s_max: the evaluation gate is σ(s_max e)"""
    c: float = 0.75
    """strength c of the attention regulariser, eq. (5)"""
    clamp: float = 6.0
    """embeddings are clamped to ±clamp after each step"""

    def check(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not (math.isfinite(self.s_max) and self.s_max >= 1):
            raise ValueError(f"s_max must be at least 1, got {self.s_max}")
        if not (math.isfinite(self.c) and self.c >= 0):
            raise ValueError(f"c must be a non-negative number, got {self.c}")
        if not (math.isfinite(self.clamp) and self.clamp > 0):
            raise ValueError(f"clamp must be a positive number, got {self.clamp}")


# ------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Method:
    """What a method is, for every protocol, report and command."""

    name: str
    """the name in configs, ``--set NAME.key=value``, run keys and results.json"""
    label: str
    """the one display name of tables, plots and generated sentences"""
    color: str
    """its matplotlib colour in every plot"""
    options: type
    """its options dataclass: one field per setting, a docstring under each, ``check()``"""
    learner: str | type
    """its class, or ``"module:Class"`` imported on first use (:meth:`load`): the built-in
    methods name theirs, so that configs resolve without torch"""
    kind: str = META_BATCH
    """:data:`META_BATCH` or :data:`SEQUENTIAL`"""
    protocols: frozenset[str] | None = None
    """the protocols it runs in; ``None``: every protocol that runs its kind"""
    meta_trains: bool = True
    """False for an initialization that never learns (no meta-steps are run)"""
    reference: bool = False
    """the method every other is compared with (differences are other − reference)"""
    baseline: bool = False
    """a baseline the generated sentences of the reports weigh the reference against"""
    note: str = ""
    """why it runs in no other protocol (shown when a protocol refuses it)"""

    def load(self) -> type:
        """The learner class."""
        if isinstance(self.learner, type):
            return self.learner
        module, _, name = self.learner.partition(":")
        return getattr(importlib.import_module(module), name)

    def runs_in(self, protocol: str, kinds: Collection[str]) -> bool:
        """Whether protocol ``protocol``, running methods of ``kinds``, runs this method."""
        return self.kind in kinds and (self.protocols is None or protocol in self.protocols)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (``ValueError`` if its name or a second reference is
    taken); returns it."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    if method.reference and any(m.reference for m in METHODS.values()):
        raise ValueError(f"{method.name}: the registry already has a reference method")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove method ``name`` (for tests and plugins that register temporarily)."""
    del METHODS[name]


def get(name: str) -> Method:
    """The entry of ``name``; ``ValueError`` naming the registered methods otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def reference() -> str:
    """The reference method's name."""
    return next(m.name for m in METHODS.values() if m.reference)


def runs_in(protocol: str, kinds: Collection[str]) -> list[str]:
    """The methods protocol ``protocol`` runs, in registry order."""
    return [m.name for m in METHODS.values() if m.runs_in(protocol, kinds)]


def label(name: str) -> str:
    """The display name of ``name`` (the name itself for a method no longer registered)."""
    return METHODS[name].label if name in METHODS else name


def color(name: str) -> str | None:
    """The plot colour of ``name`` (``None``: matplotlib's next)."""
    return METHODS[name].color if name in METHODS else None


def make_options(name: str, **fields: Any) -> Any:
    """Method ``name``'s options dataclass from ``fields``, checked (``ValueError`` if not)."""
    cls = get(name).options
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(known)) or 'none'}")
    options = cls(**fields)
    options.check()
    return options


_LEARNERS = "metaleap.metalearners"
for _method in (
        Method("leap", "Leap", "tab:orange", LeapOptions, f"{_LEARNERS}.leap:LeapLearner",
               reference=True),
        Method("reptile", "Reptile", "tab:green", MetaOptions, f"{_LEARNERS}.reptile:Reptile",
               protocols=frozenset({"transfer", "multicv"})),
        Method("fomaml", "FOMAML", "tab:purple", MetaOptions, f"{_LEARNERS}.fomaml:FOMAML",
               protocols=frozenset({"transfer", "multicv"})),
        Method("maml", "MAML", "tab:red", MetaOptions, f"{_LEARNERS}.maml:MAML",
               protocols=frozenset({"transfer"}),
               note="MAML cannot unroll tasks of thousands of steps"),
        Method("finetune", "Finetuning", "tab:blue", FinetuneOptions,
               f"{_LEARNERS}.finetune:Finetune", protocols=frozenset({"transfer", "multicv"}),
               baseline=True),
        Method("scratch", "No pretraining", "tab:gray", NoOptions,
               f"{_LEARNERS}.scratch:Scratch", meta_trains=False, baseline=True),
        Method("progressive", "Progressive Nets", "tab:brown", ProgressiveOptions,
               f"{_LEARNERS}.progressive:ProgressiveNets", kind=SEQUENTIAL),
        Method("hat", "HAT", "tab:pink", HATOptions, f"{_LEARNERS}.hat:HAT", kind=SEQUENTIAL)):
    register(_method)
