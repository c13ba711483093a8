"""``--dry-run``: a study's budget, priced on this machine before it runs; writes nothing.

The budget counts, per method and seed, the work a study does in its own units: inner SGD
steps for the supervised protocols (meta-training, validation and held-out training; one
step is a forward, backward and update on one batch), environment steps for RL. A few real
steps of every method on the chosen device give seconds per unit, and the two make the
estimate. Under torchrun every rank times its steps at once (so the estimate sees the ranks
compete for the cores) and the work a protocol shares among processes is divided by their
number. Multi-CV tasks stop early, so its budget and estimate are upper bounds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Phase:
    """One kind of work of a method, per seed: ``units`` (this process's share) at
    ``seconds`` per unit."""

    name: str
    units: int
    seconds: float


@dataclass
class Budget:
    """What a study will run: per method, its phases per seed, and how many seeds (or
    (held-out set, seed) pairs) each method runs."""

    unit: str
    runs: int
    methods: dict[str, list[Phase]]
    processes: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)

    def units(self, method: str) -> int:
        return sum(p.units for p in self.methods[method])

    def seconds(self, method: str) -> float:
        return self.runs * sum(p.units * p.seconds for p in self.methods[method])

    def render(self) -> str:
        """The budget and the estimate as a table."""
        lines = [f"dry run: {self.runs} run(s) per method"
                 + (f", {self.processes} processes (per-process share)"
                    if self.processes > 1 else ""),
                 f"{'method':10s} {self.unit + ' per run':>26s} {'in all':>16s} "
                 f"{'ms each':>10s} {'estimated wall':>16s}"]
        total_units, total_seconds = 0, 0.0
        for method, phases in self.methods.items():
            units = self.units(method)
            per = self.seconds(method) / max(1, units * self.runs)
            total_units += units * self.runs
            total_seconds += self.seconds(method)
            lines.append(f"{method:10s} {units:26,d} {units * self.runs:16,d} "
                         f"{1000 * per:10.2f} {duration(self.seconds(method)):>16s}")
            for p in phases:
                lines.append(f"  {p.name:8s} {p.units:26,d} {p.units * self.runs:16,d} "
                             f"{1000 * p.seconds:10.2f}")
        lines.append(f"{'all':10s} {'':26s} {total_units:16,d} {'':10s} "
                     f"{duration(total_seconds):>16s}")
        return "\n".join(lines + self.notes)


def duration(seconds: float) -> str:
    """``seconds`` as s, min, h, days or years."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.1f} years"


def timed(fn: Callable[[], Any], sync: torch.device) -> float:
    """Seconds of one call of ``fn`` (after its device finished)."""
    if sync.type == "cuda":
        torch.cuda.synchronize(sync)
    start = time.perf_counter()
    fn()
    if sync.type == "cuda":
        torch.cuda.synchronize(sync)
    return time.perf_counter() - start


def share(n: int, processes: int) -> int:
    """The largest share of ``n`` items that one of ``processes`` processes takes."""
    return math.ceil(n / processes)


# ---------------------------------------------------------------- transfer
def transfer_budget(study: Any, steps: int = 8) -> Budget:
    """The transfer study's budget, each method's steps timed on its own network: one
    warm-up meta-step and one timed meta-step of 2 tasks × ``steps`` inner steps (a 2-task
    meta-batch on one process), and ``steps`` steps of training a held-out task."""
    from metaleap.metalearners import METHODS
    from metaleap.protocols.base import ONE_PROCESS
    from metaleap.protocols.transfer import TransferRun, TransferStudy

    cfg, world = study.cfg, study.processes.world
    small = dataclasses.replace(
        cfg, meta_batch=2, inner_steps=steps, eval_steps=steps, seeds=cfg.seeds[:1],
        per_method={m: {k: v for k, v in over.items() if k not in ("inner_steps", "meta_batch")}
                    for m, over in cfg.per_method.items()})
    timing = TransferStudy(small, study.taskset, study.device, ONE_PROCESS)
    seed = cfg.seeds[0]
    study.processes.barrier()  # the ranks time at once, as they will train
    eval_seconds = None
    methods: dict[str, list[Phase]] = {}
    for method in cfg.methods:
        full = cfg.for_method(method)
        run = TransferRun(timing, method, seed)
        tasks = min(full.meta_batch, full.num_pretrain)
        phases = []
        if METHODS[method].meta_trains and full.meta_steps:
            run.meta_step(0)
            per_step = timed(lambda r=run: r.meta_step(1), timing.device) / (
                min(2, cfg.num_pretrain) * steps)
            mine = tasks if run.learner.interleaved else share(tasks, world)
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
        evaluations = 1 + (len(cfg.heldout_at) if METHODS[method].meta_trains else 0)
        phases.append(Phase("held-out", evaluations * share(cfg.num_heldout, world)
                            * cfg.eval_steps, eval_seconds))
        for p in phases:
            if p.name == "val":
                p.seconds = eval_seconds
        methods[method] = phases
    return Budget("inner steps", len(cfg.seeds), methods, world)


# ---------------------------------------------------------------- multicv
def multicv_budget(study: Any, steps: int = 4) -> Budget:
    """An upper bound of the Multi-CV study's SGD steps (every task runs all ``max_epochs``,
    every method all ``meta_steps``), priced by ``steps`` timed SGD steps of the encoder on
    a real batch."""
    import torch.nn.functional as F

    from metaleap.metalearners import METHODS, SEQUENTIAL
    from metaleap.protocols.multicv import batches_per_epoch
    from metaleap.tasks.base import batches

    cfg = study.cfg
    seed = cfg.seeds[0]
    epochs = {d: cfg.max_epochs * batches_per_epoch(study.task(d, seed), cfg.batch_size)
              for d in cfg.datasets}
    name = cfg.datasets[0]
    model = study.model(name, seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr)
    data = list(batches(study.task(name, seed), cfg.batch_size, steps + 1,
                        torch.Generator().manual_seed(0)))

    def sgd() -> None:
        for x, y in data[1:]:
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()

    x, y = data[0]
    F.cross_entropy(model(x), y).backward()
    opt.zero_grad()
    per_step = timed(sgd, study.device) / steps
    methods: dict[str, list[Phase]] = {}
    holdouts = cfg.holdouts()
    for method in cfg.methods:
        full = cfg.for_method(method)
        pretrain = [sum(epochs[d] for d in cfg.datasets if d != h) for h in holdouts]
        heldout = [epochs[h] for h in holdouts]
        mean_pre = math.ceil(sum(pretrain) / len(holdouts))
        mean_held = math.ceil(sum(heldout) / len(holdouts))
        if method in SEQUENTIAL:  # progressive nets, HAT: each pretraining set once
            rounds = 1
        else:  # meta-learners and finetuning: up to meta_steps rounds; no pretraining: none
            rounds = full.meta_steps if METHODS[method].meta_trains else 0
        phases = [Phase("pretrain", rounds * mean_pre, per_step)] if rounds else []
        phases.append(Phase("held-out", mean_held, per_step))
        methods[method] = phases
    return Budget("SGD steps (at most)", len(cfg.seeds) * len(holdouts), methods,
                  notes=["Multi-CV tasks stop early (patience), so these are upper bounds; "
                         "HAT's and progressive nets' steps are priced as the encoder's."])


# ---------------------------------------------------------------- rl
def rl_budget(study: Any, updates: int = 4) -> Budget:
    """The RL study's environment steps, priced by ``updates`` timed A2C updates of a fresh
    agent on the first pretraining game (less the time of a one-update segment: building and
    resetting the environments); Leap's share of a step is
    negligible (``docs/benchmarks.md``), so every method is priced the same."""
    from metaleap.metalearners import METHODS
    from metaleap.protocols.rl import Episodes, a2c_segment

    cfg = study.cfg
    game = cfg.pretrain[0]
    agent = study.agent(game, cfg.seeds[0])
    opt = study.optimizer(agent)

    def segment(n: int) -> None:
        a2c_segment(agent, opt, cfg, study.games[game], n, 0, torch.Generator().manual_seed(0),
                    Episodes(), 0)

    segment(1)
    setup = timed(lambda: segment(1), study.device)  # environments, reset, one update
    per_step = max(0.0, timed(lambda: segment(1 + updates), study.device) - setup) / (
        updates * cfg.update_steps)
    methods: dict[str, list[Phase]] = {}
    for method in cfg.methods:
        full = cfg.for_method(method)
        phases = []
        if METHODS[method].meta_trains and full.meta_steps:
            games = min(full.meta_batch, len(cfg.pretrain))
            phases.append(Phase("meta", full.meta_steps * games * cfg.train_steps, per_step))
        phases.append(Phase("held-out", len(cfg.heldout) * cfg.eval_steps, per_step))
        methods[method] = phases
    random = len(cfg.heldout) * cfg.random_steps
    return Budget("environment steps", len(cfg.seeds), methods,
                  notes=[f"plus {random:,d} environment steps of a random policy per seed "
                         "(the 0 of the normalised scores)"])
