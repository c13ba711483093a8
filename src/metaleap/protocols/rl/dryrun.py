"""``metaleap rl --dry-run``: the RL study's budget, priced on this machine."""

from __future__ import annotations

import math

import torch

from metaleap import methods
from metaleap.protocols.dryrun import Budget, Phase, duration, timed
from metaleap.protocols.rl.a2c import Episodes, a2c_segment
from metaleap.protocols.rl.config import RLConfig
from metaleap.protocols.rl.study import RLStudy


def rl_budget(study: RLStudy, updates: int = 4) -> Budget:
    """The RL study's environment steps, priced by ``updates`` timed A2C updates of a fresh
    agent on the first pretraining game (less the time of a one-update segment: building and
    resetting the environments); Leap's share of a step is
    negligible (``docs/benchmarks.md``), so every method is priced the same."""
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
    priced: dict[str, list[Phase]] = {}
    for method in cfg.methods:
        full = cfg.for_method(method)
        phases = []
        if methods.get(method).meta_trains and full.meta_steps:
            games = min(full.meta_batch, len(cfg.pretrain))
            phases.append(Phase("meta", full.meta_steps * games * cfg.train_steps, per_step))
        phases.append(Phase("held-out", len(cfg.heldout) * cfg.eval_steps, per_step))
        priced[method] = phases
    random = len(cfg.heldout) * cfg.random_steps
    return Budget("environment steps", len(cfg.seeds), priced,
                  notes=[f"plus {random:,d} environment steps of a random policy per seed "
                         "(the 0 of the normalised scores)", *scale_out(cfg, per_step)])


#: The ranks (of one thread each) the scale-out table prices.
RANKS = (1, 2, 4, 8, 16, 32)


def scale_out(cfg: RLConfig, per_step: float) -> list[str]:
    """The study's wall time on R ranks under torchrun, each rank one thread at ``per_step``
    seconds per environment step: the games of a meta-batch and the held-out games are
    shared among the ranks (a rank trains at most ⌈games / R⌉ of them, one after another),
    the seeds and methods run in turn. Rank-hours count every rank for the whole wall time,
    idle or not (docs/distributed.md, "The paper's Atari budget")."""
    def wall(ranks: int) -> float:
        steps = 0
        for method in cfg.methods:
            full = cfg.for_method(method)
            if methods.get(method).meta_trains and full.meta_steps:
                games = min(full.meta_batch, len(cfg.pretrain))
                steps += full.meta_steps * math.ceil(games / ranks) * cfg.train_steps
            steps += math.ceil(len(cfg.heldout) / ranks) * cfg.eval_steps
        return len(cfg.seeds) * steps * per_step

    lines = [f"scale-out under torchrun ({1 / per_step:,.0f} environment steps/s per rank of "
             "1 thread, as timed here):", f"{'ranks':>7s} {'wall':>12s} {'rank-hours':>12s}"]
    lines += [f"{r:7d} {duration(wall(r)):>12s} {wall(r) * r / 3600:12,.0f}" for r in RANKS]
    return lines
