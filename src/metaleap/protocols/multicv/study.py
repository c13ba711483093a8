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
  interleaved (its learner's strategy: one step of each unfinished task in turn), for as many
  rounds as the meta-learners have meta-steps, under the same stopping rule; no pretraining
  starts from the seed's random encoder.
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

import json
import statistics
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap import methods, seeding
from metaleap.metalearners import Context, MetaLearner, SequentialLearner, TaskHandle
from metaleap.models import ConvNet, init_linear, make_convnet, outside_encoder
from metaleap.protocols.base import (
    MethodRun,
    RunContext,
    SeedTasks,
    StudyProtocol,
    digest_of,
)
from metaleap.protocols.config import ConfigError
from metaleap.protocols.multicv.config import MultiCVConfig
from metaleap.protocols.multicv.training import (
    InnerTraining,
    ModelTrainee,
    Patience,
    Trainee,
    batches_per_epoch,
)
from metaleap.shared import ONE_PROCESS, Processes
from metaleap.tasks.base import Task
from metaleap.tasks.errors import MissingDependencyError
from metaleap.tasks.multicv import LabeledImages, MultiCV


def missing_message(missing: dict[str, str]) -> str:
    """One line naming every missing data set, its install command and the way around it."""
    what = "; ".join(f"{name}: {why}" for name, why in missing.items())
    return (f"Multi-CV data set{'s' if len(missing) > 1 else ''} not installed ({what}); "
            "install, or pass --allow-missing to run on the other data sets")


class MultiCVStudy(StudyProtocol):
    """The protocol bound to a config, its data and a device; see the module docstring.

    Every data set is loaded (and every split checked) in the constructor, so a study that
    cannot run fails before anything is written. A data set whose optional dependency is
    missing raises :class:`MissingDependencyError` naming its install command, unless
    ``allow_missing``: then the study runs on the others, and ``left_out`` (recorded in
    ``config.json`` and the data identity) says what was left out and why.

    With several ``processes`` (torchrun), each meta-step's pretraining data sets are shared
    among them by the learner (finetuning trains all of them on every process) and its sums
    all-reduced; the held-out data sets of consecutive meta-trained runs are then trained
    one per process; the runs that need no other process (the sequential baselines, no
    pretraining) run whole on one process each, dealt round-robin (docs/distributed.md).
    Each process needs a pretraining data set: more processes than a meta-step has data sets
    are refused.
    """

    name = "multicv"

    def __init__(self, cfg: MultiCVConfig, device: torch.device | str = "cpu",
                 allow_missing: bool = False, processes: Processes = ONE_PROCESS) -> None:
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
        self.device, self.processes = torch.device(device), processes
        pretrain = len(self.cfg.datasets) - 1
        if processes.world > pretrain:
            raise ConfigError(f"{processes.world} processes but a meta-step pretrains on "
                              f"{pretrain} data sets: start at most {pretrain}")
        self.classes = {name: self.dataset(name).num_classes for name in self.cfg.datasets}
        self._digests: dict[str, str] = {}
        self._tasks = SeedTasks(self._build_task, self.device)
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
            datasets[name] = {"source": data.source, "num_classes": data.num_classes,
                              "images": len(data), "sha256": self._sha256(name)}
        return {"kind": "multicv", "data_seed": self.cfg.data_seed, "datasets": datasets,
                "left_out": sorted(self.left_out)}

    def data_digest(self) -> dict[str, Any]:
        """``sha256`` over the data sets' digests (those of :meth:`data_identity`, images then
        labels), and each data set's."""
        datasets = {name: self._sha256(name) for name in self.cfg.datasets}
        return {"kind": "multicv", "sha256": digest_of(datasets), "datasets": datasets}

    def _sha256(self, name: str) -> str:
        """Data set ``name``'s :meth:`~metaleap.tasks.multicv.LabeledImages.sha256`, once."""
        if name not in self._digests:
            self._digests[name] = self.dataset(name).sha256()
        return self._digests[name]

    def task(self, name: str, seed: int) -> Task:
        """Data set ``name`` split by ``seed``, on the study's device (one seed is cached)."""
        return self._tasks.get(name, seed)

    def _build_task(self, name: str, seed: int) -> Task:
        try:
            return self.data.task(self.data.names.index(name), seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None

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
                    sequential = methods.get(method).kind == methods.SEQUENTIAL
                    kind = SequentialRun if sequential else MetaRun
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
    def round_metrics(best: Sequence[float], steps: Sequence[float]) -> dict[str, float]:
        """A pretraining round's metrics: mean best validation error and steps per task."""
        return {"val_error": statistics.fmean(best), "inner_steps": statistics.fmean(steps)}


class MetaRun(MultiCVRun):
    """A meta-learner (Leap, Reptile, FOMAML), finetuning or no pretraining: θ⁰ is the
    encoder; every task has its own head."""

    def __init__(self, study: MultiCVStudy, method: str, seed: int, holdout: str) -> None:
        super().__init__(study, method, seed, holdout)
        template = study.model(self.pretrain[0], seed, "template")
        context = Context(num_tasks=len(self.pretrain), seed=seed, inner_lr=self.cfg.inner_lr,
                          exclude=outside_encoder,
                          num_classes=tuple(study.classes[d] for d in self.pretrain))
        self.learner: MetaLearner = methods.get(method).load()(
            template, self.cfg.options(method), context)
        self.meta_steps = self.cfg.meta_steps
        self.patience = Patience(self.cfg.meta_patience)
        self.collective = methods.get(method).meta_trains  # no pretraining: one process
        self.evaluation_alone = True  # one held-out data set: shared out under torchrun

    def state(self) -> dict[str, Any]:
        return {"meta_patience": self.patience.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.patience.load_state(state["meta_patience"])

    def stopped(self) -> bool:
        return self.patience.stopped

    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        processes = self.study.processes
        runs, metrics = self.learner.meta_step(
            [PretrainingTask(self, step, j, name) for j, name in enumerate(self.pretrain)],
            processes)
        rows = self.gather([run for run in runs if isinstance(run, PretrainingRun)])
        metrics = {**metrics, **self.round_metrics(rows[:, 0].tolist(), rows[:, 1].tolist())}
        self.patience.update(metrics["val_error"])
        return metrics

    def gather(self, runs: Sequence[PretrainingRun]) -> Tensor:
        """Every pretraining task's (best validation error, steps), from all processes: each
        fills the rows of its share (:meth:`Processes.share`, whatever tasks its learner
        trained) in a zero table that is all-reduced, exactly; so every process sees the same
        metrics and stops at the same meta-step."""
        processes = self.study.processes
        mine = set(processes.share(range(len(self.pretrain))))
        rows = torch.zeros(len(self.pretrain), 3, dtype=torch.float64)
        for run in runs:
            if run.index in mine:
                rows[run.index] = torch.tensor([run.training.patience.best,
                                                run.training.steps, 1.0], dtype=torch.float64)
        rows = processes.all_sum(rows)
        if not bool((rows[:, 2] == 1).all()):
            raise RuntimeError(f"{self.method}: the processes trained "
                               f"{rows[:, 2].tolist()} times each pretraining data set, "
                               "not once")
        return rows[:, :2]

    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        model = self.study.model(self.holdout, self.seed, "eval")
        model.load_state_dict(init, strict=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.cfg.inner_lr)
        training = self.inner(self.study.task(self.holdout, self.seed),
                              ModelTrainee(model, model), optimizer, "eval", self.holdout)
        return self.result(training.run(context.bars, f"{self.method} seed {self.seed} "
                                                       f"held-out {self.holdout}"))


class SequentialRun(MultiCVRun):
    """Progressive Nets or HAT: its "meta-steps" are the pretraining data sets, one each in
    order; the held-out data set is its next task, trained inside the exported network.
    Under torchrun it runs whole on one process (:attr:`MethodRun.collective`)."""

    collective = False

    def __init__(self, study: MultiCVStudy, method: str, seed: int, holdout: str) -> None:
        super().__init__(study, method, seed, holdout)
        self.learner = self.network()
        self.meta_steps = len(self.pretrain)

    def network(self) -> SequentialLearner:
        """The method's network for the pretraining data sets and the held-out one."""
        classes = [self.study.classes[d] for d in [*self.pretrain, self.holdout]]
        return methods.get(self.method).load()(
            classes, self.cfg.options(self.method), channels=self.cfg.channels,
            blocks=self.cfg.blocks, seed=self.seed).to(self.study.device)

    def learn(self, net: SequentialLearner, index: int, name: str, purpose: str,
              *stream: int | str, progress: bool = False) -> InnerTraining:
        """Task ``index`` of ``net``, data set ``name``, on the batches (seed, purpose,
        *stream); the trained task stays usable (its scores) after it ends."""
        task = self.study.task(name, self.seed)
        with net.task(index, batches_per_epoch(task, self.cfg.batch_size)) as t:
            optimizer = torch.optim.SGD(t.parameters, lr=self.cfg.inner_lr)
            return self.inner(task, t, optimizer, purpose, *stream).run(
                progress, f"{self.method} seed {self.seed} held-out {name}")

    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        name = self.pretrain[step]
        training = self.learn(self.learner, step, name, "inner", 0, name)
        return self.round_metrics([training.patience.best], [training.steps])

    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        net = self.network()
        net.load_state_dict(init)
        return self.result(self.learn(net, len(self.pretrain), self.holdout, "eval",
                                      self.holdout, progress=context.bars))



class PretrainingTask:
    """Pretraining data set ``name`` as task ``index`` of a meta-step: a fresh head on θ⁰,
    the protocol's inner training (:class:`InnerTraining`) on the batches of (seed, "inner",
    step, name); a :class:`~metaleap.metalearners.MetaBatchTask`."""

    def __init__(self, run: MetaRun, step: int, index: int, name: str) -> None:
        self.run, self.step, self.index, self.name = run, step, index, name

    def model(self) -> nn.Module:
        return self.run.study.model(self.name, self.run.seed, self.step)

    def optimizer(self, params: Iterable[Tensor], momentum: float = 0.0
                  ) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.run.cfg.inner_lr, momentum=momentum)

    def start(self, handle: TaskHandle) -> PretrainingRun:
        assert handle.optimizer is not None
        training = self.run.inner(self.run.study.task(self.name, self.run.seed),
                                  ModelTrainee(handle.model, handle.module, handle),
                                  handle.optimizer, "inner", self.step, self.name)
        return PretrainingRun(self.index, handle, training)


class PretrainingRun:
    """Pretraining task ``index`` in training (a :class:`~metaleap.metalearners.TaskRun`)."""

    def __init__(self, index: int, handle: TaskHandle, training: InnerTraining) -> None:
        self.index, self.handle, self.training = index, handle, training

    @property
    def done(self) -> bool:
        return self.training.done

    def advance(self) -> None:
        self.training.advance()

    def close(self) -> None:
        x, y = self.training.final_batch()
        self.handle.close(lambda: F.cross_entropy(self.handle.model(x), y))
