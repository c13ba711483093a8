"""The methods that give new tasks their initialization, behind one interface
(docs/experiments.md).

Every method has one entry in the registry (:mod:`metaleap.methods`): its name, display
name, colour, options dataclass, kind and protocols. A meta-batch method's class is a
:class:`MetaLearner`; :func:`make_metalearner` builds one from its options plus the
:class:`Context` every protocol provides. The baselines that learn tasks in sequence inside
one network instead of handing on an initialization (Progressive Nets, HAT) are
:class:`SequentialLearner` (:mod:`metaleap.metalearners.sequential`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metaleap import methods
from metaleap.metalearners.base import (
    DEFAULT_CONTEXT,
    Context,
    MetaBatchTask,
    MetaLearner,
    TaskHandle,
    TaskRun,
)
from metaleap.metalearners.finetune import Finetune
from metaleap.metalearners.fomaml import FOMAML
from metaleap.metalearners.hat import HAT
from metaleap.metalearners.leap import LeapLearner
from metaleap.metalearners.maml import MAML
from metaleap.metalearners.progressive import ProgressiveNets
from metaleap.metalearners.reptile import Reptile
from metaleap.metalearners.scratch import Scratch
from metaleap.metalearners.sequential import SequentialLearner, SequentialTask
from metaleap.metalearners.supervised import SupervisedMetaStep, TaskStream

__all__ = ["FOMAML", "HAT", "MAML", "Context", "Finetune", "LeapLearner",
           "MetaBatchTask", "MetaLearner", "ProgressiveNets", "Reptile",
           "Scratch", "SequentialLearner", "SequentialTask", "SupervisedMetaStep",
           "TaskHandle", "TaskRun", "TaskStream", "make_metalearner"]


def make_metalearner(name: str, model: nn.Module, context: Context = DEFAULT_CONTEXT,
                     **options: Any) -> MetaLearner:
    """Build meta-batch method ``name`` (registered in :mod:`metaleap.methods`) around a
    network of the tasks' shape.

    ``options`` are fields of the method's options (e.g. ``metric="energy"``,
    ``meta_optimizer="adam"``); an unknown or impossible one is a ``ValueError``.

    Example::

        learner = make_metalearner("leap", make_convnet(20, seed), meta_lr=0.1)
    """
    method = methods.get(name)
    if method.kind != methods.META_BATCH:
        raise ValueError(f"{name} learns tasks in sequence: build it as a SequentialLearner")
    return method.load()(model, methods.make_options(name, **options), context)
