"""The methods that give new tasks their initialization, behind one interface (docs/experiments.md).

``METHODS`` maps a method's name to its class; each class carries its ``label``, ``color``
and ``Options`` dataclass (one field per setting, each with a docstring).
:func:`make_metalearner` builds one from those options plus the :class:`Context` every
protocol provides. ``SEQUENTIAL`` holds the baselines that learn tasks in sequence inside one
network instead of handing on an initialization (Progressive Nets, HAT; see
:mod:`metaleap.metalearners.sequential`); ``ALL_METHODS`` is both, for names, labels, colours
and options.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    Context,
    MetaLearner,
    MetaOptions,
    TaskHandle,
    TaskStream,
)
from metaleap.metalearners.finetune import Finetune, FinetuneOptions
from metaleap.metalearners.fomaml import FOMAML
from metaleap.metalearners.hat import HAT, HATOptions
from metaleap.metalearners.leap import LeapLearner, LeapOptions
from metaleap.metalearners.maml import MAML
from metaleap.metalearners.progressive import ProgressiveNets, ProgressiveOptions
from metaleap.metalearners.reptile import Reptile
from metaleap.metalearners.scratch import Scratch
from metaleap.metalearners.sequential import SequentialLearner, SequentialTask
from metaleap.metalearners.supervised import SupervisedMetaStep

__all__ = ["ALL_METHODS", "FOMAML", "HAT", "MAML", "METHODS", "SEQUENTIAL", "Context",
           "Finetune", "FinetuneOptions", "HATOptions", "LeapLearner", "LeapOptions",
           "MetaLearner", "MetaOptions", "ProgressiveNets", "ProgressiveOptions", "Reptile",
           "Scratch", "SequentialLearner", "SequentialTask", "SupervisedMetaStep", "TaskHandle",
           "TaskStream", "make_metalearner", "make_options"]

METHODS: dict[str, type[MetaLearner]] = {
    cls.name: cls for cls in (LeapLearner, Reptile, FOMAML, MAML, Finetune, Scratch)}
SEQUENTIAL: dict[str, type[SequentialLearner]] = {
    cls.name: cls for cls in (ProgressiveNets, HAT)}
ALL_METHODS: dict[str, type[MetaLearner] | type[SequentialLearner]] = {**METHODS, **SEQUENTIAL}


def method_class(name: str) -> type[MetaLearner]:
    """The class registered under ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def make_options(name: str, **fields: Any) -> Any:
    """Method ``name``'s options dataclass (any of ``ALL_METHODS``) from ``fields``, checked
    (``ValueError`` if not)."""
    if name not in ALL_METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
    cls = ALL_METHODS[name].Options
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(known)) or 'none'}")
    options = cls(**fields)
    options.check()
    return options


def make_metalearner(name: str, model: nn.Module, context: Context = DEFAULT_CONTEXT,
                     **options: Any) -> MetaLearner:
    """Build method ``name`` (a key of :data:`METHODS`) around a network of the tasks' shape.

    ``options`` are fields of the method's ``Options`` (e.g. ``metric="energy"``,
    ``meta_optimizer="adam"``); an unknown or impossible one is a ``ValueError``.

    Example::

        learner = make_metalearner("leap", make_convnet(20, seed), meta_lr=0.1)
    """
    return method_class(name)(model, make_options(name, **options), context)
