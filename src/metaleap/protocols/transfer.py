"""The transfer study of the paper's first experiment (docs/experiments.md), for every method.

Each alphabet is a ``ways``-way task. Per seed, ``num_heldout`` alphabets are held out for the
final evaluation (fixed by the seed alone, whatever the number N of pretraining tasks), a few
more validate during meta-training, and the pretraining tasks are the first N of the rest
(nested in N). Every method meta-trains from the same seeded θ⁰ on the same meta-batches and
data streams, then each held-out task trains for K steps from the learned initialization; we
record the training error curve, its AUC and the final test error.

The study writes nothing itself: the generic trainer (:mod:`metaleap.protocols.trainer`)
reports to a store (a run folder in practice), which also keeps checkpoints, so an interrupted
study resumes bit-identically. Every random stream derives from (seed, purpose, meta-step,
task), so a checkpoint needs no RNG state.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import seeding, stats
from metaleap.metalearners import (
    METHODS,
    Context,
    MetaLearner,
    SupervisedMetaStep,
    TaskStream,
)
from metaleap.models import BLOCK_ORDERS, make_convnet
from metaleap.protocols import batched
from metaleap.protocols.base import (
    ONE_PROCESS,
    ConfigError,
    MethodConfig,
    MethodRun,
    Processes,
    StudyProtocol,
    at_least,
    positive,
    resolve_preset,
)
from metaleap.protocols.evaluation import Curve, train_task
from metaleap.stacked import stackable
from metaleap.tasks import DataError, TaskSet, open_taskset
from metaleap.tasks.augment import RandomAffine
from metaleap.tasks.base import Task, batches

SCHEMA_VERSION = 4
#: The metrics of each held-out task, and the method the others are compared with.
METRICS = ("error_auc", "loss_auc", "test_error", "path_length")
REFERENCE = "leap"
#: The smallest image the convnet's four 2× max-pools accept.
MIN_IMAGE_SIZE = 16


@dataclass
class TransferConfig(MethodConfig):
    """Every number of the transfer protocol (docs/experiments.md); one source of truth per run."""

    PER_METHOD: ClassVar[tuple[str, ...]] = ("inner_steps", "inner_lr", "meta_batch",
                                             "meta_steps")

    data: str = "glyphs"
    """the alphabets: "glyphs" (rendered offline, data version 1), "glyphs:v2" (version 2) or
    "omniglot:PATH" (the standard layout)"""
    methods: list[str] = field(default_factory=lambda: ["leap", "reptile", "fomaml", "maml",
                                                        "finetune", "scratch"])
    """the methods to compare (see ``metaleap.metalearners.METHODS``)"""
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Reject impossible settings (for every method) before any data is read."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if not self.methods or not self.seeds:
            raise ConfigError("at least one method and one seed are needed")
        if len(set(self.methods)) < len(self.methods) or len(set(self.seeds)) < len(self.seeds):
            raise ConfigError("methods and seeds must not repeat")
        at_least(self, 1, "num_pretrain", "num_heldout", "train_per_class", "test_per_class",
                 "batch_size", "eval_steps", "eval_every", "checkpoint_every")
        at_least(self, 0, "num_val")
        at_least(self, 2, "ways")
        at_least(self, MIN_IMAGE_SIZE, "image_size")
        if self.block_order not in BLOCK_ORDERS:
            raise ConfigError(f"block_order must be {' or '.join(BLOCK_ORDERS)}, "
                              f"got {self.block_order!r}")
        positive(self, "eval_lr")
        if self.task_batching not in batched.MODES:
            raise ConfigError(f"task_batching must be one of {', '.join(batched.MODES)}, got "
                              f"{self.task_batching!r}")
        if sorted(set(self.heldout_at)) != self.heldout_at:
            raise ConfigError(f"heldout_at must increase strictly, got {self.heldout_at}")
        for method in self.methods:
            cfg = self.for_method(method)
            try:
                at_least(cfg, 1, "inner_steps", "meta_batch")
                at_least(cfg, 0, "meta_steps")
                positive(cfg, "inner_lr")
                if self.heldout_at and not 0 < self.heldout_at[0] <= self.heldout_at[-1] \
                        < cfg.meta_steps:
                    raise ConfigError(f"heldout_at {self.heldout_at} must lie strictly between "
                                      f"0 and meta_steps ({cfg.meta_steps})")
            except ConfigError as e:
                raise ConfigError(f"{method}: {e}") from None
            self.options(method)


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


@dataclass(frozen=True)
class Split:
    """Task indices of one seed: held out, validation, and the pretraining pool (nested in N)."""

    heldout: list[int]
    val: list[int]
    pretrain: list[int]


def make_split(cfg: TransferConfig, taskset: TaskSet, seed: int) -> Split:
    """Held-out and validation tasks depend on the seed only; pretraining takes the first N."""
    n = len(taskset)
    need = cfg.num_heldout + cfg.num_val + cfg.num_pretrain
    if need > n:
        raise ConfigError(
            f"{cfg.num_heldout} held-out + {cfg.num_val} validation + {cfg.num_pretrain} "
            f"pretraining tasks need {need} alphabets, but the data has {n}")
    order = torch.randperm(n, generator=seeding.generator(seed, "split")).tolist()
    a, b = cfg.num_heldout, cfg.num_heldout + cfg.num_val
    return Split(heldout=order[:a], val=order[a:b], pretrain=order[b:b + cfg.num_pretrain])


class TransferStudy(StudyProtocol):
    """The protocol bound to a config, its data and a device; see the module docstring.

    The constructor checks the configuration against the data (every alphabet a seed uses
    must have ``ways`` characters with enough images each), so a study that cannot run fails
    before anything is written. With several ``processes``, each trains its share of every
    meta-batch (all of finetuning's, whose tasks share one network) and evaluates its share of
    the held-out and validation tasks; sums and curves are all-reduced, so every process ends
    with the same θ⁰ and the same results.
    """

    name = "transfer"

    def __init__(self, cfg: TransferConfig, taskset: TaskSet | None = None,
                 device: torch.device | str = "cpu", processes: Processes = ONE_PROCESS
                 ) -> None:
        cfg.check()
        self.cfg, self.device, self.processes = cfg, torch.device(device), processes
        self.taskset = taskset if taskset is not None else open_taskset(
            cfg.data, size=cfg.image_size, ways=cfg.ways)
        self.splits = {seed: make_split(cfg, self.taskset, seed) for seed in cfg.seeds}
        self.augment = RandomAffine() if cfg.augment else None
        #: Whether tasks train batched (``task_batching`` resolved for the device and model).
        self.batched = batched.use_task_batching(cfg.task_batching, self.device)
        if self.batched and not stackable(self.model_factory(cfg.seeds[0])()):
            if cfg.task_batching == "on":
                raise ConfigError("task_batching=on: the model has a layer that batched tasks "
                                  "cannot stack (metaleap.stacked)")
            self.batched = False
        self._tasks: dict[int, Task] = {}
        self._tasks_seed: int | None = None
        used = sorted({i for s in self.splits.values() for i in s.heldout + s.val + s.pretrain})
        for index in used:  # builds (and so checks) every task once, with the first seed
            self.task(index, cfg.seeds[0])

    def batching_note(self) -> str | None:
        """One line naming the methods that meta-train task by task although tasks are
        batched (MAML, finetuning: no batched form; their evaluations are batched)."""
        if not self.batched:
            return None
        alone = [m for m in self.cfg.methods
                 if METHODS[m].meta_trains and METHODS[m].batched is MetaLearner.batched]
        return (f"task batching is on; {', '.join(alone)} meta-train task by task (no batched "
                "form), their held-out evaluations are batched") if alone else None

    def config_record(self) -> dict[str, Any]:
        return {"protocol": self.name, "config": self.cfg.to_dict(),
                "methods": self.cfg.resolved_methods()}

    def data_identity(self) -> dict[str, Any]:
        return self.taskset.identity()

    def task(self, index: int, seed: int) -> Task:
        """Task ``index`` of ``seed`` on the study's device (one seed's tasks are cached)."""
        if seed != self._tasks_seed:
            self._tasks, self._tasks_seed = {}, seed
        if index not in self._tasks:
            try:
                task = self.taskset.task(index, seed, ways=self.cfg.ways,
                                         train_per_class=self.cfg.train_per_class,
                                         test_per_class=self.cfg.test_per_class)
            except ValueError as e:
                if isinstance(e, DataError):
                    raise
                raise ConfigError(f"{self.taskset.names[index]}: {e}") from None
            self._tasks[index] = task.to(self.device)
        return self._tasks[index]

    def model_factory(self, seed: int) -> Callable[[], nn.Module]:
        """Fresh ConvNets with the seed's initial weights: every method starts from one θ⁰."""
        cfg = self.cfg
        return lambda: make_convnet(cfg.ways, seed, image_size=cfg.image_size,
                                    block_order=cfg.block_order,
                                    channels_last=cfg.channels_last).to(self.device)

    def runs(self) -> Iterator[TransferRun]:
        for seed in self.cfg.seeds:
            for method in self.cfg.methods:
                yield TransferRun(self, method, seed)

    def meta_batch(self, cfg: TransferConfig, seed: int, step: int) -> list[TaskStream]:
        """The tasks of meta-step ``step`` and their data: identical for every method."""
        split = self.splits[seed]
        size = min(cfg.meta_batch, len(split.pretrain))
        pick = torch.randperm(len(split.pretrain),
                              generator=seeding.generator(seed, "meta-batch", step))[:size]
        streams = []
        for position in pick.tolist():
            index = split.pretrain[position]
            g = seeding.generator(seed, "inner", step, index)
            streams.append(TaskStream(index=position, batches=batches(
                self.task(index, seed), cfg.batch_size, cfg.inner_steps + 1, g, self.augment)))
        return streams

    def train_curves(self, init: dict[str, Tensor], seed: int, indices: list[int],
                     purpose: str, progress: bool = False, desc: str = "") -> list[Curve]:
        """Train each task of ``indices`` from ``init`` for ``eval_steps`` (the streams
        (seed, purpose, index)) and record its curve; the tasks are shared among processes and
        the curves all-reduced (exactly: each row is one process's values plus zeros)."""
        steps = self.cfg.eval_steps
        rows = torch.zeros(len(indices), 3 * steps + 3, dtype=torch.float64)
        mine = self.processes.share(range(len(indices)))
        if self.batched:  # this process's tasks as one computation
            done: Iterator[tuple[int, Curve]] = zip(mine, batched.train_tasks(
                self.model_factory(seed), init, [self.task(indices[j], seed) for j in mine],
                steps, self.cfg.eval_lr, self.cfg.batch_size,
                [seeding.generator(seed, purpose, indices[j]) for j in mine], self.augment),
                strict=True)
        else:
            done = ((j, train_task(self.model_factory(seed), init, self.task(indices[j], seed),
                                   steps, self.cfg.eval_lr, self.cfg.batch_size,
                                   seeding.generator(seed, purpose, indices[j]), self.augment))
                    for j in tqdm(mine, desc=desc, unit="task", disable=not progress))
        for j, c in done:
            rows[j] = torch.tensor([c.test_error, *c.train_error, *c.train_loss,
                                    *c.step_norms], dtype=torch.float64)
        rows = self.processes.all_sum(rows)
        return [Curve(train_error=r[1:steps + 2].tolist(),
                      train_loss=r[steps + 2:2 * steps + 3].tolist(), test_error=float(r[0]),
                      step_norms=r[2 * steps + 3:].tolist()) for r in rows]


