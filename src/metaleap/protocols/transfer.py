"""The transfer study of the paper's first experiment (SPEC §2.1), for every method.

Each alphabet is a 20-way task. Per seed, 10 alphabets are held out for the final evaluation
(fixed by the seed alone, whatever the number N of pretraining tasks), a few more validate
during meta-training, and the pretraining tasks are the first N of the rest (nested in N).
Every method meta-trains from the same seeded θ⁰ on the same meta-batches and data streams,
then each held-out task trains for K steps from the learned initialization; we record the
training error curve, its AUC and the final test error.

The study writes nothing itself: it reports to a :class:`Store` (a run folder in practice),
which also keeps checkpoints, so an interrupted study resumes bit-identically. Every random
stream derives from (seed, purpose, meta-step, task), so a checkpoint needs no RNG state: the
meta-learner's tensors and the step count determine everything after it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import seeding
from metaleap.metalearners import METHODS, MetaLearner, TaskStream, make_metalearner
from metaleap.models import make_convnet
from metaleap.protocols.evaluation import Curve, train_task
from metaleap.tasks import TaskSet, open_taskset
from metaleap.tasks.augment import RandomAffine
from metaleap.tasks.base import Task, batches

SCHEMA_VERSION = 1
#: Settings a method may override (``--set maml.inner_steps=5``).
METHOD_KEYS = ("inner_steps", "inner_lr", "meta_lr", "meta_batch", "meta_steps")


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any work is done."""


class DivergedError(RuntimeError):
    """Meta-training produced a non-finite initialization."""


