"""The budget study's report: held-out learning against the meta-training budget.

A budget study is a folder of transfer runs (``metaleap transfer --preset budget``), each
evaluating its initializations on the held-out tasks after the meta-steps of ``heldout_at``
and at its end. Those evaluations equal the final ones of shorter runs (the streams depend on
the seed, the task and the meta-step only), so one run per (method, seed) gives a whole curve.
Runs of one method, N, inner horizon K and options (a Leap ablation is a run whose Leap
options differ from the defaults) form one :class:`Series`, whatever folder they ran in; a
method that does not meta-train (no pretraining) is one point at budget 0 per N.

Budgets are counted in inner SGD steps consumed by meta-training: meta-steps × tasks per
meta-step × K, the x-axis of ``budget.png``. Every interval is a Student-t interval over the
(seed, held-out task) pairs, and every comparison is paired on them.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib import ticker

from metaleap import methods, stats
from metaleap.methods import color, label, make_options
from metaleap.protocols.reporting import (
    LEVEL,
    cell,
    interval_note,
    load_summary,
    provenance_line,
    verdict,
    write_report,
)
from metaleap.protocols.transfer.report import (
    PATH_NOTE,
    SHOWN,
    metrics_of,
    phrase,
    starting,
)
from metaleap.runs import RunError, read_metrics, write_json
from metaleap.stats import Groups, Interval

SCHEMA_VERSION = 1
#: Meta-steps averaged for the meta-training path at each budget (one meta-batch is noisy).
PATH_WINDOW = 10
#: The metrics of the budget tables and figure, in their order.
METRICS = ("error_auc", "test_error", "path_length")
#: The settings in which the runs of one budget study may differ (task_batching: results
#: equal up to float rounding).
VARYING = frozenset({"methods", "seeds", "num_pretrain", "inner_steps", "meta_steps",
                     "heldout_at", "per_method", "checkpoint_every", "task_batching"})


@dataclass
class Series:
    """One method at one N, horizon K and set of options: metric values per meta-step."""

    method: str
    num_pretrain: int
    inner_steps: int
    """K (0 for a method that does not meta-train)"""
    tasks: int
    """tasks per meta-step"""
    variant: str
    """the options that differ from the method's defaults ("" for none)"""
    points: dict[int, dict[str, Groups]] = field(default_factory=dict)
    """meta-step → metric → seed → value per held-out task"""
    heldout: dict[str, list[str]] = field(default_factory=dict)
    """seed → held-out task names (what pairs values across series)"""
    training_path: dict[str, list[float]] = field(default_factory=dict)
    """seed → the mean path of each meta-step's tasks, meta-step by meta-step, for a method
    that logs one (Leap's ``path``, read from the runs' ``metrics.jsonl`` where kept)"""

    @property
    def name(self) -> str:
        return label(self.method) + (f" ({self.variant})" if self.variant else "")

    def consumed(self, step: int) -> int:
        """Inner SGD steps of meta-training up to meta-step ``step``."""
        return step * self.tasks * self.inner_steps

    def interval(self, step: int, metric: str) -> Interval:
        return stats.mean_ci(stats.pooled(self.points[step][metric]), LEVEL)

    def seed_interval(self, step: int, metric: str) -> Interval:
        return stats.by_group(self.points[step][metric], LEVEL)

    def change(self, first: int, last: int, metric: str) -> tuple[Interval, Interval]:
        """Its own value at meta-step ``last`` − at ``first``, paired on the (seed, task)
        pairs, and over the per-seed means."""
        new, old = self.points[last][metric], self.points[first][metric]
        return (stats.paired_groups(new, old, LEVEL),
                stats.by_group(stats.differences(new, old), LEVEL))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in dataclasses.asdict(self).items()
                   if k != "points" and (k != "training_path" or v)},
                "points": {str(step): {"inner_steps_consumed": self.consumed(step),
                                       **{m: {"per_seed": v, "ci": self.interval(step, m)
                                              .to_dict()} for m, v in metrics.items()}}
                           for step, metrics in self.points.items()}}


def variant(method: str, settings: dict[str, Any]) -> str:
    """The options in a method's resolved settings that differ from its defaults."""
    defaults = dataclasses.asdict(make_options(method))
    return ", ".join(f"{k}={settings[k]}" for k, v in defaults.items()
                     if k in settings and settings[k] != v)


