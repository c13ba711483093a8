"""The names a configuration chooses from, free of torch so that configs resolve without it.

Each list belongs to the module that acts on it (named beside it); configs check against it
before anything heavy is imported, so ``metaleap settings`` starts in a fraction of a second.
"""

from __future__ import annotations

#: What follows each 3×3 convolution of :class:`metaleap.models.ConvNet`: ``"bn-relu-pool"``
#: (BatchNorm, ReLU, max-pool) or ``"pool-bn-relu"`` (max-pool, BatchNorm, ReLU: the authors'
#: 2019 code, where BatchNorm and ReLU see a quarter of the activations).
BLOCK_ORDERS = ("bn-relu-pool", "pool-bn-relu")
#: How the augmentation (:class:`metaleap.tasks.augment.RandomAffine`) resamples a warped
#: image: ``"nearest"`` (the authors' 2019 code: torchvision 0.2.1's ``RandomAffine`` on PIL
#: images) or ``"bilinear"`` (metaleap's only resampling before the setting existed, so every
#: glyph study committed before it).
AUGMENT_RESAMPLE = ("nearest", "bilinear")
#: ``--task-batching`` (:func:`metaleap.protocols.batched.use_task_batching`).
TASK_BATCHING = ("auto", "on", "off")
#: The Multi-CV data sets, in their default order (their loaders:
#: :data:`metaleap.tasks.multicv.DATASETS`, whose keys are these, in this order).
MULTICV_DATASETS = ("fashion_mnist", "mnist", "animal_mnist", "digits", "hiragana",
                    "glyphs_latin", "glyphs_greek")
#: Leap's path metric (:class:`metaleap.Leap`): the length (p = 1) or the energy (p = 2).
LEAP_METRICS = ("length", "energy")
#: Leap's policy for BatchNorm statistics: reset to θ⁰'s at each task, or averaged.
LEAP_BUFFERS = ("reset", "average")


def check_leap_options(metric: str, loss_term: bool, stabilizer: bool, buffers: str) -> None:
    """Raise ``ValueError`` naming the first impossible combination of Leap's options: the one
    check that :class:`metaleap.Leap` and its registry options both run."""
    if metric not in LEAP_METRICS:
        raise ValueError(f"metric must be 'length' or 'energy', got {metric!r}")
    if buffers not in LEAP_BUFFERS:
        raise ValueError(f"buffers must be 'reset' or 'average', got {buffers!r}")
    if stabilizer and not loss_term:
        raise ValueError("stabilizer needs loss_term (it acts on the loss term)")
