"""The transfer study's ``results.json``: per method, metrics over seeds and held-out tasks."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from metaleap import methods, stats

SCHEMA_VERSION = 4


#: The metrics of each held-out task.
METRICS = ("error_auc", "loss_auc", "test_error", "path_length")


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of a transfer run: per method, metrics over seeds and tasks.

    ``record`` is the run's ``config.json`` (protocol, config, resolved methods). Schema
    (version 4)::

        {"schema": 4, "protocol": "transfer", "config": {...}, "methods_config": {...},
         "methods": {METHOD: {
             "seeds": [0, ...], "num_pretrain": N,
             "error_auc" | "loss_auc" | "test_error" | "path_length": {
                 "mean": mean over seeds of the per-seed mean over held-out tasks,
                 "std_seeds": std of the per-seed means (0 with one seed),
                 "std_tasks": std over every (seed, task) value,
                 "per_seed": {SEED: [value per held-out task]},
                 "ci": INTERVAL over every (seed, task) value},
             "vs_leap": {METRIC: INTERVAL of METHOD − Leap over the (seed, task) pairs both
                         finished},   # methods other than Leap, when Leap ran
                 # (the registry's reference method: the key is "vs_" + its name)
             "tasks": {SEED: [held-out task names]},
             "curve": {"mean": [...], "std": [...]},   # training error, K + 1 points
             "budget": {META_STEP: {METRIC: {SEED: [value per held-out task]}}}}}}
                 # with ``heldout_at``, meta-training methods: each of its meta-steps and the
                 # last, the held-out metrics of the initialization at that meta-step

    An ``INTERVAL`` is :meth:`metaleap.stats.Interval.to_dict`: ``mean``, ``low``, ``high``
    (95 % Student-t bounds, ``null`` below two values), ``n`` and ``level``. A seed holds out
    the same tasks in the same order for every method, so the differences are paired. Version
    2 lacked ``ci`` and ``vs_leap``, versions 2 and 3 ``path_length`` and ``budget``; the
    reports recompute intervals from ``per_seed`` and show what a file holds, so they read
    each. Errors are fractions (0–1), the path length is in parameter-and-loss units (see
    :attr:`metaleap.protocols.evaluation.Curve.path_length`); lower is better. The run folder's
    ``provenance.json`` (data identity, versions, device) is added by the caller.
    """
    entries: dict[str, Any] = {}
    metrics = [m for m in METRICS if all(m in r for r in results.values())]
    for method in record["config"]["methods"]:
        runs = [r for r in results.values() if r["method"] == method]
        if not runs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs],
                                 "num_pretrain": runs[0]["num_pretrain"],
                                 "tasks": {str(r["seed"]): r["tasks"] for r in runs}}
        for metric in metrics:
            per_seed = {str(r["seed"]): r[metric] for r in runs}
            means = [statistics.fmean(v) for v in per_seed.values()]
            pooled = stats.pooled(per_seed)
            entry[metric] = {"mean": statistics.fmean(means),
                             "std_seeds": statistics.pstdev(means),
                             "std_tasks": statistics.pstdev(pooled), "per_seed": per_seed,
                             "ci": stats.mean_ci(pooled).to_dict()}
        if "budget" in runs[0] and methods.get(method).meta_trains:
            last = str(record["methods"][method]["meta_steps"])
            entry["budget"] = {step: {metric: {str(r["seed"]): r["budget"][step][metric]
                                               for r in runs} for metric in metrics}
                               for step in runs[0]["budget"]}
            entry["budget"][last] = {metric: entry[metric]["per_seed"] for metric in metrics}
        curves = torch.tensor([c for r in runs for c in r["train_error_curves"]],
                              dtype=torch.float64)
        entry["curve"] = {"mean": curves.mean(0).tolist(),
                          "std": curves.std(0, correction=0).tolist()}
        entries[method] = entry
    reference = methods.reference()
    for metric in metrics:
        differences = stats.compare({m: e[metric]["per_seed"] for m, e in entries.items()},
                                    reference)
        for method, interval in differences.items():
            entries[method].setdefault(f"vs_{reference}", {})[metric] = interval.to_dict()
    return {"schema": SCHEMA_VERSION, "protocol": record["protocol"],
            "config": record["config"], "methods_config": record["methods"],
            "methods": entries}