class TransferRun(MethodRun):
    """One method on one seed of the transfer study."""

    def __init__(self, study: TransferStudy, method: str, seed: int) -> None:
        cfg = study.cfg.for_method(method)
        self.study, self.cfg, self.method, self.seed = study, cfg, method, seed
        self.split = study.splits[seed]
        model = study.model_factory(seed)()
        context = Context(num_tasks=len(self.split.pretrain), seed=seed, inner_lr=cfg.inner_lr)
        self.learner = METHODS[method](model, cfg.options(method), context)
        self.step_fn: SupervisedMetaStep | batched.BatchedMetaStep = (
            batched.BatchedMetaStep(self.learner, model, inner_lr=cfg.inner_lr)
            if study.batched and batched.has_batched_form(self.learner, model)
            else SupervisedMetaStep(self.learner, model, inner_lr=cfg.inner_lr))
        self.meta_steps, self.eval_every = cfg.meta_steps, cfg.eval_every
        self.checkpoint_every = cfg.checkpoint_every
        #: Held-out metrics after each meta-step of ``heldout_at`` reached so far.
        self.budget: dict[str, dict[str, list[float]]] = {}

    def meta_step(self, step: int) -> dict[str, float]:
        tasks = self.study.meta_batch(self.cfg, self.seed, step)
        if self.learner.interleaved:  # one shared network: every process runs every task
            metrics = self.step_fn(tasks)
        else:
            processes = self.study.processes
            metrics = self.step_fn(processes.share(tasks), reduce=processes.reduce)
        if step + 1 in self.cfg.heldout_at:
            curves = self.study.train_curves(self.learner.initialization(), self.seed,
                                             self.split.heldout, "eval")
            self.budget[str(step + 1)] = {m: [getattr(c, m) for c in curves] for m in METRICS}
        return metrics

    def state(self) -> dict[str, Any]:
        return {"budget": self.budget} if self.budget else {}

    def load_state(self, state: dict[str, Any]) -> None:
        rest = dict(state)
        self.budget = rest.pop("budget", {})
        super().load_state(rest)

    def validate(self, step: int) -> dict[str, Any] | None:
        if not self.split.val:
            return None
        init = self.learner.initialization()
        curves = self.study.train_curves(init, self.seed, self.split.val, "val")
        return {"error_auc": statistics.fmean(c.error_auc for c in curves),
                "test_error": statistics.fmean(c.test_error for c in curves),
                "train_error_curve": [statistics.fmean(p) for p in
                                      zip(*(c.train_error for c in curves), strict=True)]}

    def evaluate(self, init: dict[str, Tensor], progress: bool) -> dict[str, Any]:
        curves = self.study.train_curves(init, self.seed, self.split.heldout, "eval", progress,
                                         f"{self.method} seed {self.seed} held-out")
        names = self.study.taskset.names
        return {"method": self.method, "seed": self.seed, "num_pretrain": self.cfg.num_pretrain,
                "tasks": [names[h] for h in self.split.heldout],
                "pretrain_tasks": [names[p] for p in self.split.pretrain],
                "error_auc": [c.error_auc for c in curves],
                "loss_auc": [c.loss_auc for c in curves],
                "test_error": [c.test_error for c in curves],
                "path_length": [c.path_length for c in curves],
                "train_error_curves": [c.train_error for c in curves],
                "train_loss_curves": [c.train_loss for c in curves],
                **({"budget": self.budget} if self.cfg.heldout_at else {})}

    def export_metadata(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed),
                "num_classes": str(self.cfg.ways), "architecture": "metaleap.models.ConvNet",
                "config": json.dumps(self.cfg.to_dict())}


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of a transfer run: per method, metrics over seeds and tasks.

    ``record`` is the run's ``config.json`` (protocol, config, resolved methods). Schema
    (version 4)::

        {"schema": 4, "protocol": "transfer", "config": {...}, "methods_config": {...},
         "methods": {METHOD: {
             "seeds": [0, ...], "num_pretrain": N,
             "error_auc" | "loss_auc" | "test_error" | "path_length": {
                 "mean": mean over seeds of the per-seed mean over held-out tasks,
                 "std_seeds": std of the per-seed means (0 with one seed),
                 "std_tasks": std over every (seed, task) value,
                 "per_seed": {SEED: [value per held-out task]},
                 "ci": INTERVAL over every (seed, task) value},
             "vs_leap": {METRIC: INTERVAL of METHOD − Leap over the (seed, task) pairs both
                         finished},   # methods other than Leap, when Leap ran
             "tasks": {SEED: [held-out task names]},
             "curve": {"mean": [...], "std": [...]},   # training error, K + 1 points
             "budget": {META_STEP: {METRIC: {SEED: [value per held-out task]}}}}}}
                 # with ``heldout_at``, meta-training methods: each of its meta-steps and the
                 # last, the held-out metrics of the initialization at that meta-step

    An ``INTERVAL`` is :meth:`metaleap.stats.Interval.to_dict`: ``mean``, ``low``, ``high``
    (95 % Student-t bounds, ``null`` below two values), ``n`` and ``level``. A seed holds out
    the same tasks in the same order for every method, so the differences are paired. Version
    2 lacked ``ci`` and ``vs_leap``, versions 2 and 3 ``path_length`` and ``budget``; the
    reports recompute intervals from ``per_seed`` and show what a file holds, so they read
    each. Errors are fractions (0–1), the path length is in parameter-and-loss units (see
    :attr:`metaleap.protocols.evaluation.Curve.path_length`); lower is better. The run folder's
    ``provenance.json`` (data identity, versions, device) is added by the caller.
    """
    methods: dict[str, Any] = {}
    metrics = [m for m in METRICS if all(m in r for r in results.values())]
    for method in record["config"]["methods"]:
        runs = [r for r in results.values() if r["method"] == method]
        if not runs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs],
                                 "num_pretrain": runs[0]["num_pretrain"],
                                 "tasks": {str(r["seed"]): r["tasks"] for r in runs}}
        for metric in metrics:
            per_seed = {str(r["seed"]): r[metric] for r in runs}
            means = [statistics.fmean(v) for v in per_seed.values()]
            pooled = stats.pooled(per_seed)
            entry[metric] = {"mean": statistics.fmean(means),
                             "std_seeds": statistics.pstdev(means),
                             "std_tasks": statistics.pstdev(pooled), "per_seed": per_seed,
                             "ci": stats.mean_ci(pooled).to_dict()}
        if "budget" in runs[0] and METHODS[method].meta_trains:
            last = str(record["methods"][method]["meta_steps"])
            entry["budget"] = {step: {metric: {str(r["seed"]): r["budget"][step][metric]
                                               for r in runs} for metric in metrics}
                               for step in runs[0]["budget"]}
            entry["budget"][last] = {metric: entry[metric]["per_seed"] for metric in metrics}
        curves = torch.tensor([c for r in runs for c in r["train_error_curves"]],
                              dtype=torch.float64)
        entry["curve"] = {"mean": curves.mean(0).tolist(),
                          "std": curves.std(0, correction=0).tolist()}
        methods[method] = entry
    for metric in metrics:
        differences = stats.compare({m: e[metric]["per_seed"] for m, e in methods.items()},
                                    REFERENCE)
        for method, interval in differences.items():
            methods[method].setdefault("vs_leap", {})[metric] = interval.to_dict()
    return {"schema": SCHEMA_VERSION, "protocol": record["protocol"],
            "config": record["config"], "methods_config": record["methods"],
            "methods": methods}