def collect(folder: Path) -> list[Series]:
    """Every series of the transfer runs in ``folder``'s subfolders (a run with its
    ``results/`` has its ``results.json`` refreshed), merged over the runs that share one."""
    merged: dict[tuple[str, int, int, str], Series] = {}
    shared: tuple[Path, dict[str, Any]] | None = None
    for run in sorted(p for p in folder.iterdir() if (p / "config.json").is_file()):
        summary = load_summary(run)
        if summary.get("protocol") != "transfer" or not summary["methods"]:
            continue
        fixed = {k: v for k, v in summary["config"].items() if k not in VARYING}
        shared = shared or (run, fixed)
        for key, value in fixed.items():
            if shared[1].get(key) != value:
                raise RunError(f"{run}: {key} = {value} but {shared[0].name} has "
                               f"{shared[1].get(key)}: a budget study's runs differ only in "
                               f"{', '.join(sorted(VARYING))}")
        metrics = [m for m in METRICS if m in metrics_of(summary)]
        if len(metrics) < len(METRICS):
            raise RunError(f"{run}: its results lack {set(METRICS) - set(metrics)}; "
                           "rerun it with this metaleap")
        n = summary["config"]["num_pretrain"]
        logged = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
        for method, entry in summary["methods"].items():
            settings = summary["methods_config"][method]
            trains = methods.get(method).meta_trains
            k = settings["inner_steps"] if trains else 0
            key = (method, n, k, variant(method, settings))
            series = merged.setdefault(key, Series(method, n, k, min(settings["meta_batch"], n),
                                                   key[3]))
            points = ({int(s): v for s, v in entry["budget"].items()} if "budget" in entry
                      else {settings["meta_steps"]: {m: entry[m]["per_seed"] for m in metrics}})
            for step, values in (points if trains else {0: next(iter(points.values()))}).items():
                have = series.points.setdefault(step, {m: {} for m in METRICS})
                for m in METRICS:
                    for seed, v in values[m].items():
                        if have[m].setdefault(seed, v) != v:
                            raise RunError(f"{run}: {series.name} seed {seed} after {step} "
                                           "meta-steps differs from another run's")
            series.heldout.update(entry["tasks"])
            if trains and logged:
                logged_paths(run, logged, method, series)
    if not merged:
        raise RunError(f"{folder} holds no finished transfer run in its subfolders")
    reference = methods.reference()
    return sorted(merged.values(), key=lambda s: (-s.num_pretrain, s.method != reference,
                                                  s.method, s.inner_steps, s.variant))


def difference(a: Series, a_step: int, b: Series, b_step: int, metric: str,
               by_seed: bool = False) -> Interval:
    """``a`` at ``a_step`` − ``b`` at ``b_step``, paired on their common (seed, task) pairs
    (with ``by_seed``: over the per-seed mean differences)."""
    seeds = [s for s in a.points[a_step][metric] if s in b.points[b_step][metric]]
    if any(a.heldout[s] != b.heldout[s] for s in seeds):
        raise RunError(f"{a.name} and {b.name} held out different tasks: not comparable")
    diffs = stats.differences(a.points[a_step][metric], b.points[b_step][metric])
    return stats.by_group(diffs, LEVEL) if by_seed else stats.mean_ci(stats.pooled(diffs), LEVEL)


def gap_change(other: Series, leap: Series, first: int, last: int, metric: str,
               by_seed: bool = False) -> Interval:
    """How (other − Leap) moved from meta-step ``first`` to ``last`` of both: paired on the
    (seed, task) pairs (or per-seed means), positive when the gap moved in Leap's favour."""
    def gap(step: int) -> Groups:
        return stats.differences(other.points[step if other.inner_steps else 0][metric],
                                 leap.points[step][metric])
    diffs = stats.differences(gap(last), gap(first))
    return stats.by_group(diffs, LEVEL) if by_seed else stats.mean_ci(stats.pooled(diffs), LEVEL)


@dataclass
class Comparison:
    """A baseline against the base Leap of its N and K, at every budget both reached."""

    other: Series
    leap: Series
    steps: list[int]

    def at(self, step: int, metric: str, by_seed: bool = False) -> Interval:
        return difference(self.other, step if self.other.inner_steps else 0, self.leap, step,
                          metric, by_seed)


def comparisons(series: list[Series]) -> list[Comparison]:
    """Every other method (and each Leap variant) against the base Leap (the registry's
    reference, default options) of the same N and K."""
    out = []
    reference = methods.reference()
    for leap in (s for s in series if s.method == reference and not s.variant):
        for other in series:
            same_k = other.inner_steps in (0, leap.inner_steps) and other is not leap
            if other.num_pretrain != leap.num_pretrain or not same_k:
                continue
            steps = sorted(leap.points) if not other.inner_steps else sorted(
                set(leap.points) & set(other.points))
            if steps:
                out.append(Comparison(other, leap, steps))
    return out


