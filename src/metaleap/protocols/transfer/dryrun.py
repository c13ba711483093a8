"""``metaleap transfer --dry-run``: the transfer study's budget, priced on this machine."""

from __future__ import annotations

import dataclasses

from metaleap import methods
from metaleap.metalearners import ONE_PROCESS, Processes
from metaleap.protocols.base import RunContext
from metaleap.protocols.dryrun import Budget, Phase, share, timed
from metaleap.protocols.transfer.study import TransferRun, TransferStudy


def transfer_budget(study: TransferStudy, steps: int = 8) -> Budget:
    """The transfer study's budget, each method's steps timed on its own network: one
    warm-up meta-step and one timed meta-step of 2 tasks × ``steps`` inner steps (a 2-task
    meta-batch on one process), and ``steps`` steps of training a held-out task."""
    cfg, world = study.cfg, study.processes.world
    small = dataclasses.replace(
        cfg, meta_batch=2, inner_steps=steps, eval_steps=steps, seeds=cfg.seeds[:1],
        per_method={m: {k: v for k, v in over.items() if k not in ("inner_steps", "meta_batch")}
                    for m, over in cfg.per_method.items()})
    timing = TransferStudy(small, study.taskset, study.device, ONE_PROCESS)
    seed = cfg.seeds[0]
    study.processes.barrier()  # the ranks time at once, as they will train
    eval_seconds = None
    priced: dict[str, list[Phase]] = {}
    for method in cfg.methods:
        full = cfg.for_method(method)
        run = TransferRun(timing, method, seed)
        tasks = min(full.meta_batch, full.num_pretrain)
        phases = []
        if methods.get(method).meta_trains and full.meta_steps:
            run.meta_step(0, RunContext())
            per_step = timed(lambda r=run: r.meta_step(1, RunContext()), timing.device) / (
                min(2, cfg.num_pretrain) * steps)
            mine = len(run.learner.share(range(tasks), Processes(world=world)))
            phases.append(Phase("meta", full.meta_steps * mine * full.inner_steps, per_step))
            if cfg.num_val:
                checks = len({0, *range(cfg.eval_every, full.meta_steps + 1, cfg.eval_every),
                              full.meta_steps})
                phases.append(Phase("val", checks * share(cfg.num_val, world) * cfg.eval_steps,
                                    0.0))
        if eval_seconds is None:
            init = run.learner.initialization()
            heldout = timing.splits[seed].heldout[:1]
            timing.train_curves(init, seed, heldout, "eval")
            eval_seconds = timed(lambda i=init, h=heldout: timing.train_curves(i, seed, h, "eval"),
                                 timing.device) / steps
        evaluations = 1 + (len(cfg.heldout_at) if methods.get(method).meta_trains else 0)
        phases.append(Phase("held-out", evaluations * share(cfg.num_heldout, world)
                            * cfg.eval_steps, eval_seconds))
        for p in phases:
            if p.name == "val":
                p.seconds = eval_seconds
        priced[method] = phases
    return Budget("inner steps", len(cfg.seeds), priced, world)
