"""Held-out paths to fixed losses: Theorem 1's question asked over a loss, not over K steps.

Theorem 1 (docs/leap.md) says the pull-forward update shortens the gradient paths from θ⁰ to
the *same limit points*. The transfer protocol measures each held-out path over a fixed K SGD
steps, which stop short of any limit point: an initialization that learns faster travels
further down the loss in those K steps, so its path can be longer although it is shorter to
any loss both reach. This analysis trains each held-out task of a finished transfer run again,
from every method's exported initialization, for ``steps`` SGD steps on the run's own data
streams (so the first K steps reproduce its evaluation), and measures the path (the length of
γ = (θ, f(θ)), as in :attr:`~metaleap.protocols.evaluation.Curve.path_length`) until the loss
first reaches each of fixed ``levels``. The loss there is the mean of the last ``window``
batch losses, so that one easy batch does not count as arriving.

``metaleap transfer-paths RUN [RUN ...] --out DIR`` writes ``DIR/results.json``,
``report.md`` and ``paths.png``; ``metaleap report DIR`` rebuilds the last two from
``results.json``.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
from safetensors.torch import load_file

from metaleap import methods, stats
from metaleap.methods import color, label
from metaleap.protocols.reporting import LEVEL, cell, interval_note, read_record, verdict
from metaleap.runs import RunError, write_json

if TYPE_CHECKING:
    from metaleap.tasks import TaskSet

KIND = "transfer-paths"
SCHEMA_VERSION = 1
#: How the report names each compared measure (``comparisons``' keys).
MEASURES = {"path_k": "path over {k} steps", "path": "path over {steps} steps",
            "final_loss": "final loss", "path_to": "path to loss {level}",
            "steps_to": "steps to loss {level}"}


def trailing_mean(values: list[float], window: int) -> list[float | None]:
    """The mean of the last ``window`` values at each point (``None`` before ``window``)."""
    return [None if i < window - 1 else statistics.fmean(values[i - window + 1:i + 1])
            for i in range(len(values))]


def arrival(path: list[float], loss: list[float | None], level: float) -> list[float] | None:
    """``[steps, path length]`` to the first point whose loss is at most ``level``, or
    ``None`` if the curve never gets there."""
    for i, value in enumerate(loss):
        if value is not None and value <= level:
            return [i, path[i]]
    return None


def trace(runs: list[Path], steps: int, levels: list[float], window: int,
          progress: bool = False, taskset: TaskSet | None = None) -> dict[str, Any]:
    """Every method's held-out tasks of the finished transfer ``runs`` (one config but for
    the seeds, as when each seed ran in its own folder), trained ``steps`` SGD steps from its
    exported initialization; the record that ``results.json`` holds. ``taskset`` replaces the
    runs' data (tests)."""
    from metaleap.protocols.transfer.config import RECORDED_BEFORE, TransferConfig
    from metaleap.protocols.transfer.study import TransferStudy
    from metaleap.shared import ONE_PROCESS

    if not levels or min(levels) <= 0:
        raise RunError(f"loss levels must be positive, got {levels}")
    if window < 1:
        raise RunError(f"--window must be at least 1, got {window}")
    configs: list[tuple[Path, TransferConfig]] = []
    for run in runs:
        record = read_record(run)
        if record["protocol"] != "transfer":
            raise RunError(f"{run} is a {record['protocol']} run; paths need a transfer run")
        cfg = TransferConfig(**{**RECORDED_BEFORE, **record["config"]})
        configs.append((run, cfg))
        first = configs[0][1]
        if {**cfg.to_dict(), "seeds": []} != {**first.to_dict(), "seeds": []}:
            raise RunError(f"{run} and {runs[0]} differ in more than their seeds")
        if steps < cfg.eval_steps:
            raise RunError(f"--steps {steps} is shorter than the run's evaluation "
                           f"({cfg.eval_steps} steps)")
        for method, seed in itertools.product(cfg.methods, cfg.seeds):
            key = f"seed{seed}-{method}"
            if not ((run / "init" / f"{key}.safetensors").is_file()
                    and (run / "results" / f"{key}.json").is_file()):
                raise RunError(f"{run}: {method} seed {seed} has no exported initialization "
                               "and result; finish the run first (--resume)")
    seeds = [s for _, cfg in configs for s in cfg.seeds]
    if len(set(seeds)) < len(seeds):
        raise RunError(f"the runs repeat a seed: {seeds}")
    k = configs[0][1].eval_steps
    per_method: dict[str, dict[str, Any]] = {}
    mismatch = 0.0
    for run, recorded in configs:
        cfg = TransferConfig(**{**recorded.to_dict(), "eval_steps": steps})
        study = TransferStudy(cfg, taskset, "cpu", ONE_PROCESS)  # opens the data if None
        taskset = study.taskset
        for method, seed in itertools.product(cfg.methods, cfg.seeds):
            key = f"seed{seed}-{method}"
            curves = study.train_curves(load_file(str(run / "init" / f"{key}.safetensors")),
                                        seed, study.splits[seed].heldout, "eval", progress,
                                        f"{method} seed {seed}, {steps} steps")
            result = json.loads((run / "results" / f"{key}.json").read_text())
            entry = per_method.setdefault(method, {"per_seed": {}, "mean_path": [],
                                                   "mean_loss": []})
            values: dict[str, Any] = {"path_k": [], "path": [], "final_loss": [],
                                      "reach": {str(v): [] for v in levels}}
            for curve, old in zip(curves, result["path_length"], strict=True):
                path, loss = curve.cumulative_path, trailing_mean(curve.train_loss, window)
                mismatch = max(mismatch, abs(path[k] - old) / old)
                values["path_k"].append(path[k])
                values["path"].append(path[-1])
                values["final_loss"].append(loss[-1])
                for v in levels:
                    values["reach"][str(v)].append(arrival(path, loss, v))
                entry["mean_path"].append(path)
                entry["mean_loss"].append(loss[window - 1:])
            entry["per_seed"][str(seed)] = values
    for entry in per_method.values():  # the mean curve over every (seed, task) pair
        entry["mean_path"] = [statistics.fmean(p) for p in zip(*entry["mean_path"], strict=True)]
        entry["mean_loss"] = [statistics.fmean(v) for v in zip(*entry["mean_loss"], strict=True)]
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "runs": [str(r) for r in runs],
            "config": configs[0][1].to_dict(), "steps": steps, "eval_steps": k,
            "levels": levels, "window": window, "reproduces_run": mismatch,
            "methods": per_method}


