"""The generic meta-trainer: every protocol's (seed, method) runs go through :func:`train`.

It resumes from the store's checkpoint, logs a validation record before the first meta-step
and every ``eval_every`` steps, stops with :class:`DivergedError` when the initialization
stops being finite, checkpoints every ``checkpoint_every`` steps, ends meta-training early
when :meth:`MethodRun.stopped` says so, then evaluates and exports the initialization. A run
that finished is read back from the store and not run again.

A checkpoint holds, in separate slots: the step count, the learner's module state and extra
state (its meta-optimizer), the run's own :meth:`MethodRun.state` (an early-stopping
counter, held-out results on the way) and, when a run saved it through its
:class:`RunContext` inside a long meta-step or evaluation, that step's progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from metaleap import methods
from metaleap.devices import thread_warning
from metaleap.protocols.base import (
    CheckpointError,
    DivergedError,
    MethodRun,
    RunContext,
    Store,
    StudyProtocol,
)
from metaleap.shared import ONE_PROCESS, Processes


def train(run: MethodRun, store: Store, progress: bool = True) -> dict[str, Any]:
    """Meta-train ``run`` (resuming from ``store``), evaluate it and return its result."""
    return finish(run, store, meta_train(run, store, progress))


def finish(run: MethodRun, store: Store, context: RunContext) -> dict[str, Any]:
    """Evaluate ``run``'s initialization, export it to ``store`` and return the result, with
    what meta-training did to θ⁰ (``"meta_training"``, see :func:`meta_train`)."""
    init = run.learner.initialization()
    result = run.evaluate(init, context)
    store.export_initialization(run.key, init, run.export_metadata())
    return ({**result, "meta_training": dict(context.tally)} if context.tally.get("meta_steps")
            else result)


def meta_train(run: MethodRun, store: Store, progress: bool = True) -> RunContext:
    """Meta-train ``run``, resuming from ``store``; returns the evaluation's context.

    The context's ``tally`` counts the meta-steps taken, those that moved θ⁰ and the tasks
    dropped for a non-finite loss or gradient; a meta-step whose every task was dropped
    leaves θ⁰ where it was, and says so in one line on stderr as it happens."""
    learner, key = run.learner, run.key
    start, resumed = 0, None
    tally = {"meta_steps": 0, "moved": 0, "tasks_dropped": 0}
    state = store.load_state(key)
    if state is not None:
        try:
            learner.load_state_dict(state["module"])
            learner.load_extra_state(state["extra"])
            run.load_state(state.get("run", {}))
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoints/{key}.pt does not fit {run.method} ({first}): delete it to "
                "restart this (seed, method) from scratch") from None
        start, resumed = int(state["step"]), state.get("progress")
        tally.update(state.get("tally", {"meta_steps": start, "moved": start}))

    def save(step: int, inside: dict[str, Any] | None = None) -> None:
        """Checkpoint after ``step`` meta-steps (with ``inside``: within the next step)."""
        own = run.state()
        store.save_state(key, {"step": step, "module": learner.state_dict(),
                               "extra": learner.extra_state(), "tally": dict(tally),
                               **({"run": own} if own else {}),
                               **({"progress": inside} if inside is not None else {})})

    def context(step: int) -> RunContext:
        """The context of meta-step ``step`` (or of the evaluation, after the last): the
        resumed progress goes to the first step the trainer runs."""
        nonlocal resumed
        found, resumed = resumed, None
        return RunContext(found, lambda inside: save(step, inside), progress, tally)

    steps = run.meta_steps if methods.get(run.method).meta_trains else 0
    if start == 0 and steps:
        _validate(run, store, 0)
    bar = tqdm(range(start, steps), desc=f"{run.method} seed {run.seed}", unit="meta-step",
               initial=start, total=steps, disable=not progress or not steps,
               dynamic_ncols=True)
    for step in bar:
        began = time.perf_counter()
        metrics = run.meta_step(step, context(step))
        if not all(torch.isfinite(t).all() for t in learner.initialization().values()):
            raise DivergedError(f"{run.method} diverged at meta-step {step + 1} (seed "
                                f"{run.seed}): its initialization is no longer finite; lower "
                                "the learning rates")
        store.log({"event": "meta_step", "seed": run.seed, "method": run.method,
                   "step": step + 1, "seconds": time.perf_counter() - began, **metrics})
        _count(tally, run, step + 1, metrics)
        bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if isinstance(v, float)},
                        refresh=False)
        stop = run.stopped()
        if (step + 1) % run.eval_every == 0 or step + 1 == steps or stop:
            _validate(run, store, step + 1)
        if stop:
            break
        if (step + 1) % run.checkpoint_every == 0 and step + 1 < steps:
            save(step + 1)
    return context(steps)


def _count(tally: dict[str, int], run: MethodRun, step: int, metrics: dict[str, Any]) -> None:
    """Add meta-step ``step`` to ``tally``; warn when it dropped every task (θ⁰ stood still),
    once: from rank 0 for a run that every process shares. A method that drops no task
    (finetuning) moves θ⁰ at every step."""
    dropped = int(metrics.get("dropped", 0))
    moved = metrics.get("tasks", 1) > dropped  # "tasks": those finished, dropped or not
    tally["meta_steps"] += 1
    tally["moved"] += moved
    tally["tasks_dropped"] += dropped
    if not moved and (not run.collective or os.environ.get("RANK", "0") == "0"):
        tqdm.write(f"warning: {run.method} seed {run.seed}, meta-step {step}: all {dropped} "
                   "tasks were dropped (a non-finite loss or gradient), so θ⁰ did not move; "
                   "lower the learning rates", file=sys.stderr)


def _validate(run: MethodRun, store: Store, step: int) -> None:
    record = run.validate(step)
    if record is not None:
        store.log({"event": "validation", "seed": run.seed, "method": run.method,
                   "step": step, **record})


def run_study(protocol: StudyProtocol, store: Store, progress: bool = True
              ) -> dict[str, dict[str, Any]]:
    """Every (seed, method) result of ``protocol``, resuming what ``store`` holds.

    On the CPU it first warns, in one line on stderr (local rank 0 only), when this process's
    threads exceed the free cores (:func:`metaleap.devices.thread_warning`)."""
    device = getattr(protocol, "device", None)
    if device is not None and torch.device(device).type == "cpu" and os.environ.get(
            "LOCAL_RANK", "0") == "0":
        note = thread_warning()
        if note is not None:
            print(note, file=sys.stderr, flush=True)
    processes = getattr(protocol, "processes", ONE_PROCESS)
    results: dict[str, dict[str, Any]] = {}
    alone: list[MethodRun] = []  # consecutive runs to share out whole, one process each
    # runs whose evaluations are shared out, one each, with their evaluation's context
    meta_trained: list[tuple[MethodRun, RunContext]] = []

    def share_out() -> None:  # each run whole on one process
        results.update(_deal_out(alone, processes, store,
                                 lambda run, memory: train(run, memory, progress)))
        alone.clear()

    def evaluate_out() -> None:  # the meta-trained runs' evaluations, one process each
        contexts = {run.key: context for run, context in meta_trained}
        results.update(_deal_out([run for run, _ in meta_trained], processes, store,
                                 lambda run, memory: finish(run, memory, contexts[run.key])))
        meta_trained.clear()

    for run in protocol.runs():
        result = store.load_result(run.key)
        if result is None and processes.world > 1 and not run.collective:
            alone.append(run)
            continue
        share_out()
        if result is None and processes.world > 1 and run.evaluation_alone:
            meta_trained.append((run, meta_train(run, store, progress)))
            if len(meta_trained) == processes.world:
                evaluate_out()
            continue
        if result is None:
            result = train(run, store, progress)
            store.save_result(run.key, result)
        results[run.key] = result
    share_out()
    evaluate_out()
    return results


class SavePoints:
    """Where a run saves its progress inside one long meta-step or evaluation, at most
    ``points`` times; ``progress`` objects give their plain state with ``.state()``, and
    ``read(state)`` turns a saved state back into one (``None`` for none).

    With one process, each save is a checkpoint (:attr:`RunContext.save`). With several,
    every process saves at the same points together: one collective call gathers every
    process's progress into rank 0's checkpoint (with the point's number), and a process that
    has done all its share repeats its last progress (``idle`` at first) until every process
    has (:meth:`finish`), so the processes make the same number of calls. On resume each
    process takes its own progress back (:attr:`resumed`) and counts on from the saved point.
    """

    def __init__(self, key: str, context: RunContext, processes: Processes, points: int,
                 idle: Any, read: Callable[[dict[str, Any] | None], Any]) -> None:
        self.context, self.processes, self.points = context, processes, points
        self.last = idle  # what a process with nothing more to do reports
        self.point = 0
        state = context.resumed
        if processes.world == 1:
            if state is not None and "ranks" in state:
                raise CheckpointError(f"checkpoints/{key}.pt was saved inside a meta-step "
                                      f"or the evaluation by {state['world']} processes: "
                                      "resume it with as many")
            self.resumed = read(state)
            return
        if state is not None and (state.get("world") != processes.world
                                  or "ranks" not in state):
            raise CheckpointError(f"checkpoints/{key}.pt was saved inside a meta-step or "
                                  f"the evaluation by {state.get('world', 1)} process(es): "
                                  "resume it with as many")
        self.resumed = None if state is None else read(state["ranks"][processes.rank])
        if state is not None:
            self.point, self.last = int(state["point"]), self.resumed

    def __call__(self, progress: Any) -> None:
        if self.processes.world == 1:
            self.context.save(progress.state())
            return
        self.last, self.point = progress, self.point + 1
        self.context.save({"kind": "ranks", "world": self.processes.world, "point": self.point,
                           "ranks": self.processes.all_gather(progress.state())})

    def finish(self) -> None:
        """With several processes, repeat the last progress up to ``points`` saves."""
        if self.processes.world > 1:
            while self.point < self.points:
                self(self.last)


class _Memory:
    """A :class:`Store` in memory for a run one process trains alone: it resumes from the
    run folder's checkpoint, if any, and keeps the log, the result and the export for rank
    0 to write; it saves no checkpoint (a restarted group trains the run again)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records: list[dict[str, Any]] = []
        self.export: tuple[dict[str, torch.Tensor], dict[str, str]] = ({}, {})

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def save_state(self, key: str, state: dict[str, Any]) -> None:
        """Nothing: see the class docstring."""

    def load_state(self, key: str) -> dict[str, Any] | None:
        return self.store.load_state(key)

    def save_result(self, key: str, result: dict[str, Any]) -> None:
        """Nothing: the trainer hands the result on."""

    def load_result(self, key: str) -> dict[str, Any] | None:
        return None

    def export_initialization(self, key: str, tensors: dict[str, torch.Tensor],
                              metadata: dict[str, str]) -> None:
        self.export = ({k: t.detach().cpu().clone() for k, t in tensors.items()}, metadata)


def _deal_out(runs: list[MethodRun], processes: Processes, store: Store,
              work: Callable[[MethodRun, Store], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``work(run, store)`` for ``runs`` round-robin, each on one process, into a store in
    memory; every log record, export and result then goes to every process
    (:meth:`Processes.all_gather`, exact), and ``store`` (rank 0's run folder) receives them
    in the runs' order, as one process would have written them."""
    mine = {}
    for i, run in enumerate(runs):
        if i % processes.world == processes.rank:
            memory = _Memory(store)
            result = work(run, memory)
            mine[run.key] = (memory.records, memory.export, result)
    found = {key: done for part in processes.all_gather(mine) for key, done in part.items()}
    results = {}
    for run in runs:
        records, (tensors, metadata), result = found[run.key]
        for record in records:
            store.log(record)
        store.export_initialization(run.key, tensors, metadata)
        store.save_result(run.key, result)
        results[run.key] = result
    return results
