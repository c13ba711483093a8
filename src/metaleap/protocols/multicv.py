"""The Multi-CV protocol (paper §4.2 and appendix G; docs/multicv.md): leave one data set out.

Each data set of :mod:`metaleap.tasks.multicv` is one task, with its own number of classes
and its own train / validation / test split. For every held-out data set and seed, each
method pretrains on all the other data sets, then the held-out one trains from what it
learned; we record its training-error curve, the AUC of that curve, and its final train and
test errors (the paper's Table 1).

Every task, in pretraining and in the evaluation, trains the same way (:class:`InnerTraining`):
SGD with cosine annealing over at most ``max_epochs`` epochs, stopped early after
``patience`` validations in a row without a new best validation error. The network is
:class:`~metaleap.models.ConvNet`'s encoder with a fresh linear head per task, as wide as
the task's classes; the head is never part of θ⁰ (``Context.exclude``).

- Leap, Reptile and FOMAML meta-learn the encoder: a meta-step trains every pretraining data
  set from θ⁰ (the meta-batch is all of them) and steps θ⁰ with Adam (meta lr 0.01; Leap with
  the energy metric). Meta-training stops after ``meta_patience`` meta-steps without a lower
  mean validation error of the meta-batch's tasks (their early-stopping criterion), or after
  ``meta_steps``.
- Finetuning trains one encoder with a head per pretraining data set, their steps
  interleaved (one batch of each unfinished task in turn), for as many rounds as the
  meta-learners have meta-steps, under the same stopping rule; no pretraining starts from the
  seed's random encoder.
- Progressive Nets and HAT (:mod:`metaleap.metalearners.sequential`) learn the pretraining
  data sets one after another, each once with the same inner training; the held-out data
  set is then their next task (a new column; a new task's attention).

Every method sees the same data in the same order: the batches of data set D in
pretraining round r come from the stream (seed, "inner", r, D) (the sequential baselines'
single round is round 0), the held-out batches from (seed, "eval", D). Held-out runs are
keyed ``seed{S}-{method}-holdout-{D}`` in one run folder, so the generic trainer resumes any
of them; the early-stopping counter of meta-training is checkpointed with the learner, so a
resumed run stops where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import seeding, stats
from metaleap.metalearners import METHODS, SEQUENTIAL, Context, SequentialLearner, TaskHandle
from metaleap.models import BLOCK_ORDERS, ConvNet, init_linear, make_convnet
from metaleap.protocols.base import (
    ONE_PROCESS,
    ConfigError,
    MethodConfig,
    MethodRun,
    StudyProtocol,
    at_least,
    positive,
    resolve_preset,
)
from metaleap.protocols.evaluation import error_rate
from metaleap.tasks.base import Task, batches
from metaleap.tasks.errors import MissingDependencyError
from metaleap.tasks.multicv import DATASETS, LabeledImages, MultiCV

SCHEMA_VERSION = 1
#: The metrics of each held-out run (fractions; lower is better) and the reference method.
METRICS = ("test_error", "train_error", "error_auc")
REFERENCE = "leap"
MULTICV_METHODS = ("leap", "reptile", "fomaml", "finetune", "scratch", "progressive", "hat")
#: Leap's Multi-CV settings (docs/multicv.md); Reptile and FOMAML get the same meta-optimizer.
META_ADAM = {"meta_optimizer": "adam", "meta_lr": 0.01}


@dataclass
class MultiCVConfig(MethodConfig):
    """Every number of the Multi-CV protocol (docs/multicv.md); one source of truth per run."""

    PER_METHOD: ClassVar[tuple[str, ...]] = ("inner_lr", "meta_steps", "meta_patience")

    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    """the data sets, each one task (names of ``metaleap.tasks.multicv.DATASETS``)"""
    holdout: list[str] = field(default_factory=lambda: ["all"])
    """the held-out data sets, one leave-one-out run each; "all": every data set in turn"""
    methods: list[str] = field(default_factory=lambda: list(MULTICV_METHODS))
    """the methods to compare (meta-learners, finetune, scratch, progressive, hat)"""
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def holdouts(self) -> list[str]:
        """The held-out data sets, ``"all"`` resolved."""
        return list(self.datasets) if self.holdout == ["all"] else list(self.holdout)

    def check(self) -> None:
        """Reject impossible settings (for every method) before any data is read."""
        unknown = [m for m in self.methods if m not in MULTICV_METHODS]
        if unknown:
            raise ConfigError(f"the Multi-CV protocol runs {', '.join(MULTICV_METHODS)}; not "
                              f"{unknown} (MAML cannot unroll tasks of thousands of steps)")
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ConfigError(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")
        for name in ("methods", "seeds", "datasets", "holdout"):
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
        for method in self.methods:
            cfg = self.for_method(method)
            try:
                at_least(cfg, 0, "meta_steps")
                at_least(cfg, 1, "meta_patience")
                positive(cfg, "inner_lr")
            except ConfigError as e:
                raise ConfigError(f"{method}: {e}") from None
            self.options(method)
        moot = [f"{m}.{k}" for m in SEQUENTIAL for k in ("meta_steps", "meta_patience")
                if k in self.per_method.get(m, {})]
        if moot:
            raise ConfigError(f"{', '.join(moot)}: Progressive Nets and HAT learn each "
                              "pretraining data set once, with no meta-steps")

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


# ------------------------------------------------------------------------ inner training
@dataclass
class Patience:
    """Early stopping: stop after ``patience`` values in a row without a new minimum.

    A value counts as an improvement only when strictly below the best so far (a NaN never
    does). :meth:`state` is plain data, so the counter is checkpointed and resumes exactly.
    """

    patience: int
    best: float = math.inf
    since: int = 0

    def update(self, value: float) -> bool:
        """Record ``value``; True when training should stop."""
        if value < self.best:
            self.best, self.since = value, 0
        else:
            self.since += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        return self.since >= self.patience

    def state(self) -> dict[str, float | int]:
        return {"best": self.best, "since": self.since}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.since = float(state["best"]), int(state["since"])


class Trainee(Protocol):
    """One task being trained, as :class:`InnerTraining` drives it (a meta-learner's task, a
    held-out network, or a :class:`~metaleap.metalearners.SequentialTask`)."""

    def forward(self, x: Tensor) -> Tensor: ...

    def mode(self, train: bool) -> None: ...

    def loss(self, logits: Tensor, y: Tensor) -> Tensor: ...

    def backward(self, loss: Tensor) -> None: ...

    def stepped(self) -> None: ...


class ModelTrainee:
    """A network trained on cross-entropy; ``handle`` (a meta-learner's task) sees each
    step's loss after the backward pass, before the optimizer steps."""

    def __init__(self, forward: Callable[[Tensor], Tensor], module: nn.Module,
                 handle: TaskHandle | None = None) -> None:
        self._forward, self.module, self.handle = forward, module, handle

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)

    def mode(self, train: bool) -> None:
        self.module.train(train)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def backward(self, loss: Tensor) -> None:
        loss.backward()
        if self.handle is not None:
            self.handle.report(loss)

    def stepped(self) -> None:
        """Nothing after the step."""


