"""The RL study's ``results.json``: held-out learning curves and normalised scores."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from metaleap import methods
from metaleap.stats import mean_ci, paired_groups, pooled

SCHEMA_VERSION = 1


def moving_average(steps: Sequence[int], returns: Sequence[float], grid: Sequence[int],
                   window: int, before: float) -> list[float]:
    """At each grid step, the mean return of the last ``window`` episodes finished by then
    (``before`` until the first episode finishes)."""
    out, end = [], 0
    for point in grid:
        while end < len(steps) and steps[end] <= point:
            end += 1
        out.append(statistics.fmean(returns[max(0, end - window):end]) if end else before)
    return out


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of an RL run: held-out learning curves and scores per method.

    Scores are normalised per game, 0 = the uniformly random policy (mean over seeds of
    ``random_return``) and 1 = the best moving-average return any run of this study reached
    on that game. Per method: ``score_auc`` (the mean normalised score over the curve: how
    fast the game was learned) and ``final_score`` (normalised mean of the last ``window``
    episodes), each with ``per_seed`` values per held-out game and a 95% t-interval over the
    (seed, game) pairs; ``final_return`` (raw); ``curves`` (mean and std over seeds of the
    normalised moving average at ``steps``). ``difference``: the reference (Leap) − the
    initialization that never meta-trains (no pretraining: the random encoder) on the same
    (seed, game), with its interval (when both ran).
    """
    cfg = record["config"]
    grid = [round(cfg["eval_steps"] * (i + 1) / cfg["curve_points"])
            for i in range(cfg["curve_points"])]
    window = cfg["window"]
    games = cfg["heldout"]
    runs = {(r["method"], r["seed"]): r for r in results.values()}
    random = {g: statistics.fmean(r["games"][g]["random_return"] for r in runs.values())
              for g in games}
    raw = {key: {g: moving_average(r["games"][g]["steps"], r["games"][g]["returns"], grid,
                                   window, random[g]) for g in games}
           for key, r in runs.items()}
    best = {g: max(max(c[g]) for c in raw.values()) for g in games}

    def normalise(value: float, game: str) -> float:
        return (value - random[game]) / max(best[game] - random[game], 1e-9)

    entries: dict[str, Any] = {}
    for method in cfg["methods"]:
        seeds = sorted(s for m, s in runs if m == method)
        if not seeds:
            continue
        entry: dict[str, Any] = {"seeds": seeds, "games": games}
        per_seed: dict[str, dict[str, list[float]]] = {"score_auc": {}, "final_score": {},
                                                       "final_return": {}}
        curves = {}
        for seed in seeds:
            result = runs[(method, seed)]["games"]
            tails = [statistics.fmean(result[g]["returns"][-window:]) if result[g]["returns"]
                     else random[g] for g in games]
            per_seed["final_return"][str(seed)] = tails
            per_seed["final_score"][str(seed)] = [normalise(t, g) for t, g in
                                                  zip(tails, games, strict=True)]
            per_seed["score_auc"][str(seed)] = [
                statistics.fmean(normalise(v, g) for v in raw[(method, seed)][g]) for g in games]
        for metric, values in per_seed.items():
            entry[metric] = {"per_seed": values, "ci": mean_ci(pooled(values)).to_dict()}
        for g in games:
            normed = torch.tensor([[normalise(v, g) for v in raw[(method, s)][g]] for s in seeds],
                                  dtype=torch.float64)
            curves[g] = {"mean": normed.mean(0).tolist(),
                         "std": normed.std(0, correction=0).tolist()}
        entry["curves"] = curves
        entries[method] = entry
    summary: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "protocol": record["protocol"], "config": cfg,
        "methods_config": record["methods"], "steps": grid,
        "random_return": random, "best_return": best, "methods": entries}
    pair = compared(list(entries))
    if pair is not None:
        summary["difference"] = {
            metric: paired_groups(*(entries[m][metric]["per_seed"] for m in pair)).to_dict()
            for metric in ("score_auc", "final_score")}
    return summary


def compared(names: list[str]) -> tuple[str, str] | None:
    """(the reference, the initialization that never meta-trains) when both are among
    ``names``: the pair of the study's ``difference``."""
    untrained = [m for m in names if m in methods.METHODS and not methods.get(m).meta_trains]
    reference = methods.reference()
    return (reference, untrained[0]) if reference in names and untrained else None