def plot_budget(series: list[Series], path: Path) -> None:
    """Held-out metrics against the inner steps consumed, a column per N: one line per method
    and K (line style by K), no pretraining as a horizontal band."""
    ns = sorted({s.num_pretrain for s in series})
    horizons = sorted({s.inner_steps for s in series if s.inner_steps})
    styles = dict(zip(horizons, ("-", "--", ":", "-."), strict=False))
    fig, axes = plt.subplots(len(METRICS), len(ns), figsize=(5.5 * len(ns), 3.2 * len(METRICS)),
                             squeeze=False, sharex="col")
    for col, n in enumerate(ns):
        for row, metric in enumerate(METRICS):
            ax = axes[row][col]
            name, scale, _ = SHOWN[metric]
            for s in (s for s in series if s.num_pretrain == n and not s.variant):
                cis = [s.interval(step, metric) for step in sorted(s.points)]
                if not s.inner_steps:
                    ax.axhline(scale * cis[0].mean, color=color(s.method), ls=":",
                               label=label(s.method))
                    if cis[0].low is not None:
                        ax.axhspan(scale * cis[0].low, scale * cis[0].high,  # type: ignore
                                   color=color(s.method), alpha=0.1)
                    continue
                xs = [s.consumed(step) for step in sorted(s.points)]
                ax.plot(xs, [scale * c.mean for c in cis], marker="o", ms=3,
                        ls=styles[s.inner_steps], color=color(s.method),
                        label=f"{s.name}, K = {s.inner_steps}")
                if all(c.low is not None for c in cis):
                    ax.fill_between(xs, [scale * c.low for c in cis],  # type: ignore
                                    [scale * c.high for c in cis],  # type: ignore
                                    color=color(s.method), alpha=0.12)
            ax.set(xscale="log", ylabel=name + (" (%)" if scale == 100 else ""),
                   xticks=sorted({s.consumed(step) for s in series for step in s.points
                                  if s.inner_steps and s.num_pretrain == n}))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.tick_params(axis="x", labelrotation=40)
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            if row == 0:
                ax.set_title(f"N = {n} pretraining tasks")
            if row == len(METRICS) - 1:
                ax.set_xlabel("inner SGD steps consumed by meta-training")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="lower center", fontsize=8,
               ncol=min(4, len(handles)), frameon=False)
    fig.suptitle("Held-out tasks against the meta-training budget\n(mean; bands: "
                 f"{100 * LEVEL:.0f} % intervals over the (seed, task) pairs)", fontsize=10)
    fig.tight_layout(rect=(0, 0.035 * (1 + (len(handles) - 1) // 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cells(intervals: list[tuple[Interval, Interval]], verdicts: dict[str, str] | None = None
          ) -> str:
    """One table cell per metric from its (pair-level, seed-level) intervals; with
    ``verdicts``, each followed by :func:`verdict`'s word, reworded through ``verdicts``."""
    return " | ".join(cell(i, {"seeds": seeds}, *SHOWN[m][1:]) + (
        f" {verdicts.get(verdict(i), verdict(i))}" if verdicts is not None else "")
        for m, (i, seeds) in zip(METRICS, intervals, strict=True))


def means_table(series: list[Series]) -> list[str]:
    head = " | ".join(SHOWN[m][0] + (" (%)" if SHOWN[m][1] == 100 else "") for m in METRICS)
    rows = [f"| method | K | meta-steps | inner steps consumed | {head} | seeds × tasks |",
            "|---" * (len(METRICS) + 5) + "|"]
    for s in series:
        for step in sorted(s.points):
            values = s.points[step]["test_error"]
            shape = f"{len(values)} × {len(next(iter(values.values())))}"
            rows.append(f"| {s.name} | {s.inner_steps or '—'} | {step} | {s.consumed(step)} | "
                        + cells([(s.interval(step, m), s.seed_interval(step, m))
                                 for m in METRICS]) + f" | {shape} |")
    return rows


def difference_table(found: list[Comparison], verdicts: dict[str, str] | None = None
                     ) -> list[str]:
    rows = [f"| method − Leap | K | meta-steps | {' | '.join(SHOWN[m][0] for m in METRICS)} |",
            "|---" * (len(METRICS) + 3) + "|"]
    for c in found:
        for step in c.steps:
            rows.append(f"| {c.other.name} | {c.leap.inner_steps} | {step} | "
                        + cells([(c.at(step, m), c.at(step, m, by_seed=True)) for m in METRICS],
                                verdicts or {}) + " |")
    return rows


def change_table(found: list[Comparison]) -> list[str]:
    rows = ["| method − Leap | K | meta-steps | " + " | ".join(
        f"change in {SHOWN[m][0]}" for m in METRICS) + " |", "|---" * (len(METRICS) + 3) + "|"]
    for c in found:
        for first, last in itertools.pairwise(c.steps):
            rows.append(f"| {c.other.name} | {c.leap.inner_steps} | {first} → {last} | "
                        + cells([(gap_change(c.other, c.leap, first, last, m),
                                   gap_change(c.other, c.leap, first, last, m, by_seed=True))
                                  for m in METRICS]) + " |")
    return rows


def own_change_table(series: list[Series]) -> list[str]:
    """Each meta-training series' own change between consecutive budgets, paired."""
    rows = ["| method | K | meta-steps | " + " | ".join(
        f"change in {SHOWN[m][0]}" for m in METRICS) + " |", "|---" * (len(METRICS) + 3) + "|"]
    for s in (s for s in series if s.inner_steps):
        for first, last in itertools.pairwise(sorted(s.points)):
            rows.append(f"| {s.name} | {s.inner_steps} | {first} → {last} | "
                        + cells([s.change(first, last, m) for m in METRICS]) + " |")
    return rows


def reading(found: list[Comparison]) -> list[str]:
    """Generated sentences: at each N and K, where Leap stands against each baseline of the
    registry (no pretraining, finetuning) at its largest budget, and how the gap to a
    baseline that meta-trains moved with the budget (its last change tests whether more
    budget closes it)."""
    lines = []
    for c in sorted(found, key=lambda c: (-c.leap.num_pretrain, c.leap.inner_steps,
                                          methods.get(c.other.method).meta_trains)):
        if not methods.get(c.other.method).baseline or c.other.variant:
            continue
        last = c.steps[-1]
        ref = starting(c.other.method)
        parts = [phrase(m, c.at(last, m), ref) for m in METRICS]
        text = (f"- N = {c.leap.num_pretrain}, K = {c.leap.inner_steps}, after {last} "
                f"meta-steps ({c.leap.consumed(last)} inner steps): Leap {parts[0]}, "
                f"{parts[2]}, {parts[1]}.")
        if c.other.inner_steps and len(c.steps) > 1:
            before = c.steps[-2]
            move = gap_change(c.other, c.leap, before, last, "error_auc")
            way = "in Leap's favour" if move.mean > 0 else "against Leap"
            text += (f" The {label(c.other.method).lower()} − Leap train-error AUC "
                     "difference was "
                     + ", ".join(c.at(step, "error_auc").format(100) for step in c.steps)
                     + f" points after {', '.join(map(str, c.steps))} meta-steps; its change "
                     f"from {before} to {last}, {move.format(100)} points, is "
                     + (f"resolved, {way}." if move.excludes_zero else "not resolved."))
        lines.append(text)
    return lines


def meta_step_logs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``meta_step`` records of each run in ``folder`` that kept its ``metrics.jsonl``."""
    return {run.name: [r for r in read_metrics(run) if r.get("event") == "meta_step"]
            for run in sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file())}


def logged_paths(run: Path, records: list[dict[str, Any]], method: str, series: Series
                 ) -> None:
    """Add the per-meta-step ``path`` that ``run``'s ``metrics.jsonl`` (``records``) logged
    for ``method`` (each seed's meta-steps 1, 2, …) to ``series.training_path``."""
    by_seed: dict[str, dict[int, float]] = {}
    for r in records:
        if r.get("event") == "meta_step" and r["method"] == method and "path" in r:
            by_seed.setdefault(str(r["seed"]), {})[r["step"]] = r["path"]
    for seed, steps in by_seed.items():
        if sorted(steps) != list(range(1, len(steps) + 1)):
            raise RunError(f"{run}/metrics.jsonl: {label(method)} seed {seed} lacks meta-steps")
        series.training_path.setdefault(seed, [steps[i] for i in sorted(steps)])


def wall_times(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Per run and method, from ``metrics.jsonl``: the meta-steps logged, their summed
    seconds (held-out evaluations on the way included), and the median and the 10th
    percentile of one meta-step's seconds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for run, records in meta_step_logs(folder).items():
        for method in dict.fromkeys(r["method"] for r in records):
            seconds = [r["seconds"] for r in records if r["method"] == method]
            out.setdefault(run, {})[method] = {
                "meta_steps": len(seconds), "seconds": sum(seconds),
                "median": statistics.median(seconds),
                "tenth": statistics.quantiles(seconds, n=10)[0] if len(seconds) > 1
                else seconds[0]}
    return out


def wall_time_table(times: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    rows = ["| run | method | meta-steps | hours, summed | seconds per meta-step: median | "
            "10th percentile |", "|---|---|---|---|---|---|"]
    for run, by_method in times.items():
        for method, t in by_method.items():
            rows.append(f"| `{run}/` | {label(method)} | {t['meta_steps']:.0f} | "
                        f"{t['seconds'] / 3600:.2f} | {t['median']:.2f} | {t['tenth']:.2f} |")
    return rows


def window_interval(paths: dict[str, list[float]], step: int) -> Interval:
    """The meta-training path over the (seed, meta-step) values of the last
    :data:`PATH_WINDOW` meta-steps up to ``step`` (the first meta-step alone at step 1)."""
    return stats.mean_ci([v for values in paths.values()
                          for v in values[max(0, step - PATH_WINDOW):step]], LEVEL)


def training_path_table(leap: Series, scratch: Series | None) -> list[str]:
    """``leap``'s meta-training path beside its held-out path (and no pretraining's) at
    each of its budgets."""
    rows = ["| meta-steps | meta-training tasks' path | held-out path, Leap | held-out path, "
            "no pretraining |", "|---|---|---|---|"]
    paths = leap.training_path
    first = (scratch.interval(0, "path_length").format(digits=1) if scratch else "—")
    rows.append(f"| 1 | {window_interval(paths, 1).format(digits=1)} | — | {first} |")
    for step in sorted(leap.points):
        rows.append(f"| {step} | {window_interval(paths, step).format(digits=1)} | "
                    f"{leap.interval(step, 'path_length').format(digits=1)} | {first} |")
    return rows


def plot_training_paths(pairs: list[tuple[Series, Series | None]], path: Path) -> None:
    """Per (Leap series, its no pretraining): the meta-training tasks' path per meta-step
    (each seed), Leap's held-out path at each budget and no pretraining's, a column each."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.4 * len(pairs), 4.0), squeeze=False)
    for ax, (leap, scratch) in zip(axes[0], pairs, strict=True):
        for i, (seed, values) in enumerate(leap.training_path.items()):
            ax.plot(range(1, len(values) + 1), values, lw=0.6,
                    color=str(0.2 + 0.5 * i / len(leap.training_path)),
                    label=f"meta-training tasks, seed {seed}")
        steps = sorted(leap.points)
        cis = [leap.interval(step, "path_length") for step in steps]
        ax.errorbar(steps, [c.mean for c in cis], fmt="o-", color=color(leap.method),
                    yerr=[[c.mean - (c.low or c.mean) for c in cis],
                          [(c.high or c.mean) - c.mean for c in cis]],
                    label=f"held-out tasks from {label(leap.method)}'s θ⁰")
        if scratch is not None:
            ax.axhline(scratch.interval(0, "path_length").mean, color=color(scratch.method),
                       ls=":", label=f"held-out tasks, {label(scratch.method).lower()}")
        ax.set(xlabel="meta-step", ylabel=f"path over K = {leap.inner_steps} steps",
               title=f"N = {leap.num_pretrain}, K = {leap.inner_steps}")
        ax.legend(fontsize=8)
    fig.suptitle("Leap's objective: the path of the tasks it meta-trains on")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_budget_report(folder: str | Path) -> Path:
    """``results.json``, ``report.md`` and ``budget.png`` of the budget study in ``folder``."""
    folder = Path(folder)
    series = collect(folder)
    if not any(len(s.points) > 1 for s in series):
        raise RunError(f"{folder} holds no run with held-out evaluations during meta-training "
                       "(set heldout_at, as --preset budget does)")
    found = comparisons(series)
    base = [c for c in found if not c.other.variant]
    ablations = [c for c in found if c.other.variant]
    runs = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
    times = wall_times(folder)
    for run in runs:  # each run's own tables and plot beside the study's
        write_report(folder / run)
    write_json(folder / "results.json", {
        "schema": SCHEMA_VERSION, "study": "budget", "runs": runs,
        "series": [s.to_dict() for s in series],
        "differences": [{"method": c.other.method, "variant": c.other.variant,
                         "num_pretrain": c.leap.num_pretrain, "inner_steps": c.leap.inner_steps,
                         "meta_steps": step, **{m: c.at(step, m).to_dict() for m in METRICS}}
                        for c in found for step in c.steps],
        **({"wall_time": times} if times else {})})
    plot_budget(series, folder / "budget.png")
    first = load_summary(folder / runs[0])
    cfg = first["config"]
    lines = ["# Budget study: held-out learning against the meta-training budget", "",
             f"Runs: {', '.join(f'`{r}/`' for r in runs)}. Each (method, seed) meta-trained "
             "once; its initialization was evaluated on the held-out tasks after the listed "
             "meta-steps. Held-out tasks: "
             f"{cfg['eval_steps']} SGD steps at lr {cfg['eval_lr']}, {cfg['ways']}-way, "
             f"{cfg['image_size']} px. Inner steps consumed: meta-steps × tasks per meta-step "
             "× K. Errors in %, lower is better. " + PATH_NOTE, "", "![budget](budget.png)",
             "",
             "## Reading (generated from the tables)", "", *reading(base), ""]
    for n in sorted({s.num_pretrain for s in series}, reverse=True):
        mine = [c for c in base if c.leap.num_pretrain == n]
        lines += [f"## N = {n}", "", "### Means", "",
                  *means_table([s for s in series if s.num_pretrain == n and not s.variant]),
                  "", "### Paired differences from Leap at the same K and meta-step", "",
                  "Method − Leap; positive: Leap lower, which is better. No pretraining "
                  "is compared with Leap's initialization at each meta-step.", "",
                  *difference_table(mine), "",
                  "### How the differences moved with the budget", "",
                  "(method − Leap at the later meta-step) − (method − Leap at the earlier), "
                  "paired; positive: the gap moved in Leap's favour.", "",
                  *change_table(mine), "",
                  "### How each method moved with the budget", "",
                  "Its own value at the later meta-step − at the earlier, paired; negative: "
                  "lower, which is better, at the later budget.", "",
                  *own_change_table([s for s in series if s.num_pretrain == n
                                     and not s.variant]), ""]
    reference = methods.reference()
    traced = [(s, next((o for o in series if not o.inner_steps
                        and o.num_pretrain == s.num_pretrain), None))
              for s in series if s.method == reference and not s.variant and s.training_path]
    if traced:
        plot_training_paths(traced, folder / "training_path.png")
        lines += ["## Leap's own objective: the path of the tasks it meta-trains on", "",
                  "Theorem 1 (docs/leap.md) promises that the pull-forward update shortens the "
                  "paths of the tasks Leap trains on. Each meta-step logs the mean path of its "
                  "meta-batch over K steps (`metrics.jsonl`); the table gives its mean over "
                  f"the (seed, meta-step) values of the last {PATH_WINDOW} meta-steps up to "
                  "each budget (meta-step 1: the first alone, from the seeded θ⁰ that no "
                  "pretraining also starts from), beside the held-out paths.", "",
                  "![Leap's meta-training path](training_path.png)", ""]
        for leap, scratch in traced:
            lines += [*([f"N = {leap.num_pretrain}, K = {leap.inner_steps}:", ""]
                        if len(traced) > 1 else []), *training_path_table(leap, scratch), ""]
    if times:
        lines += ["## Wall time", "", "Each meta-step's seconds as `metrics.jsonl` logged them "
                  "(held-out evaluations on the way included): their sum, which counts every "
                  "stretch the machine was shared, and their median and 10th percentile, "
                  "closer to the speed `--dry-run` prices when it ran alone.",
                  "", *wall_time_table(times), ""]
    if ablations:
        ns = sorted({c.leap.num_pretrain for c in ablations})
        lines += [f"## Leap ablations (N = {', '.join(map(str, ns))})", "",
                  *means_table([c.other for c in ablations]), "",
                  "Each variant changes one Leap option and is compared with Leap's defaults "
                  "(same N, K, seeds, meta-batches and held-out streams): variant − Leap; "
                  "positive: the defaults are lower, which is better.", "",
                  *difference_table(ablations, {"Leap better": "defaults better",
                                                "Leap worse": "variant better"}), ""]
    lines += [interval_note("(seed, held-out task)", "seeds"), "", provenance_line(first)]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return folder / "report.md"