def reached(values: dict[str, Any], level: str, which: int) -> dict[str, list[float | None]]:
    """Per seed, each task's steps (``which`` 0) or path (1) to ``level`` (``None``: never)."""
    return {s: [None if r is None else r[which] for r in v["reach"][level]]
            for s, v in values["per_seed"].items()}


def both(a: dict[str, list[float | None]], b: dict[str, list[float | None]]
         ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``a`` and ``b`` restricted to the (seed, task) pairs where both have a value."""
    keep = {s: [i for i, (x, y) in enumerate(zip(a[s], b[s], strict=True))
                if x is not None and y is not None] for s in a if s in b}
    return ({s: [a[s][i] for i in ix] for s, ix in keep.items() if ix},
            {s: [b[s][i] for i in ix] for s, ix in keep.items() if ix})


def comparisons(result: dict[str, Any]) -> dict[str, Any]:
    """Every other method − Leap (the registry's reference): path over K steps, over all
    steps, and to each level (on the pairs where both arrive), steps to each level; pair
    level and seed level."""
    reference, traced = methods.reference(), result["methods"]
    if reference not in traced:
        raise RunError(f"the runs have no {label(reference)} initialization to compare with")
    leap = traced[reference]
    out: dict[str, Any] = {}
    for name, values in traced.items():
        if name == reference:
            continue
        rows: dict[str, Any] = {}
        for metric in ("path_k", "path", "final_loss"):
            rows[metric] = interval_pair(stats.differences(
                {s: v[metric] for s, v in values["per_seed"].items()},
                {s: v[metric] for s, v in leap["per_seed"].items()}))
        for level in map(str, result["levels"]):
            for which, metric in ((1, "path_to"), (0, "steps_to")):
                a, b = both(reached(values, level, which), reached(leap, level, which))
                rows[f"{metric} {level}"] = interval_pair(stats.differences(a, b)) if a else None
        out[name] = rows
    return out


def interval_pair(diffs: dict[str, list[float]]) -> dict[str, Any]:
    """The pair-level and the seed-level interval of paired differences (each with its n)."""
    return {"pairs": stats.mean_ci(stats.pooled(diffs), LEVEL).to_dict(),
            "seeds": stats.by_group(diffs, LEVEL).to_dict()}


def write_paths(runs: list[Path], out: Path, steps: int, levels: list[float], window: int,
                progress: bool = False, taskset: TaskSet | None = None) -> Path:
    """Trace the paths of ``runs`` into ``out`` (``results.json``) and write its report."""
    if (out / "config.json").is_file():
        raise RunError(f"{out} is a run folder; give the paths their own folder")
    result = trace(runs, steps, levels, window, progress, taskset)
    result["comparisons"] = comparisons(result)
    write_json(out / "results.json", result)
    return render(out, result)


def _interval(d: dict[str, Any]) -> stats.Interval:
    return stats.Interval(**d)


def count(values: dict[str, Any], level: str) -> tuple[int, int]:
    """(tasks that reached ``level``, tasks)."""
    arrivals = [r for v in values["per_seed"].values() for r in v["reach"][level]]
    return sum(r is not None for r in arrivals), len(arrivals)


def plot_paths(result: dict[str, Any], path: Path) -> None:
    """Mean loss against mean path travelled, per method, with the levels and the point
    reached after the run's K steps."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    skip = result["window"] - 1
    for name, entry in result["methods"].items():
        xs, ys = entry["mean_path"][skip:], entry["mean_loss"]
        ax.plot(xs, ys, color=color(name), label=label(name))
        k = result["eval_steps"] - skip
        if 0 <= k < len(xs):
            ax.plot([xs[k]], [ys[k]], "o", color=color(name), ms=4)
    for level in result["levels"]:
        ax.axhline(level, color="0.6", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("path travelled from θ⁰ (mean over held-out tasks)")
    ax.set_ylabel(f"training loss (mean of last {result['window']} batches)")
    ax.set_title(f"{result['steps']} SGD steps; dots: after the run's {result['eval_steps']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_paths_report(folder: str | Path) -> Path | None:
    """``report.md`` and ``paths.png`` of a paths folder, from its ``results.json``; ``None``
    for another kind of folder."""
    folder = Path(folder)
    source = folder / "results.json"
    if not source.is_file():
        return None
    result = json.loads(source.read_text())
    return render(folder, result) if result.get("kind") == KIND else None


def render(folder: Path, result: dict[str, Any]) -> Path:
    """Write ``report.md`` and ``paths.png`` of ``result`` into ``folder``."""
    plot_paths(result, folder / "paths.png")
    k, steps = result["eval_steps"], result["steps"]
    lines = [f"# Held-out paths to fixed losses: {', '.join(result['runs'])}", "",
             f"Each held-out task trained {steps} SGD steps from each method's initialization, "
             f"on the run's data streams; the first {k} reproduce the run's held-out paths "
             + ("bit for bit" if result["reproduces_run"] == 0 else
                f"to a relative {result['reproduces_run']:.1e} (another thread count or CPU "
                "than the run's: float sums differ in their last bits, and SGD amplifies "
                "that)") + ". A task has reached a loss when the "
             f"mean of its last {result['window']} batch losses is at most that loss. "
             "Differences are paired, other − Leap: positive means Leap's path is shorter "
             "(or Leap arrives in fewer steps, or ends lower).", "",
             "![mean loss against mean path travelled](paths.png)", "",
             "| method | " + " | ".join([f"path over {k} steps", f"path over {steps}",
                                         "final loss"] + [f"reached {v}" for v in
                                                          result["levels"]]) + " |",
             "|---" * (4 + len(result["levels"])) + "|"]
    for name, values in result["methods"].items():
        def mean_of(metric: str, values: dict[str, Any] = values) -> str:
            return stats.mean_ci([x for v in values["per_seed"].values()
                                  for x in v[metric]], LEVEL).format(digits=2 if metric ==
                                                                     "final_loss" else 1)
        counts = [count(values, str(v)) for v in result["levels"]]
        lines.append(f"| {label(name)} | {mean_of('path_k')} | {mean_of('path')} | "
                     f"{mean_of('final_loss')} | "
                     + " | ".join(f"{a}/{b}" for a, b in counts) + " |")
    lines += ["", "Paired differences, other − Leap, on the (seed, task) pairs where both arrive "
              "(n):", "", "| method | measure | difference | reading |", "|---|---|---|---|"]
    for name, rows in result["comparisons"].items():
        for key, value in rows.items():
            metric, _, level = key.partition(" ")
            measure = MEASURES[metric].format(k=k, steps=steps, level=level)
            if value is None:
                lines.append(f"| {label(name)} | {measure} | no pair arrives | |")
                continue
            pairs, seeds = _interval(value["pairs"]), _interval(value["seeds"])
            digits = 2 if metric == "final_loss" else 1
            lines.append(f"| {label(name)} | {measure} | "
                         f"{cell(pairs, {'seeds': seeds}, digits=digits)} (n = {pairs.n}) | "
                         f"{verdict(pairs)} |")
    lines += ["", interval_note("(seed, held-out task)", "seeds")]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
