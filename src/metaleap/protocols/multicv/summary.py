"""The Multi-CV study's ``results.json``: the paper's Table 1 with intervals."""

from __future__ import annotations

import math
from typing import Any

import torch

from metaleap import methods, stats
from metaleap.protocols.multicv.config import holdouts

SCHEMA_VERSION = 1


#: The metrics of each held-out run (fractions; lower is better).
METRICS = ("test_error", "train_error", "error_auc")


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of a Multi-CV run: the paper's Table 1 with intervals.

    ``record`` is the run's ``config.json``. Schema (version 1)::

        {"schema": 1, "protocol": "multicv", "config": {...}, "methods_config": {...},
         "left_out": {DATASET: why it was not installed},
         "holdouts": {HELD_OUT: {METHOD: {
             "seeds": [0, ...], "max_steps": K_max,
             "test_error" | "train_error" | "error_auc" | "steps": {
                 "per_seed": {SEED: [value]}, "ci": INTERVAL over the seeds},
             "vs_leap": {METRIC: INTERVAL of METHOD − Leap, paired by seed},  # not Leap
                 # (the registry's reference method: the key is "vs_" + its name)
             "curve": {"every": val_every, "mean": [...], "std": [...]}}}},
         "methods": {METHOD: {      # over every held-out data set
             METRIC: {"per_seed": {"HELD_OUT/SEED": [value]}, "ci": INTERVAL},
             "vs_leap": {METRIC: INTERVAL paired by (held-out, seed)}}}}

    Metric values are fractions (0–1; lower is better): the final network's error on the
    held-out set's test and training splits, and the normalised area under its
    training-error curve (:attr:`InnerTraining.error_auc`). ``steps``: SGD steps before early
    stopping. ``curve``: the training error per validation interval, padded to ``K_max``
    steps with its last value, mean and std over seeds. An ``INTERVAL`` is
    :meth:`metaleap.stats.Interval.to_dict` (95 % Student-t; bounds ``null`` below two
    values). The caller adds ``provenance`` (the data's identity).
    """
    cfg = record["config"]
    table: dict[str, dict[str, Any]] = {}
    reference = methods.reference()
    for holdout in holdouts(cfg["datasets"], cfg["holdout"]):
        entries: dict[str, Any] = {}
        for method in cfg["methods"]:
            runs = sorted((r for r in results.values()
                           if r["holdout"] == holdout and r["method"] == method),
                          key=lambda r: r["seed"])
            if runs:
                entries[method] = _entry(runs)
        for metric in METRICS:
            for method, interval in stats.compare(
                    {m: e[metric]["per_seed"] for m, e in entries.items()}, reference).items():
                entries[method].setdefault(f"vs_{reference}", {})[metric] = interval.to_dict()
        if entries:
            table[holdout] = entries
    overall: dict[str, Any] = {}
    for method in cfg["methods"]:
        groups = {metric: {f"{h}/{s}": v for h, e in table.items() if method in e
                           for s, v in e[method][metric]["per_seed"].items()}
                  for metric in METRICS}
        if groups["test_error"]:
            overall[method] = {metric: {"per_seed": g, "ci": stats.mean_ci(
                stats.pooled(g)).to_dict()} for metric, g in groups.items()}
    for metric in METRICS:
        for method, interval in stats.compare(
                {m: e[metric]["per_seed"] for m, e in overall.items()}, reference).items():
            overall[method].setdefault(f"vs_{reference}", {})[metric] = interval.to_dict()
    return {"schema": SCHEMA_VERSION, "protocol": record["protocol"], "config": cfg,
            "methods_config": record["methods"], "left_out": record.get("left_out", {}),
            "holdouts": table, "methods": overall}


def _entry(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One (held-out data set, method) cell of the table from its seeds' results."""
    max_steps, every = runs[0]["max_steps"], runs[0]["val_every"]
    entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "max_steps": max_steps}
    for metric in (*METRICS, "steps"):
        per_seed = {str(r["seed"]): [float(r[metric])] for r in runs}
        entry[metric] = {"per_seed": per_seed,
                         "ci": stats.mean_ci(stats.pooled(per_seed)).to_dict()}
    points = math.ceil(max_steps / every)
    curves = torch.tensor([r["curve"] + r["curve"][-1:] * (points - len(r["curve"]))
                           for r in runs], dtype=torch.float64)
    entry["curve"] = {"every": every, "mean": curves.mean(0).tolist(),
                      "std": curves.std(0, correction=0).tolist()}
    return entry