def batches_per_epoch(task: Task, batch_size: int) -> int:
    return math.ceil(task.train_y.numel() / batch_size)


class InnerTraining:
    """One task trained by SGD with cosine annealing and early stopping (docs/multicv.md).

    At most ``max_epochs`` epochs of the task's training split, in shuffled batches from
    ``generator``; ``CosineAnnealingLR`` takes the learning rate from its initial value to 0
    over that maximum. The validation error is measured before the first step and every
    ``val_every`` steps; training stops after ``patience`` validations in a row without a
    new best, or at the maximum. One more batch of the stream, :meth:`final_batch`, gives
    f(θ^K). :meth:`advance` takes one step, so several tasks can be interleaved.

    Each step's training error is that of its batch before the step (train mode). ``curve``
    averages them over each validation interval; ``error_auc`` is the mean error over the
    maximum number of steps, the steps after an early stop counted at the last interval's
    error: the area under the training-error curve, normalised, comparable between runs
    that stopped at different times.
    """

    def __init__(self, cfg: MultiCVConfig, task: Task, trainee: Trainee,
                 optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        if task.val_x is None or task.val_y is None:
            raise ValueError(f"{task.name} has no validation split for early stopping")
        self.task, self.trainee, self.optimizer = task, trainee, optimizer
        self.val_x, self.val_y = task.val_x, task.val_y
        self.val_every = cfg.val_every
        self.max_steps = cfg.max_epochs * batches_per_epoch(task, cfg.batch_size)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.max_steps)
        self.stream = batches(task, cfg.batch_size, self.max_steps + 1, generator)
        self.patience = Patience(cfg.patience)
        self.errors: list[Tensor] = []
        self.val_errors: list[float] = []
        self.done = self._validate()

    @property
    def steps(self) -> int:
        """SGD steps taken."""
        return len(self.errors)

    def _validate(self) -> bool:
        self.trainee.mode(False)
        error = error_rate(self.trainee.forward, self.val_x, self.val_y)
        self.trainee.mode(True)
        self.val_errors.append(error)
        return self.patience.update(error)

    def advance(self) -> None:
        """One SGD step, then a validation when one is due."""
        x, y = next(self.stream)
        logits = self.trainee.forward(x)
        self.errors.append((logits.argmax(1) != y).float().mean().detach())
        self.trainee.backward(self.trainee.loss(logits, y))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.trainee.stepped()
        if self.steps % self.val_every == 0 or self.steps == self.max_steps:
            stop = self._validate()
            self.done = stop or self.steps == self.max_steps

    def run(self, progress: bool = False, desc: str = "") -> InnerTraining:
        """Train until stopped."""
        with tqdm(total=self.max_steps, desc=desc, unit="step", disable=not progress,
                  leave=False, dynamic_ncols=True) as bar:
            while not self.done:
                self.advance()
                bar.update()
        return self

    def final_batch(self) -> tuple[Tensor, Tensor]:
        """The batch after the last step, for f(θ^K)."""
        return next(self.stream)

    @property
    def curve(self) -> list[float]:
        """Mean training error of each validation interval's steps."""
        e = torch.stack(self.errors).double()
        return [float(e[i:i + self.val_every].mean()) for i in range(0, len(e),
                                                                        self.val_every)]

    @property
    def error_auc(self) -> float:
        e = torch.stack(self.errors).double()
        return (float(e.sum()) + (self.max_steps - self.steps) * self.curve[-1]) / self.max_steps

    def scores(self) -> dict[str, Any]:
        """The held-out record: errors of the final network (evaluation mode), the curves."""
        self.trainee.mode(False)
        test = error_rate(self.trainee.forward, self.task.test_x, self.task.test_y)
        train = error_rate(self.trainee.forward, self.task.train_x, self.task.train_y)
        self.trainee.mode(True)
        return {"test_error": test, "train_error": train, "error_auc": self.error_auc,
                "steps": self.steps, "max_steps": self.max_steps, "curve": self.curve,
                "val_errors": self.val_errors}


