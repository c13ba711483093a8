"""The transfer protocol's configuration and presets (free of torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from metaleap.choices import AUGMENT_RESAMPLE, BLOCK_ORDERS, TASK_BATCHING
from metaleap.protocols.config import (
    ConfigError,
    MethodConfig,
    at_least,
    positive,
    resolve_preset,
)

#: The smallest image the convnet's four 2× max-pools accept.
MIN_IMAGE_SIZE = 16


@dataclass
class TransferConfig(MethodConfig):
    """Every number of the transfer protocol (docs/experiments.md); one source of truth per run."""

    PROTOCOL: ClassVar[str] = "transfer"
    TITLE: ClassVar[str] = "transfer"
    PER_METHOD: ClassVar[tuple[str, ...]] = ("inner_steps", "inner_lr", "meta_batch",
                                             "meta_steps")

    data: str = "glyphs"
    """the alphabets: "glyphs" (rendered offline, data version 1), "glyphs:v2" (version 2),
    "omniglot" (the folder `metaleap data omniglot --download` fills) or "omniglot:PATH" (the
    standard layout)"""
    methods: list[str] = field(default_factory=lambda: TransferConfig.supported())
    """the methods to compare (default: every registered method this protocol runs; see
    ``metaleap.methods``)"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """one full study per seed: split, initial weights and every data stream"""
    num_pretrain: int = 20
    """N, the number of pretraining tasks"""
    num_heldout: int = 10
    """evaluation tasks, fixed per seed whatever N is"""
    num_val: int = 5
    """validation tasks (meta-training curves), fixed per seed whatever N is"""
    ways: int = 20
    """classes per task (characters drawn from the alphabet)"""
    train_per_class: int = 15
    """training images per class"""
    test_per_class: int = 5
    """held-out images per class, for the test error"""
    image_size: int = 28
    """image height and width in pixels (at least 16)"""
    block_order: str = "pool-bn-relu"
    """what follows each conv of the convnet: "pool-bn-relu" (max-pool, BatchNorm, ReLU: the
    authors' 2019 code, which produced the paper's numbers) or "bn-relu-pool" (BatchNorm, ReLU,
    max-pool: metaleap 0.2 and every glyph study committed before the fidelity study)"""
    channels_last: bool = True
    """store the conv weights channels-last: faster on the CPU, float sums differ in their
    last bits; false gives the NCHW numbers of metaleap 0.2 bit for bit"""
    augment: bool = True
    """augment every training image: rotation 0–360°, translation ±20 %, scale 0.8–1.2"""
    augment_resample: str = "nearest"
    """how augmentation resamples the warped image: "nearest" (the authors' 2019 code) or
    "bilinear" (every glyph study committed before this setting; smoother images)"""
    batch_size: int = 20
    """images per inner step"""
    inner_steps: int = 100
    """K, SGD steps per pretraining task and meta-step (per method: maml.inner_steps=5)"""
    inner_lr: float = 0.1
    """learning rate of the inner SGD (and of finetuning's pretraining)"""
    meta_batch: int = 20
    """tasks per meta-step (capped at N)"""
    meta_steps: int = 1000
    """meta-training steps"""
    eval_steps: int = 100
    """K when training a held-out or validation task"""
    eval_lr: float = 0.1
    """learning rate of the held-out tasks' SGD"""
    eval_every: int = 100
    """validation curves every this many meta-steps (and before the first)"""
    checkpoint_every: int = 10
    """checkpoint every this many meta-steps"""
    heldout_at: list[int] = field(default_factory=list)
    """also evaluate the held-out tasks after these meta-steps (a budget curve from one run;
    the end is always evaluated)"""
    task_batching: str = "auto"
    """train a meta-batch's tasks (Leap, Reptile, FOMAML) and the held-out tasks as one
    computation: "on", "off", or "auto" (on for CUDA only); equal to "off" up to float rounding"""
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sparse per-method settings: protocol fields above or the method's options"""

    def check(self) -> None:
        """Reject impossible settings (for every method) before any data is read."""
        self.check_methods()
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise ConfigError("seeds must be non-empty and must not repeat")
        at_least(self, 1, "num_pretrain", "num_heldout", "train_per_class", "test_per_class",
                 "batch_size", "eval_steps", "eval_every", "checkpoint_every")
        at_least(self, 0, "num_val")
        at_least(self, 2, "ways")
        at_least(self, MIN_IMAGE_SIZE, "image_size")
        if self.block_order not in BLOCK_ORDERS:
            raise ConfigError(f"block_order must be {' or '.join(BLOCK_ORDERS)}, "
                              f"got {self.block_order!r}")
        positive(self, "eval_lr")
        if self.augment_resample not in AUGMENT_RESAMPLE:
            raise ConfigError(f"augment_resample must be {' or '.join(AUGMENT_RESAMPLE)}, "
                              f"got {self.augment_resample!r}")
        if self.task_batching not in TASK_BATCHING:
            raise ConfigError(f"task_batching must be one of {', '.join(TASK_BATCHING)}, got "
                              f"{self.task_batching!r}")
        if sorted(set(self.heldout_at)) != self.heldout_at:
            raise ConfigError(f"heldout_at must increase strictly, got {self.heldout_at}")
        self.check_each_method(self._check_method)

    def _check_method(self, cfg: TransferConfig) -> None:
        """One method's protocol fields (``for_method``)."""
        at_least(cfg, 1, "inner_steps", "meta_batch")
        at_least(cfg, 0, "meta_steps")
        positive(cfg, "inner_lr")
        if self.heldout_at and not 0 < self.heldout_at[0] <= self.heldout_at[-1] \
                < cfg.meta_steps:
            raise ConfigError(f"heldout_at {self.heldout_at} must lie strictly between 0 and "
                              f"meta_steps ({cfg.meta_steps})")


#: The value of each setting added since runs were first recorded, for a run whose
#: ``config.json`` predates it: what that run did (every glyph study before
#: ``augment_resample`` resampled bilinearly).
RECORDED_BEFORE: dict[str, Any] = {"augment_resample": "bilinear"}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's numbers: FOMAML's meta lr 0.5 and MAML's 5 inner steps (docs/experiments.md).
    "omniglot-paper": dict(seeds=list(range(10)), per_method={
        "fomaml": {"meta_lr": 0.5}, "maml": {"inner_steps": 5}}),
    # `metaleap demo`: the budget study's N = 5, K = 20 point of seed 0 at 60 meta-steps
    # (docs/results/budget, which used block_order=bn-relu-pool), where Leap is clearly ahead
    # of no pretraining and finetuning far ahead of Leap; about a minute on 2 CPU cores.
    "demo": dict(methods=["leap", "finetune", "reptile", "scratch"], image_size=16,
                 num_pretrain=5, num_heldout=5, num_val=0, meta_batch=4, inner_steps=20,
                 meta_steps=60, checkpoint_every=5),
    # The fidelity study (docs/results/scale): the paper's meta-batch, horizon and network on
    # handwriting-like glyphs (data version 2) at 16 px, for a fifth of the paper's 1000
    # meta-steps, with held-out evaluations on the way.
    "scale": dict(data="glyphs:v2", image_size=16, methods=["leap", "finetune", "scratch"],
                  seeds=[0, 1], num_pretrain=20, num_heldout=10, num_val=0, meta_batch=20,
                  inner_steps=100, meta_steps=200, heldout_at=[12, 48, 100],
                  checkpoint_every=2),
    # The committed glyph study (docs/results): what this 2-core machine allows in an hour.
    "glyphs-small": dict(seeds=[0, 1], num_heldout=5, num_val=2, meta_batch=4, inner_steps=20,
                         meta_steps=15, eval_steps=50, eval_every=5, checkpoint_every=5,
                         per_method={"fomaml": {"meta_lr": 0.5}, "maml": {"inner_steps": 5}}),
    # The budget study (docs/results/budget): held-out AUC after 15, 60 and 240 meta-steps of
    # one run per (method, seed), at 16 px so that this 2-core machine reaches 240 meta-steps.
    "budget": dict(methods=["leap", "finetune", "reptile", "scratch"], seeds=[0, 1],
                   image_size=16, num_heldout=5, num_val=0, meta_batch=4, inner_steps=20,
                   meta_steps=240, heldout_at=[15, 60], checkpoint_every=5),
    # Seconds: for tests and smoke checks.
    "tiny": dict(methods=["leap", "scratch"], num_pretrain=2, num_heldout=2, num_val=1,
                 ways=5, meta_batch=2, inner_steps=3, meta_steps=2, eval_steps=3,
                 eval_every=1, checkpoint_every=1),
}


def resolve_config(preset: str = "omniglot-paper", overrides: Sequence[str] = (),
                   **fields: Any) -> TransferConfig:
    """A preset, then ``fields``, then ``key=value`` overrides, checked."""
    return resolve_preset(TransferConfig, PRESETS, preset, overrides, **fields)


def sweep_configs(preset: str, overrides: Sequence[str], ns: str,
                  **fields: Any) -> dict[int, TransferConfig]:
    """One checked config per N of the comma-separated ``ns`` (paper Fig. 2, right)."""
    if any(o.partition("=")[0] == "num_pretrain" for o in overrides) or "num_pretrain" in fields:
        raise ConfigError("a sweep sets num_pretrain from --ns: do not --set it")
    try:
        values = sorted({int(n) for n in ns.split(",") if n.strip()})
    except ValueError:
        raise ConfigError(f"--ns expects integers like 1,5,20, got {ns!r}") from None
    if not values:
        raise ConfigError("--ns names no N")
    return {n: resolve_config(preset, overrides, num_pretrain=n, **fields) for n in values}
