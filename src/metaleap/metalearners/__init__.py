"""The methods that give new tasks their initialization, behind one interface (SPEC §2.1).

``METHODS`` maps a method's name to its class; :func:`make_metalearner` builds one from the
arguments every protocol has (learning rates, number of pretraining tasks, seed) plus the
method's own options.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from metaleap.metalearners.base import MetaLearner, TaskStream
from metaleap.metalearners.finetune import Finetune
from metaleap.metalearners.fomaml import FOMAML
from metaleap.metalearners.leap import LeapLearner
from metaleap.metalearners.maml import MAML
from metaleap.metalearners.reptile import Reptile
from metaleap.metalearners.scratch import Scratch

__all__ = ["FOMAML", "MAML", "METHODS", "Finetune", "LeapLearner", "MetaLearner", "Reptile",
           "Scratch", "TaskStream", "make_metalearner"]

METHODS: dict[str, type[MetaLearner]] = {
    cls.name: cls for cls in (LeapLearner, Reptile, FOMAML, MAML, Finetune, Scratch)}


def make_metalearner(name: str, model: nn.Module, *, inner_lr: float = 0.1,
                     meta_lr: float = 0.1, num_tasks: int = 1, seed: int = 0,
                     **options: Any) -> MetaLearner:
    """Build method ``name`` (a key of :data:`METHODS`) around the working ``model``.

    The common arguments go to the methods whose constructor takes them (``seed`` and
    ``num_tasks``: finetuning's heads; the learning rates: all but ``scratch``); ``options``
    are the method's own keywords (e.g. ``metric="energy"``, ``meta_optimizer="adam"``,
    ``exclude=lambda n: n.startswith("head.")``) and an unknown one is an error.

    Example::

        model = make_convnet(20, seed)
        learner = make_metalearner("leap", model, inner_lr=0.1, meta_lr=0.1)
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    cls = METHODS[name]
    accepted = inspect.signature(cls.__init__).parameters
    common = {"inner_lr": inner_lr, "meta_lr": meta_lr, "num_tasks": num_tasks, "seed": seed}
    return cls(model, **{k: v for k, v in common.items() if k in accepted}, **options)