# ------------------------------------------------------------------------ the study
def missing_message(missing: dict[str, str]) -> str:
    """One line naming every missing data set, its install command and the way around it."""
    what = "; ".join(f"{name}: {why}" for name, why in missing.items())
    return (f"Multi-CV data set{'s' if len(missing) > 1 else ''} not installed ({what}); "
            "install, or pass --allow-missing to run on the other data sets")


def _per_task(name: str) -> bool:
    """Every parameter outside the encoder (the head) is the task's own, never in θ⁰."""
    return not name.startswith("encoder.")


class MultiCVStudy(StudyProtocol):
    """The protocol bound to a config, its data and a device; see the module docstring.

    Every data set is loaded (and every split checked) in the constructor, so a study that
    cannot run fails before anything is written. A data set whose optional dependency is
    missing raises :class:`MissingDependencyError` naming its install command, unless
    ``allow_missing``: then the study runs on the others, and ``left_out`` (recorded in
    ``config.json`` and the data identity) says what was left out and why.
    """

    name = "multicv"

    def __init__(self, cfg: MultiCVConfig, device: torch.device | str = "cpu",
                 allow_missing: bool = False) -> None:
        cfg.check()
        self.data = MultiCV(cfg.datasets, seed=cfg.data_seed, max_train=cfg.max_train,
                            max_val=cfg.max_val, max_test=cfg.max_test)
        self.left_out: dict[str, str] = {}
        for index, name in enumerate(cfg.datasets):
            try:
                self.data.dataset(index)
            except MissingDependencyError as e:
                self.left_out[name] = str(e)
        if self.left_out and not allow_missing:
            raise MissingDependencyError(missing_message(self.left_out))
        self.cfg = cfg.without(self.left_out) if self.left_out else cfg
        self.device, self.processes = torch.device(device), ONE_PROCESS
        self.classes = {name: self.dataset(name).num_classes for name in self.cfg.datasets}
        self._tasks: dict[str, Task] = {}
        self._tasks_seed: int | None = None
        for name in self.cfg.datasets:  # checks every split once, with the first seed
            self.task(name, self.cfg.seeds[0])

    def dataset(self, name: str) -> LabeledImages:
        return self.data.dataset(self.data.names.index(name))

    def config_record(self) -> dict[str, Any]:
        return {"protocol": self.name, "config": self.cfg.to_dict(),
                "methods": self.cfg.resolved_methods(), "left_out": self.left_out}

    def data_identity(self) -> dict[str, Any]:
        """Each data set's name, source, size, classes and a hash of its images and labels."""
        datasets = {}
        for name in self.cfg.datasets:
            data = self.dataset(name)
            digest = hashlib.sha256(data.images.contiguous().numpy().tobytes())
            digest.update(data.labels.numpy().tobytes())
            datasets[name] = {"source": data.source, "num_classes": data.num_classes,
                              "images": len(data), "sha256": digest.hexdigest()}
        return {"kind": "multicv", "data_seed": self.cfg.data_seed, "datasets": datasets,
                "left_out": sorted(self.left_out)}

    def task(self, name: str, seed: int) -> Task:
        """Data set ``name`` split by ``seed``, on the study's device (one seed is cached)."""
        if seed != self._tasks_seed:
            self._tasks, self._tasks_seed = {}, seed
        if name not in self._tasks:
            try:
                task = self.data.task(self.data.names.index(name), seed)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            self._tasks[name] = task.to(self.device)
        return self._tasks[name]

    def model(self, name: str, seed: int, *head_key: int | str) -> ConvNet:
        """The seed's encoder with a fresh head for data set ``name``, drawn from the stream
        (seed, "head", name, *head_key)."""
        cfg = self.cfg
        model = make_convnet(self.classes[name], seed, channels=cfg.channels, blocks=cfg.blocks,
                             block_order=cfg.block_order, channels_last=cfg.channels_last)
        init_linear(model.head, seeding.generator(seed, "head", name, *head_key))
        return model.to(self.device)

    def runs(self) -> Iterator[MultiCVRun]:
        for holdout in self.cfg.holdouts():
            for seed in self.cfg.seeds:
                for method in self.cfg.methods:
                    kind = SequentialRun if method in SEQUENTIAL else MetaRun
                    yield kind(self, method, seed, holdout)


