"""``metaleap multicv --dry-run``: the Multi-CV study's budget, priced on this machine."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from metaleap import methods
from metaleap.protocols.dryrun import Budget, Phase, timed
from metaleap.protocols.multicv.study import MultiCVStudy
from metaleap.protocols.multicv.training import batches_per_epoch
from metaleap.tasks.base import batches


def multicv_budget(study: MultiCVStudy, steps: int = 4) -> Budget:
    """An upper bound of the Multi-CV study's SGD steps (every task runs all ``max_epochs``,
    every method all ``meta_steps``), priced by ``steps`` timed SGD steps of the encoder on
    a real batch."""
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
    priced: dict[str, list[Phase]] = {}
    holdouts = cfg.holdouts()
    for method in cfg.methods:
        full = cfg.for_method(method)
        pretrain = [sum(epochs[d] for d in cfg.datasets if d != h) for h in holdouts]
        heldout = [epochs[h] for h in holdouts]
        mean_pre = math.ceil(sum(pretrain) / len(holdouts))
        mean_held = math.ceil(sum(heldout) / len(holdouts))
        if methods.get(method).kind == methods.SEQUENTIAL:  # each pretraining set once
            rounds = 1
        else:  # meta-learners and finetuning: up to meta_steps rounds; no pretraining: none
            rounds = full.meta_steps if methods.get(method).meta_trains else 0
        phases = [Phase("pretrain", rounds * mean_pre, per_step)] if rounds else []
        phases.append(Phase("held-out", mean_held, per_step))
        priced[method] = phases
    return Budget("SGD steps (at most)", len(cfg.seeds) * len(holdouts), priced,
                  notes=["Multi-CV tasks stop early (patience), so these are upper bounds; "
                         "HAT's and progressive nets' steps are priced as the encoder's."])