@dataclass
class TransferConfig:
    """Every number of the transfer protocol (SPEC §2.1); one source of truth per run."""

    data: str = "glyphs"              # "glyphs" or "omniglot:PATH"
    methods: list[str] = field(default_factory=lambda: ["leap", "reptile", "fomaml", "maml",
                                                        "finetune", "scratch"])
    seeds: list[int] = field(default_factory=lambda: [0])
    num_pretrain: int = 20            # N, pretraining tasks
    num_heldout: int = 10             # evaluation tasks, fixed per seed independently of N
    num_val: int = 5                  # validation tasks, fixed per seed independently of N
    ways: int = 20
    train_per_class: int = 15
    test_per_class: int = 5
    image_size: int = 28
    augment: bool = True              # rotation 0–360°, translation ±20 %, scale 0.8–1.2
    batch_size: int = 20
    inner_steps: int = 100
    inner_lr: float = 0.1
    meta_batch: int = 20              # capped at N
    meta_lr: float = 0.1
    meta_steps: int = 1000
    eval_steps: int = 100             # K when training a held-out task
    eval_lr: float = 0.1
    eval_every: int = 100             # validation curves every this many meta-steps
    checkpoint_every: int = 10
    leap_metric: str = "length"
    leap_loss_term: bool = True
    leap_stabilizer: bool = True
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_method(self, method: str) -> TransferConfig:
        """This config with ``method``'s overrides applied."""
        return dataclasses.replace(self, **self.method_overrides.get(method, {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's numbers: FOMAML's meta lr 0.5 and MAML's 5 inner steps (SPEC §2.1).
    "omniglot-paper": dict(seeds=list(range(10)), method_overrides={
        "fomaml": {"meta_lr": 0.5}, "maml": {"inner_steps": 5}}),
    # `metaleap demo`: about 5 minutes on 2 CPU cores (plus building the glyphs once).
    "demo": dict(methods=["leap", "reptile", "finetune", "scratch"], num_pretrain=5,
                 num_heldout=5, num_val=2, meta_batch=5, inner_steps=20, meta_steps=20,
                 eval_steps=50, eval_every=5, checkpoint_every=5),
    # The committed glyph study (docs/results): what this 2-core machine allows in an hour.
    "glyphs-small": dict(seeds=[0, 1], num_heldout=5, num_val=2, meta_batch=4, inner_steps=20,
                         meta_steps=15, eval_steps=50, eval_every=5, checkpoint_every=5,
                         method_overrides={"fomaml": {"meta_lr": 0.5},
                                           "maml": {"inner_steps": 5}}),
    # Seconds: for tests and smoke checks.
    "tiny": dict(methods=["leap", "scratch"], num_pretrain=2, num_heldout=2, num_val=1,
                 ways=5, meta_batch=2, inner_steps=3, meta_steps=2, eval_steps=3,
                 eval_every=1, checkpoint_every=1),
}


def _parse_value(text: str, like: Any, key: str) -> Any:
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(like, list):
            items = [t for t in text.split(",") if t]
            return [_parse_value(t, like[0], key) for t in items] if like else items
        return type(like)(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected {type(like).__name__}") from None


def resolve_config(preset: str = "omniglot-paper", overrides: Sequence[str] = (),
                   **fields: Any) -> TransferConfig:
    """A preset, then ``key=value`` overrides (``method.key=value`` for one method)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = TransferConfig(**PRESETS[preset])
    cfg = dataclasses.replace(cfg, **fields)
    names = {f.name for f in dataclasses.fields(TransferConfig)} - {"method_overrides"}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        method, dot, sub = key.partition(".")
        if dot:
            if method not in METHODS:
                raise ConfigError(f"--set {key}: unknown method {method!r}")
            if sub not in METHOD_KEYS:
                raise ConfigError(f"--set {key}: a method may override {', '.join(METHOD_KEYS)}")
            per = {m: dict(v) for m, v in cfg.method_overrides.items()}
            per.setdefault(method, {})[sub] = _parse_value(text, getattr(cfg, sub), key)
            cfg = dataclasses.replace(cfg, method_overrides=per)
        elif key in names:
            cfg = dataclasses.replace(cfg, **{key: _parse_value(text, getattr(cfg, key), key)})
        else:
            raise ConfigError(f"--set {key}: unknown key; known: {', '.join(sorted(names))}")
    return cfg


def check_config(cfg: TransferConfig) -> None:
    """Reject impossible settings before any data is read."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if not cfg.methods or not cfg.seeds:
        raise ConfigError("at least one method and one seed are needed")
    if cfg.leap_metric not in ("length", "energy"):
        raise ConfigError(f"leap_metric must be 'length' or 'energy', got {cfg.leap_metric!r}")
    for name in ("num_pretrain", "num_heldout", "ways", "train_per_class", "test_per_class",
                 "batch_size", "inner_steps", "meta_batch", "eval_steps", "eval_every",
                 "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("meta_steps", "num_val"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be non-negative, got {getattr(cfg, name)}")
    for method, over in cfg.method_overrides.items():
        bad = set(over) - set(METHOD_KEYS)
        if method not in METHODS or bad:
            raise ConfigError(f"method_overrides[{method!r}] is invalid: {sorted(bad) or method}")


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


class Store(Protocol):
    """Where a study reports: metrics, checkpoints, results and exported initializations."""

    def log(self, record: dict[str, Any]) -> None: ...

    def save_state(self, key: str, state: dict[str, Any]) -> None: ...

    def load_state(self, key: str) -> dict[str, Any] | None: ...

    def save_result(self, key: str, result: dict[str, Any]) -> None: ...

    def load_result(self, key: str) -> dict[str, Any] | None: ...

    def export_initialization(self, key: str, tensors: dict[str, Tensor],
                              metadata: dict[str, str]) -> None: ...


def model_factory(cfg: TransferConfig, seed: int) -> Callable[[], nn.Module]:
    """Fresh ConvNets with the seed's initial weights: every method starts from the same θ⁰."""
    return lambda: make_convnet(cfg.ways, seed, image_size=cfg.image_size)


class TransferStudy:
    """Runs the protocol for every seed and method; see the module docstring.

    The constructor checks the configuration against the data, so a study that cannot run
    fails before anything is written.
    """

    def __init__(self, cfg: TransferConfig, taskset: TaskSet | None = None,
                 progress: bool = True) -> None:
        check_config(cfg)
        self.cfg, self.progress = cfg, progress
        self.taskset = taskset if taskset is not None else open_taskset(
            cfg.data, size=cfg.image_size, ways=cfg.ways)
        self.splits = {seed: make_split(cfg, self.taskset, seed) for seed in cfg.seeds}
        self.augment = RandomAffine() if cfg.augment else None

    def run(self, store: Store) -> dict[str, dict[str, Any]]:
        """Every (seed, method) result, resuming finished and checkpointed ones in ``store``."""
        results = {}
        for seed in self.cfg.seeds:
            tasks: dict[int, Task] = {}
            for method in self.cfg.methods:
                key = f"seed{seed}-{method}"
                result = store.load_result(key)
                if result is None:
                    result = self._run_method(store, method, seed, tasks)
                    store.save_result(key, result)
                results[key] = result
        return results

    # ------------------------------------------------------------------ one method, one seed
    def _task(self, tasks: dict[int, Task], index: int, seed: int) -> Task:
        if index not in tasks:
            tasks[index] = self.taskset.task(index, seed, ways=self.cfg.ways,
                                             train_per_class=self.cfg.train_per_class,
                                             test_per_class=self.cfg.test_per_class)
        return tasks[index]

    def _run_method(self, store: Store, method: str, seed: int, tasks: dict[int, Task]
                    ) -> dict[str, Any]:
        cfg, split, key = self.cfg.for_method(method), self.splits[seed], f"seed{seed}-{method}"
        make_model = model_factory(cfg, seed)
        options = dict(metric=cfg.leap_metric, loss_term=cfg.leap_loss_term,
                       stabilizer=cfg.leap_stabilizer) if method == "leap" else {}
        learner = make_metalearner(method, make_model(), inner_lr=cfg.inner_lr,
                                   meta_lr=cfg.meta_lr, num_tasks=len(split.pretrain),
                                   seed=seed, **options)
        start = 0
        state = store.load_state(key)
        if state is not None:
            learner.load_state_dict(state["module"])
            learner.load_extra_state(state["extra"])
            start = state["step"]
        steps = cfg.meta_steps if learner.meta_trains else 0
        if start == 0 and steps:
            self._validate(store, learner, make_model, seed, 0, method, tasks)
        bar = tqdm(range(start, steps), desc=f"{method} seed {seed}", unit="meta-step",
                   initial=start, total=steps, disable=not self.progress or not steps,
                   dynamic_ncols=True)
        for step in bar:
            began = time.perf_counter()
            metrics = learner.meta_step(self._meta_batch(cfg, split, seed, step, tasks))
            if not all(torch.isfinite(t).all() for t in learner.initialization().values()):
                raise DivergedError(f"{method} diverged at meta-step {step + 1} (seed {seed}): "
                                  "its initialization is no longer finite; lower the learning "
                                  "rates")
            store.log({"event": "meta_step", "seed": seed, "method": method,
                            "step": step + 1, "seconds": time.perf_counter() - began, **metrics})
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()
                             if isinstance(v, float)}, refresh=False)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
                self._validate(store, learner, make_model, seed, step + 1, method, tasks)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                store.save_state(key, {"step": step + 1, "module": learner.state_dict(),
                                       "extra": learner.extra_state()})
        init = learner.initialization()
        curves = [self._evaluate(init, make_model, seed, h, "eval", tasks)
                  for h in tqdm(split.heldout, desc=f"{method} seed {seed} held-out",
                                unit="task", disable=not self.progress)]
        store.export_initialization(key, init, {
            "method": method, "seed": str(seed), "num_classes": str(cfg.ways),
            "architecture": "metaleap.models.ConvNet", "config": json.dumps(cfg.to_dict())})
        return {"method": method, "seed": seed, "num_pretrain": cfg.num_pretrain,
                "tasks": [self.taskset.names[h] for h in split.heldout],
                "pretrain_tasks": [self.taskset.names[p] for p in split.pretrain],
                "error_auc": [c.error_auc for c in curves],
                "loss_auc": [c.loss_auc for c in curves],
                "test_error": [c.test_error for c in curves],
                "train_error_curves": [c.train_error for c in curves],
                "train_loss_curves": [c.train_loss for c in curves]}

    def _meta_batch(self, cfg: TransferConfig, split: Split, seed: int, step: int,
                    tasks: dict[int, Task]) -> list[TaskStream]:
        """The tasks of meta-step ``step`` and their data: identical for every method."""
        size = min(cfg.meta_batch, len(split.pretrain))
        pick = torch.randperm(len(split.pretrain),
                              generator=seeding.generator(seed, "meta-batch", step))[:size]
        streams = []
        for position in pick.tolist():
            index = split.pretrain[position]
            g = seeding.generator(seed, "inner", step, index)
            streams.append(TaskStream(index=position, batches=batches(
                self._task(tasks, index, seed), cfg.batch_size, cfg.inner_steps + 1, g,
                self.augment)))
        return streams

    def _evaluate(self, init: dict[str, Tensor], make_model: Callable[[], nn.Module], seed: int,
                  index: int, purpose: str, tasks: dict[int, Task]) -> Curve:
        return train_task(make_model, init, self._task(tasks, index, seed), self.cfg.eval_steps,
                          self.cfg.eval_lr, self.cfg.batch_size,
                          seeding.generator(seed, purpose, index), self.augment)

    def _validate(self, store: Store, learner: MetaLearner,
                  make_model: Callable[[], nn.Module], seed: int, step: int, method: str,
                  tasks: dict[int, Task]) -> None:
        split = self.splits[seed]
        if not split.val:
            return
        init = learner.initialization()
        curves = [self._evaluate(init, make_model, seed, v, "val", tasks) for v in split.val]
        store.log({
            "event": "validation", "seed": seed, "method": method, "step": step,
            "error_auc": statistics.fmean(c.error_auc for c in curves),
            "test_error": statistics.fmean(c.test_error for c in curves),
            "train_error_curve": [statistics.fmean(p) for p in
                                  zip(*(c.train_error for c in curves), strict=True)]})


def summarize(cfg: TransferConfig, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json``: per method, metrics as mean and std over seeds and over tasks.

    Schema (version 1)::

        {"schema": 1, "config": {...},
         "methods": {METHOD: {
             "seeds": [0, ...], "num_pretrain": N,
             "error_auc" | "loss_auc" | "test_error": {
                 "mean": mean over seeds of the per-seed mean over held-out tasks,
                 "std_seeds": std of the per-seed means (0 with one seed),
                 "std_tasks": std over every (seed, task) value,
                 "per_seed": {SEED: [value per held-out task]}},
             "tasks": {SEED: [held-out task names]},
             "curve": {"mean": [...], "std": [...]}}}}   # training error, K + 1 points

    Metric values are fractions (0–1); lower is better.
    """
    methods: dict[str, Any] = {}
    for method in cfg.methods:
        runs = [r for r in results.values() if r["method"] == method]
        if not runs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs],
                                 "num_pretrain": runs[0]["num_pretrain"],
                                 "tasks": {str(r["seed"]): r["tasks"] for r in runs}}
        for metric in ("error_auc", "loss_auc", "test_error"):
            per_seed = {str(r["seed"]): r[metric] for r in runs}
            means = [statistics.fmean(v) for v in per_seed.values()]
            pooled = [x for v in per_seed.values() for x in v]
            entry[metric] = {"mean": statistics.fmean(means),
                             "std_seeds": statistics.pstdev(means),
                             "std_tasks": statistics.pstdev(pooled), "per_seed": per_seed}
        curves = torch.tensor([c for r in runs for c in r["train_error_curves"]],
                              dtype=torch.float64)
        entry["curve"] = {"mean": curves.mean(0).tolist(),
                          "std": curves.std(0, correction=0).tolist()}
        methods[method] = entry
    return {"schema": SCHEMA_VERSION, "config": cfg.to_dict(), "methods": methods}
