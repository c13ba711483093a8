"""``metaleap transfer --dry-run``: the transfer study's budget, priced on this machine."""

from __future__ import annotations

import dataclasses
import functools
import statistics

from metaleap import methods
from metaleap.protocols.base import RunContext
from metaleap.protocols.dryrun import Budget, Phase, share, timed
from metaleap.protocols.transfer.study import TransferRun, TransferStudy
from metaleap.shared import ONE_PROCESS, Processes


def transfer_budget(study: TransferStudy, steps: int = 4, repeats: int = 3) -> Budget:
    """The transfer study's budget, each method's steps timed on its own network.

    A meta-step of 2 tasks is timed at two horizons, ``steps`` and ``3 * steps`` inner steps,
    ``repeats`` times each after one warm-up (medians, interleaved, so a burst of load moves
    both alike): the difference gives the seconds of one inner step, the rest each task's
    fixed cost (drawing its data, loading θ⁰, Leap's extra forward pass for f(θ^K)), which a
    task of K inner steps spreads over K. One timed horizon alone would spread that fixed cost
    over its few steps and overstate a method with a larger one. Held-out training is timed
    over ``3 * steps`` steps, ``repeats`` times (median)."""
    cfg, world = study.cfg, study.processes.world
    horizons = (steps, 3 * steps)
    timings = [TransferStudy(dataclasses.replace(
        cfg, meta_batch=2, inner_steps=k, eval_steps=k, seeds=cfg.seeds[:1],
        per_method={m: {k: v for k, v in over.items() if k not in ("inner_steps", "meta_batch")}
                    for m, over in cfg.per_method.items()}),
        study.taskset, study.device, ONE_PROCESS) for k in horizons]
    seed, pair = cfg.seeds[0], min(2, cfg.num_pretrain)
    study.processes.barrier()  # the ranks time at once, as they will train
    eval_seconds = None
    priced: dict[str, list[Phase]] = {}
    for method in cfg.methods:
        full = cfg.for_method(method)
        runs = [TransferRun(timing, method, seed) for timing in timings]
        tasks = min(full.meta_batch, full.num_pretrain)
        phases = []
        if methods.get(method).meta_trains and full.meta_steps:
            for run in runs:
                run.meta_step(0, RunContext())
            short, long = (statistics.median(t) for t in zip(*[
                [timed(lambda r=run, i=i: r.meta_step(i, RunContext()), study.device)
                 for run in runs] for i in range(1, repeats + 1)], strict=True))
            per_step = max(long - short, 0.0) / (pair * (horizons[1] - horizons[0]))
            fixed = max(short / pair - horizons[0] * per_step, 0.0)
            mine = len(runs[0].learner.share(range(tasks), Processes(world=world)))
            phases.append(Phase("meta", full.meta_steps * mine * full.inner_steps,
                                per_step + fixed / full.inner_steps))
            if cfg.num_val:
                checks = len({0, *range(cfg.eval_every, full.meta_steps + 1, cfg.eval_every),
                              full.meta_steps})
                phases.append(Phase("val", checks * share(cfg.num_val, world) * cfg.eval_steps,
                                    0.0))
        if eval_seconds is None:
            timing = timings[1]
            evaluate = functools.partial(timing.train_curves, runs[1].learner.initialization(),
                                         seed, timing.splits[seed].heldout[:1], "eval")
            evaluate()
            eval_seconds = statistics.median(timed(evaluate, study.device)
                                             for _ in range(repeats)) / horizons[1]
        evaluations = 1 + (len(cfg.heldout_at) if methods.get(method).meta_trains else 0)
        phases.append(Phase("held-out", evaluations * share(cfg.num_heldout, world)
                            * cfg.eval_steps, eval_seconds))
        for p in phases:
            if p.name == "val":
                p.seconds = eval_seconds
        priced[method] = phases
    return Budget("inner steps", len(cfg.seeds), priced, world)