class MultiCVRun(MethodRun):
    """One method, seed and held-out data set."""

    def __init__(self, study: MultiCVStudy, method: str, seed: int, holdout: str) -> None:
        cfg = study.cfg.for_method(method)
        self.study, self.cfg, self.method, self.seed, self.holdout = (study, cfg, method, seed,
                                                                      holdout)
        self.pretrain = [d for d in cfg.datasets if d != holdout]
        self.eval_every, self.checkpoint_every = 1, cfg.checkpoint_every

    @property
    def key(self) -> str:
        return f"seed{self.seed}-{self.method}-holdout-{self.holdout}"

    def validate(self, step: int) -> dict[str, Any] | None:
        """None: each meta-step logs its tasks' validation errors with its metrics."""
        return None

    def inner(self, task: Task, trainee: Trainee, optimizer: torch.optim.Optimizer,
              purpose: str, *index: int | str) -> InnerTraining:
        """An :class:`InnerTraining` of ``task`` on the batches of (seed, purpose, *index)."""
        return InnerTraining(self.cfg, task, trainee, optimizer,
                             seeding.generator(self.seed, purpose, *index))

    def result(self, training: InnerTraining) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "holdout": self.holdout,
                "pretrain": self.pretrain, "val_every": self.cfg.val_every,
                **training.scores()}

    def export_metadata(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed), "holdout": self.holdout,
                "pretrain": json.dumps(self.pretrain), "config": json.dumps(self.cfg.to_dict())}

    @staticmethod
    def round_metrics(trainings: Sequence[InnerTraining]) -> dict[str, float]:
        """A pretraining round's metrics: mean best validation error and steps per task."""
        return {"val_error": statistics.fmean(t.patience.best for t in trainings),
                "inner_steps": statistics.fmean(t.steps for t in trainings)}


