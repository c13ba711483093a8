"""``metaleap rl --dry-run``: the RL study's budget, priced on this machine."""

from __future__ import annotations

import torch

from metaleap import methods
from metaleap.protocols.dryrun import Budget, Phase, timed
from metaleap.protocols.rl.a2c import Episodes, a2c_segment
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
                         "(the 0 of the normalised scores)"])
