"""The Multi-CV protocol's configuration and presets (free of torch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from metaleap import methods
from metaleap.choices import BLOCK_ORDERS, MULTICV_DATASETS
from metaleap.protocols.config import (
    ConfigError,
    MethodConfig,
    at_least,
    positive,
    resolve_preset,
)


def holdouts(datasets: Sequence[str], holdout: Sequence[str]) -> list[str]:
    """The held-out data sets of ``holdout`` (``["all"]``: every one of ``datasets``)."""
    return list(datasets) if list(holdout) == ["all"] else list(holdout)


#: Leap's Multi-CV settings (docs/multicv.md); Reptile and FOMAML get the same meta-optimizer.
META_ADAM = {"meta_optimizer": "adam", "meta_lr": 0.01}


@dataclass
class MultiCVConfig(MethodConfig):
    """Every number of the Multi-CV protocol (docs/multicv.md); one source of truth per run."""

    PROTOCOL: ClassVar[str] = "multicv"
    TITLE: ClassVar[str] = "Multi-CV"
    KINDS: ClassVar[frozenset[str]] = frozenset({methods.META_BATCH, methods.SEQUENTIAL})
    PER_METHOD: ClassVar[tuple[str, ...]] = ("inner_lr", "meta_steps", "meta_patience")

    datasets: list[str] = field(default_factory=lambda: list(MULTICV_DATASETS))
    """the data sets, each one task (names of :data:`metaleap.choices.MULTICV_DATASETS`)"""
    holdout: list[str] = field(default_factory=lambda: ["all"])
    """the held-out data sets, one leave-one-out run each; "all": every data set in turn"""
    methods: list[str] = field(default_factory=lambda: MultiCVConfig.supported())
    """the methods to compare (default: every registered method this protocol runs: the
    meta-learners, finetune, scratch, and the sequential progressive and hat)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """one study per seed: splits, initial weights, heads and every batch stream"""
    data_seed: int = 0
    """draws the drawn data sets (hiragana, glyphs) once, the same for every seed"""
    max_train: int = 5000
    """training images per data set, at most"""
    max_val: int = 1000
    """validation images per data set, at most (early stopping)"""
    max_test: int = 1000
    """test images per data set, at most (the held-out test error)"""
    channels: int = 64
    """channels of every conv block of the encoder"""
    blocks: int = 4
    """conv blocks of the encoder (28×28 images allow up to 4)"""
    block_order: str = "bn-relu-pool"
    """what follows each conv of the encoder (not HAT's or progressive nets'): "bn-relu-pool"
    (BatchNorm, ReLU, max-pool) or "pool-bn-relu" (max-pool, BatchNorm, ReLU: the authors'
    2019 code)"""
    channels_last: bool = True
    """store the conv weights channels-last: faster on the CPU, float sums differ in their
    last bits; false gives the NCHW numbers of metaleap 0.2 bit for bit"""
    batch_size: int = 32
    """images per SGD step"""
    inner_lr: float = 0.1
    """initial learning rate of every task's SGD, cosine-annealed to 0 over max_epochs"""
    max_epochs: int = 10
    """epochs a task trains at most (of its own training split)"""
    val_every: int = 50
    """SGD steps between two validations of a task (and one before the first step)"""
    patience: int = 10
    """validations without a new best validation error that stop a task"""
    meta_steps: int = 100
    """meta-steps (finetuning: rounds over the pretraining data sets), at most"""
    meta_patience: int = 10
    """meta-steps without a lower mean validation error that stop meta-training"""
    checkpoint_every: int = 1
    """checkpoint every this many meta-steps (sequential baselines: pretraining tasks)"""
    per_method: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "leap": {"metric": "energy", **META_ADAM}, "reptile": dict(META_ADAM),
        "fomaml": dict(META_ADAM)})
    """sparse per-method settings: inner_lr, meta_steps, meta_patience or the method's
    options"""

    def holdouts(self) -> list[str]:
        """The held-out data sets, ``"all"`` resolved."""
        return holdouts(self.datasets, self.holdout)

    def check(self) -> None:
        """Reject impossible settings (for every method) before any data is read."""
        self.check_methods()
        unknown = [d for d in self.datasets if d not in MULTICV_DATASETS]
        if unknown:  # perhaps a loader registered at run time; its registry imports torch
            from metaleap.tasks.multicv import DATASETS

            unknown = [d for d in unknown if d not in DATASETS]
            if unknown:
                raise ConfigError(f"unknown data set(s) {unknown}; "
                                  f"choose from {', '.join(DATASETS)}")
        for name in ("seeds", "datasets", "holdout"):
            values = getattr(self, name)
            if not values or len(set(values)) < len(values):
                raise ConfigError(f"{name} must be non-empty and must not repeat")
        if len(self.datasets) < 2:
            raise ConfigError("leave-one-out needs at least two data sets")
        outside = [h for h in self.holdouts() if h not in self.datasets]
        if outside:
            raise ConfigError(f"held-out data set(s) {outside} are not among datasets "
                              f"({', '.join(self.datasets)}); or use holdout=all")
        at_least(self, 1, "max_train", "max_val", "max_test", "channels", "blocks",
                 "batch_size", "max_epochs", "val_every", "patience", "checkpoint_every")
        if self.blocks > 4:
            raise ConfigError(f"28×28 images allow at most 4 blocks, got {self.blocks}")
        if self.block_order not in BLOCK_ORDERS:
            raise ConfigError(f"block_order must be {' or '.join(BLOCK_ORDERS)}, "
                              f"got {self.block_order!r}")
        self.check_each_method(self._check_method)
        moot = [f"{m}.{k}" for m, over in self.per_method.items()
                if m in methods.METHODS and methods.get(m).kind == methods.SEQUENTIAL
                for k in ("meta_steps", "meta_patience") if k in over]
        if moot:
            raise ConfigError(f"{', '.join(moot)}: a sequential method (Progressive Nets, "
                              "HAT) learns each pretraining data set once, with no meta-steps")

    @staticmethod
    def _check_method(cfg: MultiCVConfig) -> None:
        """One method's protocol fields (``for_method``)."""
        at_least(cfg, 0, "meta_steps")
        at_least(cfg, 1, "meta_patience")
        positive(cfg, "inner_lr")

    def without(self, missing: dict[str, str]) -> MultiCVConfig:
        """This config on the data sets not in ``missing`` (name → why it is missing)."""
        asked = [h for h in self.holdout if h in missing]
        if asked:
            raise ConfigError(f"the held-out data set {asked[0]} is not installed: "
                              f"{missing[asked[0]]}")
        kept = [d for d in self.datasets if d not in missing]
        if len(kept) < 2:
            raise ConfigError(f"leave-one-out needs two installed data sets, found "
                              f"{kept or 'none'}: {'; '.join(missing.values())}")
        cfg = dataclasses.replace(self, datasets=kept)
        cfg.check()
        return cfg


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's budget where docs/multicv.md gives it (energy metric, Adam 0.01, the meta-batch
    # all pretraining sets, patience 10 inner and meta); the epochs, validation interval and
    # meta-step cap are ours (appendix G is not available offline).
    "multicv-paper": dict(seeds=list(range(10))),
    # The committed study: every data set held out in turn, 3 seeds, every method, about 45
    # minutes on one CPU core of this machine (see docs/multicv.md for the timing).
    "multicv-small": dict(max_train=640, max_val=64, max_test=500, channels=16,
                          max_epochs=2, val_every=3, meta_steps=5),
    # Seconds: tests and smoke checks.
    "tiny": dict(datasets=["digits", "animal_mnist", "mnist"], holdout=["digits"], seeds=[0],
                 max_train=40, max_val=10, max_test=20, channels=4, batch_size=8,
                 max_epochs=1, val_every=2, patience=2, meta_steps=2, meta_patience=2),
}


def resolve_config(preset: str = "multicv-small", overrides: Sequence[str] = (),
                   **fields: Any) -> MultiCVConfig:
    """A preset, then ``fields``, then ``key=value`` overrides, checked."""
    return resolve_preset(MultiCVConfig, PRESETS, preset, overrides, **fields)