class MetaRun(MultiCVRun):
    """A meta-learner (Leap, Reptile, FOMAML), finetuning or no pretraining: θ⁰ is the
    encoder; every task has its own head."""

    def __init__(self, study: MultiCVStudy, method: str, seed: int, holdout: str) -> None:
        super().__init__(study, method, seed, holdout)
        template = study.model(self.pretrain[0], seed, "template")
        context = Context(num_tasks=len(self.pretrain), seed=seed, inner_lr=self.cfg.inner_lr,
                          exclude=_per_task,
                          num_classes=tuple(study.classes[d] for d in self.pretrain))
        self.learner = METHODS[method](template, self.cfg.options(method), context)
        self.meta_steps = self.cfg.meta_steps
        self.patience = Patience(self.cfg.meta_patience)

    def state(self) -> dict[str, Any]:
        return {"meta_patience": self.patience.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.patience.load_state(state["meta_patience"])

    def stopped(self) -> bool:
        return self.patience.stopped

    def meta_step(self, step: int) -> dict[str, float]:
        if self.learner.interleaved:
            trainings = self._round_robin(step)
        else:
            trainings = [self._one_task(step, j, name) for j, name in enumerate(self.pretrain)]
        metrics = {**self.learner.meta_update(), **self.round_metrics(trainings)}
        self.patience.update(metrics["val_error"])
        return metrics

    def _close(self, handle: TaskHandle, training: InnerTraining) -> None:
        x, y = training.final_batch()
        with torch.set_grad_enabled(self.learner.query_grad):
            handle.finish(F.cross_entropy(handle.model(x), y))

    def _one_task(self, step: int, j: int, name: str) -> InnerTraining:
        """Pretraining data set ``name`` trained from θ⁰ with a fresh head."""
        model = self.study.model(name, self.seed, step)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.inner_lr)
        with self.learner.task(model, optimizer, index=j) as t:
            training = self.inner(self.study.task(name, self.seed),
                                  ModelTrainee(t.model, model, t), optimizer, "inner", step,
                                  name).run()
            self._close(t, training)
        return training

    def _round_robin(self, step: int) -> list[InnerTraining]:
        """Finetuning's round: its shared network trains every data set through its head,
        one batch of each unfinished one in turn, each with its own cosine-annealed SGD."""
        net = self.learner.net  # type: ignore[attr-defined]
        momentum = self.learner.meta_optimizer.defaults["momentum"]  # type: ignore[union-attr]
        with ExitStack() as stack:
            handles, trainings = [], []
            for j, name in enumerate(self.pretrain):
                t = stack.enter_context(self.learner.task(None, None, index=j))
                params = [*net.encoder.parameters(), *net.heads[j].parameters()]
                optimizer = torch.optim.SGD(params, lr=self.cfg.inner_lr, momentum=momentum)
                handles.append(t)
                trainings.append(self.inner(self.study.task(name, self.seed),
                                            ModelTrainee(t.model, net, t), optimizer, "inner",
                                            step, name))
            active = [k for k, training in enumerate(trainings) if not training.done]
            while active:
                for k in list(active):
                    trainings[k].advance()
                    if trainings[k].done:
                        active.remove(k)
            for t, training in zip(handles, trainings, strict=True):
                self._close(t, training)
        return trainings

    def evaluate(self, init: dict[str, Tensor], progress: bool) -> dict[str, Any]:
        model = self.study.model(self.holdout, self.seed, "eval")
        model.load_state_dict(init, strict=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.inner_lr)
        training = self.inner(self.study.task(self.holdout, self.seed),
                              ModelTrainee(model, model), optimizer, "eval", self.holdout)
        return self.result(training.run(progress, f"{self.method} seed {self.seed} held-out "
                                                  f"{self.holdout}"))


