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

import json
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import methods, seeding
from metaleap.metalearners import Context, MetaLearner, SupervisedMetaStep, TaskStream
from metaleap.models import make_convnet
from metaleap.protocols import batched
from metaleap.protocols.base import (
    MethodRun,
    RunContext,
    SeedTasks,
    StudyProtocol,
    meta_batch_picks,
    taskset_digest,
)
from metaleap.protocols.config import ConfigError
from metaleap.protocols.evaluation import Curve, train_task
from metaleap.protocols.transfer.config import TransferConfig
from metaleap.protocols.transfer.summary import METRICS
from metaleap.shared import ONE_PROCESS, Processes
from metaleap.stacked import stackable
from metaleap.tasks import DataError, TaskSet, open_taskset
from metaleap.tasks.augment import RandomAffine
from metaleap.tasks.base import Task, batches


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
        self.augment = RandomAffine(mode=cfg.augment_resample) if cfg.augment else None
        #: Whether tasks train batched (``task_batching`` resolved for the device and model).
        self.batched = batched.use_task_batching(cfg.task_batching, self.device)
        if self.batched and not stackable(self.model_factory(cfg.seeds[0])()):
            if cfg.task_batching == "on":
                raise ConfigError("task_batching=on: the model has a layer that batched tasks "
                                  "cannot stack (metaleap.stacked)")
            self.batched = False
        self._tasks = SeedTasks(self._build_task, self.device)
        used = sorted({i for s in self.splits.values() for i in s.heldout + s.val + s.pretrain})
        for index in used:  # builds (and so checks) every task once, with the first seed
            self.task(index, cfg.seeds[0])

    def notes(self) -> list[str]:
        """One line naming the methods that meta-train task by task although tasks are
        batched (MAML, finetuning: no batched form; their evaluations are batched)."""
        if not self.batched:
            return []
        alone = [m for m in self.cfg.methods if methods.get(m).meta_trains
                 and not methods.get(m).load().batched_form]
        return [f"task batching is on; {', '.join(alone)} meta-train task by task (no batched "
                "form), their held-out evaluations are batched"] if alone else []

    def config_record(self) -> dict[str, Any]:
        return {"protocol": self.name, "config": self.cfg.to_dict(),
                "methods": self.cfg.resolved_methods()}

    def data_identity(self) -> dict[str, Any]:
        return self.taskset.identity()

    def data_digest(self) -> dict[str, Any] | None:
        """The task set's content: for glyphs the cache file's tensors, each alphabet's images
        and the software and fonts that drew them; for Omniglot each alphabet's images
        (:func:`~metaleap.protocols.base.taskset_digest`)."""
        return taskset_digest(self.taskset)

    def task(self, index: int, seed: int) -> Task:
        """Task ``index`` of ``seed`` on the study's device (one seed's tasks are cached)."""
        return self._tasks.get(index, seed)

    def _build_task(self, index: int, seed: int) -> Task:
        try:
            return self.taskset.task(index, seed, ways=self.cfg.ways,
                                     train_per_class=self.cfg.train_per_class,
                                     test_per_class=self.cfg.test_per_class)
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise ConfigError(f"{self.taskset.names[index]}: {e}") from None

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
        streams = []
        for position in meta_batch_picks(len(split.pretrain), cfg.meta_batch, seed, step):
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
        self.learner: MetaLearner = methods.get(method).load()(model, cfg.options(method),
                                                              context)
        self.step_fn: SupervisedMetaStep | batched.BatchedMetaStep = (
            batched.BatchedMetaStep(self.learner, model, inner_lr=cfg.inner_lr)
            if study.batched and batched.has_batched_form(self.learner, model)
            else SupervisedMetaStep(self.learner, model, inner_lr=cfg.inner_lr))
        self.meta_steps, self.eval_every = cfg.meta_steps, cfg.eval_every
        self.checkpoint_every = cfg.checkpoint_every
        #: Held-out metrics after each meta-step of ``heldout_at`` reached so far.
        self.budget: dict[str, dict[str, list[float]]] = {}

    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        metrics = self.step_fn(self.study.meta_batch(self.cfg, self.seed, step),
                               self.study.processes)
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

    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        curves = self.study.train_curves(init, self.seed, self.split.heldout, "eval",
                                         context.bars,
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