class SequentialRun(MultiCVRun):
    """Progressive Nets or HAT: its "meta-steps" are the pretraining data sets, one each in
    order; the held-out data set is its next task, trained inside the exported network."""

    def __init__(self, study: MultiCVStudy, method: str, seed: int, holdout: str) -> None:
        super().__init__(study, method, seed, holdout)
        self.learner = self.network()
        self.meta_steps = len(self.pretrain)

    def network(self) -> SequentialLearner:
        """The method's network for the pretraining data sets and the held-out one."""
        classes = [self.study.classes[d] for d in [*self.pretrain, self.holdout]]
        return SEQUENTIAL[self.method](classes, self.cfg.options(self.method),
                                       channels=self.cfg.channels, blocks=self.cfg.blocks,
                                       seed=self.seed).to(self.study.device)

    def learn(self, net: SequentialLearner, index: int, name: str, purpose: str,
              *stream: int | str, progress: bool = False) -> InnerTraining:
        """Task ``index`` of ``net``, data set ``name``, on the batches (seed, purpose,
        *stream); the trained task stays usable (its scores) after it ends."""
        task = self.study.task(name, self.seed)
        with net.task(index, batches_per_epoch(task, self.cfg.batch_size)) as t:
            optimizer = torch.optim.SGD(t.parameters, lr=self.cfg.inner_lr)
            return self.inner(task, t, optimizer, purpose, *stream).run(
                progress, f"{self.method} seed {self.seed} held-out {name}")

    def meta_step(self, step: int) -> dict[str, float]:
        name = self.pretrain[step]
        return self.round_metrics([self.learn(self.learner, step, name, "inner", 0, name)])

    def evaluate(self, init: dict[str, Tensor], progress: bool) -> dict[str, Any]:
        net = self.network()
        net.load_state_dict(init)
        return self.result(self.learn(net, len(self.pretrain), self.holdout, "eval",
                                      self.holdout, progress=progress))


# ------------------------------------------------------------------------ the summary
def holdouts_of(config: dict[str, Any]) -> list[str]:
    """The held-out data sets a recorded config names, ``"all"`` resolved."""
    return list(config["datasets"]) if config["holdout"] == ["all"] else list(config["holdout"])


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of a Multi-CV run: the paper's Table 1 with intervals.

    ``record`` is the run's ``config.json``. Schema (version 1)::

        {"schema": 1, "protocol": "multicv", "config": {...}, "methods_config": {...},
         "left_out": {DATASET: why it was not installed},
         "holdouts": {HELD_OUT: {METHOD: {
             "seeds": [0, ...], "max_steps": K_max,
             "test_error" | "train_error" | "error_auc" | "steps": {
                 "per_seed": {SEED: [value]}, "ci": INTERVAL over the seeds},
             "vs_leap": {METRIC: INTERVAL of METHOD − Leap, paired by seed},  # not Leap
             "curve": {"every": val_every, "mean": [...], "std": [...]}}}},
         "methods": {METHOD: {      # over every held-out data set
             METRIC: {"per_seed": {"HELD_OUT/SEED": [value]}, "ci": INTERVAL},
             "vs_leap": {METRIC: INTERVAL paired by (held-out, seed)}}}}

    Metric values are fractions (0–1; lower is better): the final network's error on the
    held-out set's test and training splits, and the normalised area under its
    training-error curve (:attr:`InnerTraining.error_auc`). ``steps``: SGD steps before early
    stopping. ``curve``: the training error per validation interval, padded to ``K_max``
    steps with its last value, mean and std over seeds. An ``INTERVAL`` is
    :meth:`metaleap.stats.Interval.to_dict` (95 % Student-t; bounds ``null`` below two
    values). The caller adds ``provenance`` (the data's identity).
    """
    cfg = record["config"]
    table: dict[str, dict[str, Any]] = {}
    for holdout in holdouts_of(cfg):
        entries: dict[str, Any] = {}
        for method in cfg["methods"]:
            runs = sorted((r for r in results.values()
                           if r["holdout"] == holdout and r["method"] == method),
                          key=lambda r: r["seed"])
            if runs:
                entries[method] = _entry(runs)
        for metric in METRICS:
            for method, interval in stats.compare(
                    {m: e[metric]["per_seed"] for m, e in entries.items()}, REFERENCE).items():
                entries[method].setdefault("vs_leap", {})[metric] = interval.to_dict()
        if entries:
            table[holdout] = entries
    overall: dict[str, Any] = {}
    for method in cfg["methods"]:
        groups = {metric: {f"{h}/{s}": v for h, e in table.items() if method in e
                           for s, v in e[method][metric]["per_seed"].items()}
                  for metric in METRICS}
        if groups["test_error"]:
            overall[method] = {metric: {"per_seed": g, "ci": stats.mean_ci(
                stats.pooled(g)).to_dict()} for metric, g in groups.items()}
    for metric in METRICS:
        for method, interval in stats.compare(
                {m: e[metric]["per_seed"] for m, e in overall.items()}, REFERENCE).items():
            overall[method].setdefault("vs_leap", {})[metric] = interval.to_dict()
    return {"schema": SCHEMA_VERSION, "protocol": record["protocol"], "config": cfg,
            "methods_config": record["methods"], "left_out": record.get("left_out", {}),
            "holdouts": table, "methods": overall}


def _entry(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One (held-out data set, method) cell of the table from its seeds' results."""
    max_steps, every = runs[0]["max_steps"], runs[0]["val_every"]
    entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "max_steps": max_steps}
    for metric in (*METRICS, "steps"):
        per_seed = {str(r["seed"]): [float(r[metric])] for r in runs}
        entry[metric] = {"per_seed": per_seed,
                         "ci": stats.mean_ci(stats.pooled(per_seed)).to_dict()}
    points = math.ceil(max_steps / every)
    curves = torch.tensor([r["curve"] + r["curve"][-1:] * (points - len(r["curve"]))
                           for r in runs], dtype=torch.float64)
    entry["curve"] = {"every": every, "mean": curves.mean(0).tolist(),
                      "std": curves.std(0, correction=0).tolist()}
    return entry
