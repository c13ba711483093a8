"""Tables and plots from run folders: ``results.json``, ``report.md`` and PNG figures.

Works on finished and partial runs alike: whatever ``results/`` holds is summarised; a folder
holding ``results.json`` alone (a published run, such as ``docs/results/n-*``) is reported from
it. Every interval in the tables is computed from the per-task values (``per_seed``), so
results.json of schema 2 (which stored no intervals) and later read alike.
``config.json`` names the protocol that ran; :func:`write_report` dispatches on it.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaleap import stats  # noqa: E402
from metaleap.metalearners import ALL_METHODS, METHODS  # noqa: E402
from metaleap.protocols import multicv, rl, transfer  # noqa: E402
from metaleap.runs import OFFSET, RunError, read_metrics, write_json  # noqa: E402
from metaleap.stats import Interval, mean_ci  # noqa: E402


def label(method: str) -> str:
    return ALL_METHODS[method].label if method in ALL_METHODS else method


def color(method: str) -> str | None:
    return ALL_METHODS[method].color if method in ALL_METHODS else None


def read_record(run: Path) -> dict[str, Any]:
    """A run's ``config.json``: the protocol that ran and its resolved configuration."""
    if not (run / "config.json").is_file():
        raise RunError(f"{run} is not a run folder (no config.json)")
    record = json.loads((run / "config.json").read_text())
    if record.get("protocol") not in PROTOCOLS:
        raise RunError(f"{run}/config.json names no protocol this metaleap reports on "
                       f"({', '.join(PROTOCOLS)}); it may come from metaleap 0.1: rerun it")
    return record


def summarize_run(run: str | Path) -> dict[str, Any]:
    """Write ``results.json`` from the finished (seed, method) results found in ``run``."""
    run = Path(run)
    record = read_record(run)
    results = {}
    for path in sorted((run / "results").glob("*.json")):
        result = json.loads(path.read_text())
        result.pop(OFFSET, None)
        results[path.stem] = result
    summary = PROTOCOLS[record["protocol"]](record, results)
    if (run / "provenance.json").is_file():
        summary["provenance"] = json.loads((run / "provenance.json").read_text())
    write_json(run / "results.json", summary)
    return summary


def load_summary(run: str | Path) -> dict[str, Any]:
    """A run's summary: :func:`summarize_run` when it has its ``results/`` folder, else its
    ``results.json`` as it is (a published copy of a run, e.g. ``docs/results/n-*``)."""
    run = Path(run)
    if (run / "results").is_dir() or not (run / "results.json").is_file():
        return summarize_run(run)
    read_record(run)
    return json.loads((run / "results.json").read_text())


# ------------------------------------------------------------------------------- statistics
# The tables compute every interval from ``per_seed``, whatever the results.json schema
# (version 2 stored none), with the functions that summarize uses from version 3 on.
LEVEL = 0.95


def interval_note(pairs: str, *units: str) -> str:
    """The one sentence every report gives on what its intervals cover: the first interval of
    a cell is over ``pairs``; each unit (e.g. "seeds") marks one over that unit's means."""
    marked = " or ".join(f'"{u}"' for u in units)
    other = (f"; one marked {marked} is over that unit's means (df = units − 1), covers both, "
             "and is wide with few units. Verdicts read the first" if units else
             " (one meta-training run per method: nothing here covers the variation between "
             "runs)")
    return (f"Intervals: {100 * LEVEL:.0f} % Student-t. The first in a cell is over the "
            f"{pairs} pairs and covers the variation between held-out tasks for these "
            f"meta-training runs, not between meta-training runs{other}; an interval that "
            "spans 0 shows no difference, never equality.")


def note(summary: dict[str, Any]) -> str:
    """The transfer tables' note: what the intervals cover (seed-level ones with 2+ seeds),
    the pairing and the budget column."""
    seeds = ("seeds",) if len(summary["config"]["seeds"]) > 1 else ()
    return (interval_note("(seed, held-out task)", *seeds) + " Differences are paired: the "
            "same seed's same task trained from both initializations. Meta-training SGD "
            "steps, per method and seed: meta-steps × tasks per meta-step × inner steps.")

PATH_NOTE = (
    "Path length: Σ_i ‖(θ^{i+1} − θ^i, f^{i+1} − f^i)‖ of the held-out training, the quantity "
    "Leap shortens on its pretraining tasks; a task that barely learns takes a short path too, "
    "so read it beside the AUC.")


def interval(entry: dict[str, Any], metric: str) -> Interval:
    """One method's mean of ``metric`` over its (seed, task) values, with its interval."""
    return stats.mean_ci(stats.pooled(entry[metric]["per_seed"]), LEVEL)


def seed_interval(entry: dict[str, Any], metric: str) -> Interval:
    """One method's mean of ``metric`` with its interval over the per-seed means."""
    return stats.by_group(entry[metric]["per_seed"], LEVEL)


def differences(summary: dict[str, Any], metric: str, by_seed: bool = False
                ) -> dict[str, Interval]:
    """Each method's paired difference from Leap (method − Leap) in ``metric``: over the
    (seed, task) pairs, or with ``by_seed`` over the per-seed mean differences."""
    return stats.compare({m: e[metric]["per_seed"] for m, e in summary["methods"].items()},
                         transfer.REFERENCE, LEVEL,
                         (lambda d: stats.by_group(d, LEVEL)) if by_seed else None)


def cell(pairs: Interval, units: dict[str, Interval], scale: float = 1.0, digits: int = 1
         ) -> str:
    """``pairs`` formatted, then each unit-level interval that has bounds: "…; seeds [a, b]"."""
    return pairs.format(scale, digits) + "".join(
        f"; {unit} {i.bounds(scale, digits)}" for unit, i in units.items() if i.bounds())


def verdict(difference: Interval) -> str:
    """Whether a difference from Leap (lower is better) is resolved by its interval."""
    if not difference.excludes_zero:
        return "spans 0"
    return "Leap better" if difference.mean > 0 else "Leap worse"


def budget(summary: dict[str, Any], method: str) -> str:
    """A method's meta-training SGD steps: meta-steps × tasks per meta-step × inner steps."""
    if method in METHODS and not METHODS[method].meta_trains:
        return "none"
    cfg = summary["methods_config"][method]
    tasks = min(cfg["meta_batch"], summary["config"]["num_pretrain"])
    return (f"{cfg['meta_steps']} × {tasks} × {cfg['inner_steps']} = "
            f"{cfg['meta_steps'] * tasks * cfg['inner_steps']}")


def metrics_of(summary: dict[str, Any]) -> list[str]:
    """The transfer metrics every method of ``summary`` holds (schema 3 and earlier lack the
    path length)."""
    return [m for m in transfer.METRICS
            if all(m in e for e in summary["methods"].values())]


#: How the tables show each metric: its name, scale and digits (errors in %).
SHOWN = {"error_auc": ("train-error AUC", 100, 1), "test_error": ("test error", 100, 1),
         "path_length": ("path length", 1, 2), "loss_auc": ("loss AUC", 1, 3)}


def table(summary: dict[str, Any]) -> str:
    """Each method's means with their intervals (errors in %, loss AUC in nats, path length
    in parameter-and-loss units)."""
    shown = [m for m in SHOWN if m in metrics_of(summary)]
    head = " | ".join(SHOWN[m][0] + (" (%)" if SHOWN[m][1] == 100 else "") for m in shown)
    rows = [f"| method | {head} | meta-training SGD steps | seeds × tasks |",
            "|---" * (len(shown) + 3) + "|"]
    for method, e in summary["methods"].items():
        tasks = len(next(iter(e["test_error"]["per_seed"].values())))
        cells = " | ".join(cell(interval(e, m), {"seeds": seed_interval(e, m)}, *SHOWN[m][1:])
                           for m in shown)
        rows.append(f"| {label(method)} | {cells} | {budget(summary, method)} "
                    f"| {len(e['seeds'])} × {tasks} |")
    return "\n".join(rows)


def difference_table(summary: dict[str, Any]) -> str | None:
    """The paired differences from Leap (percentage points for errors), or ``None`` without
    Leap."""
    shown = [m for m in ("error_auc", "test_error", "path_length") if m in metrics_of(summary)]
    diffs = {m: differences(summary, m) for m in shown}
    by_seed = {m: differences(summary, m, by_seed=True) for m in shown}
    if not diffs["error_auc"]:
        return None
    rows = ["**Paired differences from Leap** (method − Leap, percentage points for errors; "
            "positive: Leap lower, which is better)", "",
            f"| method − Leap | {' | '.join(SHOWN[m][0] for m in shown)} |",
            "|---" * (len(shown) + 1) + "|"]
    for method in diffs["error_auc"]:
        cells = " | ".join(
            f"{cell(diffs[m][method], {'seeds': by_seed[m][method]}, *SHOWN[m][1:])} "
            f"{verdict(diffs[m][method])}" for m in shown)
        rows.append(f"| {label(method)} | {cells} |")
    return "\n".join(rows)


#: How :func:`reading` words Leap's side of a difference: resolved lower, resolved higher, and
#: unresolved (then shown as Leap − the other).
PHRASES = {
    "error_auc": ("learns the held-out tasks faster than {ref} (train-error AUC {x} points "
                  "lower)", "learns the held-out tasks slower than {ref} (train-error AUC {x} "
                  "points higher)", "shows no difference in how fast it learns the held-out "
                  "tasks compared with training {ref} (train-error AUC difference {x} points, "
                  "spanning 0)"),
    "path_length": ("along shorter learning paths ({x} shorter)",
                    "along longer learning paths ({x} longer)",
                    "with no difference in path length shown (difference {x}, spanning 0)"),
    "test_error": ("and ends with a lower test error ({x} points)",
                   "and ends with a higher test error ({x} points)",
                   "and shows no difference in final test error (difference {x} points, "
                   "spanning 0)"),
}


def phrase(metric: str, difference: Interval, ref: str) -> str:
    """Leap's side of ``difference`` (the other method − Leap) in ``metric``, in words."""
    lower, higher, unresolved = PHRASES[metric]
    scale, digits = SHOWN[metric][1:]
    if not difference.excludes_zero:
        return unresolved.format(ref=ref, x=(-difference).format(scale, digits))
    if difference.mean > 0:
        return lower.format(ref=ref, x=difference.format(scale, digits))
    return higher.format(ref=ref, x=(-difference).format(scale, digits))


def reading(summary: dict[str, Any]) -> str:
    """One plain sentence each on how Leap compares with no pretraining and with finetuning,
    generated from the paired differences (the demo ends with them)."""
    shown = [m for m in PHRASES if m in metrics_of(summary)]
    diffs = {m: differences(summary, m) for m in shown}
    sentences = []
    for method, ref in (("scratch", "from no pretraining"), ("finetune", "from finetuning")):
        if method in diffs["error_auc"]:
            parts = [phrase(m, diffs[m][method], ref) for m in shown]
            sentences.append("Leap " + ", ".join(parts[:-1]) + (", " if len(parts) > 2 else " ")
                             + parts[-1] + ".")
    return " ".join(sentences)


def tables(summary: dict[str, Any]) -> list[str]:
    """The means table and the differences table (when Leap ran), each followed by a blank."""
    diff = difference_table(summary)
    return [table(summary), ""] + ([diff, ""] if diff else [])


def plot_heldout_curves(summary: dict[str, Any], path: Path) -> None:
    """Mean training-error curve on the held-out tasks (%), one line per method; the bands
    are ±1 std over the (seed, task) curves."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, e in summary["methods"].items():
        mean, std = e["curve"]["mean"], e["curve"]["std"]
        steps = range(len(mean))
        ax.plot(steps, [100 * m for m in mean], label=label(method), color=color(method))
        ax.fill_between(steps, [100 * (m - s) for m, s in zip(mean, std, strict=True)],
                        [100 * (m + s) for m, s in zip(mean, std, strict=True)], alpha=0.15,
                        color=color(method))
    ax.set(xlabel="training step on a held-out task", ylabel="training error (%)",
           title="Held-out tasks from each initialization\n"
                 "(mean; bands ±1 std over the (seed, task) curves)", ylim=(0, 100))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_meta_training(records: list[dict[str, Any]], path: Path) -> None:
    """Paper Fig. 2 (left): validation training curves as meta-training proceeds (seed 0);
    nothing without validation records."""
    val = [r for r in records if r.get("event") == "validation"]
    if not val:
        return
    seed = min(r["seed"] for r in val)
    methods = list(dict.fromkeys(r["method"] for r in val))
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.5), squeeze=False,
                             sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        mine = [r for r in val if r["method"] == method and r["seed"] == seed]
        last = max(r["step"] for r in mine) or 1
        for r in mine:
            ax.plot([100 * v for v in r["train_error_curve"]],
                    color=plt.cm.viridis(r["step"] / last), lw=1.2)
        ax.set(title=label(method), xlabel="training step", ylim=(0, 100))
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, last))
        fig.colorbar(sm, ax=ax, label="meta-step")
    axes[0][0].set_ylabel("validation training error (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run: str | Path) -> Path:
    """``results.json`` (when ``run`` has its results), ``report.md`` and the plots of one
    run; returns report.md."""
    run = Path(run)
    summary = load_summary(run)
    if not summary["methods"]:
        raise RunError(f"{run} has no finished (seed, method) result yet")
    lines = REPORTS[summary["protocol"]](run, summary)
    (run / "report.md").write_text("\n".join(lines) + "\n")
    return run / "report.md"


def provenance_line(summary: dict[str, Any]) -> str:
    """One sentence naming the data's identity and the software and device that ran."""
    provenance = summary.get("provenance") or {}
    data = provenance.get("data") or {}
    sessions = provenance.get("sessions") or [{}]
    kind = data.get("kind", "data")
    ident = (data.get("key") or data.get("files_sha256", "")[:16]
             or "with " + ", ".join(f"{k} {v}" for k, v in data.get("packages", {}).items())
             or "unrecorded")
    tasks = data.get("alphabets") or data.get("games") or []
    where = ", ".join(sorted({f"{s.get('device', '?')} ({s.get('device_name', '?')})"
                              for s in sessions}))
    versions = sessions[-1]
    code = versions.get("code")
    commit = (f" at commit {code['commit'][:12]}" + (" with uncommitted changes" if code["dirty"]
                                                     else "") if code else "")
    return (f"Data: {kind} {ident} ({len(tasks)} tasks); "
            f"metaleap {versions.get('metaleap', '?')}{commit}, "
            f"torch {versions.get('torch', '?')}, on {where}.")


FIGURES = ("heldout_curves.png", "meta_training.png")


def transfer_report(run: Path, summary: dict[str, Any]) -> list[str]:
    """The transfer study's plots (meta-training from ``metrics.jsonl``, when present) and
    report lines."""
    plot_heldout_curves(summary, run / "heldout_curves.png")
    if (run / "metrics.jsonl").is_file():
        plot_meta_training(read_metrics(run), run / "meta_training.png")
    return transfer_lines(summary, [f for f in FIGURES if (run / f).is_file()])


def transfer_lines(summary: dict[str, Any], figures: list[str]) -> list[str]:
    """The transfer study's report: its tables, provenance, ``figures`` and, last, the
    sentences of :func:`reading`."""
    cfg = summary["config"]
    return [f"# Transfer study: {cfg['data']}, N = {cfg['num_pretrain']} pretraining tasks", "",
            f"Held-out tasks trained for {cfg['eval_steps']} steps from each method's "
            f"initialization ({cfg['ways']}-way, seeds {cfg['seeds']}). Lower is better.", "",
            *tables(summary),
            note(summary) + (" " + PATH_NOTE if "path_length" in metrics_of(summary) else ""),
            "", provenance_line(summary), "",
            *[f"![{f}]({f})" for f in figures], *(["", text] if (text := reading(summary)) else [])]


def write_sweep_report(sweep: str | Path) -> Path:
    """``sweep.json``, ``report.md`` and ``auc_vs_n.png`` (paper Fig. 2 right, and test
    error) of a sweep: every run ``n-*`` in ``sweep``."""
    sweep = Path(sweep)
    summaries = {}
    for run in sorted(sweep.glob("n-*")):
        if (run / "config.json").is_file():
            summary = load_summary(run)
            if summary["methods"]:
                summaries[summary["config"]["num_pretrain"]] = summary
    if not summaries:
        raise RunError(f"{sweep} holds no finished sweep point (n-*/results)")
    summaries = dict(sorted(summaries.items()))
    write_json(sweep / "sweep.json", sweep_points(summaries))
    plot_sweep(summaries, sweep / "auc_vs_n.png")
    (sweep / "report.md").write_text("\n".join(sweep_lines(summaries)) + "\n")
    return sweep / "report.md"


def sweep_points(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``sweep.json``: per method and N, each metric's per-seed values and interval, and the
    paired differences from Leap."""
    points: dict[str, Any] = {}
    for n, summary in summaries.items():
        metrics = metrics_of(summary)
        diffs = {metric: differences(summary, metric) for metric in metrics}
        for method, e in summary["methods"].items():
            point = {metric: {"per_seed": e[metric]["per_seed"],
                              "ci": interval(e, metric).to_dict()} for metric in metrics}
            if method in diffs["error_auc"]:
                point["vs_leap"] = {metric: diffs[metric][method].to_dict()
                                    for metric in metrics}
            points.setdefault(method, {})[str(n)] = point
    return points


def plot_sweep(summaries: dict[int, dict[str, Any]], path: Path) -> None:
    """Train-error AUC and test error against N with their intervals, one line per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = list(dict.fromkeys(m for s in summaries.values() for m in s["methods"]))
    ns_all = list(summaries)
    for ax, metric, name in zip(axes, ("error_auc", "test_error"),
                                ("train-error AUC", "test error"), strict=True):
        for method in methods:
            ns = [n for n, s in summaries.items() if method in s["methods"]]
            cis = [interval(summaries[n]["methods"][method], metric) for n in ns]
            ax.plot(ns, [100 * c.mean for c in cis], marker="o", label=label(method),
                    color=color(method))
            if all(c.low is not None and c.high is not None for c in cis):
                ax.fill_between(ns, [100 * c.low for c in cis],  # type: ignore[operator]
                                [100 * c.high for c in cis],  # type: ignore[operator]
                                alpha=0.15, color=color(method))
        ax.set(xlabel="number of pretraining tasks N", ylabel=f"{name} (%)", xticks=ns_all,
               title=f"Held-out {name} against N\n(bands: {100 * LEVEL:.0f} % intervals "
                     "over the (seed, task) pairs)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def across_n(summaries: dict[int, dict[str, Any]]) -> list[str]:
    """Each meta-training method's change between consecutive N, paired on the (seed,
    held-out task) pairs: the held-out tasks of a seed do not depend on N."""
    ns = list(summaries)
    rows = ["| method | N | " + " | ".join(f"change in {SHOWN[m][0]}" for m in
                                          ("error_auc", "test_error")) + " |", "|---|---|---|---|"]
    methods = dict.fromkeys(m for s in summaries.values() for m in s["methods"])
    for method in (m for m in methods if m not in METHODS or METHODS[m].meta_trains):
        for a, b in itertools.pairwise(n for n in ns if method in summaries[n]["methods"]):
            ea, eb = summaries[a]["methods"][method], summaries[b]["methods"][method]
            if ea["tasks"] != eb["tasks"]:
                raise RunError(f"{label(method)} held out other tasks at N = {a} and N = {b}")
            cells = []
            for metric in ("error_auc", "test_error"):
                new, old = eb[metric]["per_seed"], ea[metric]["per_seed"]
                pairs = stats.paired_groups(new, old, LEVEL)
                seeds = stats.by_group(stats.differences(new, old), LEVEL)
                word = ("spans 0" if not pairs.excludes_zero
                        else f"lower at N = {b}" if pairs.mean < 0 else f"higher at N = {b}")
                cells.append(f"{cell(pairs, {'seeds': seeds}, *SHOWN[metric][1:])} {word}")
            rows.append(f"| {label(method)} | {a} → {b} | {' | '.join(cells)} |")
    return rows


def sweep_lines(summaries: dict[int, dict[str, Any]]) -> list[str]:
    """The sweep's report: the figure, the changes across N, then each N's tables."""
    lines = ["# Sweep over the number of pretraining tasks", "",
             "Each N is one run (`n-N/`, with its own report.md). "
             + note(next(iter(summaries.values()))), "",
             "![AUC and test error against N](auc_vs_n.png)", ""]
    if len(summaries) > 1:
        lines += ["## Across N", "", "Each method's value at the larger N minus its value at "
                  "the smaller, paired on the same (seed, held-out task) pairs (percentage "
                  "points; negative: lower, which is better, at the larger N). Compare values "
                  "across N by these differences, not by whether the intervals of the tables "
                  "below overlap.", "", *across_n(summaries), ""]
    for n, summary in summaries.items():
        lines += [f"## N = {n}", "", *tables(summary)]
    return lines[:-1]


# ------------------------------------------------------------------------------- Multi-CV
MULTICV_METRICS = (("test_error", "test error"), ("train_error", "train error"),
                   ("error_auc", "AUC"))


def plot_multicv_curves(summary: dict[str, Any], path: Path) -> None:
    """Training error (%) of each held-out data set against SGD steps, mean and ±1 std over
    seeds, one panel per data set, one line per method, one legend for all."""
    holdouts = summary["holdouts"]
    cols = min(4, len(holdouts))
    rows = -(-len(holdouts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (holdout, entries) in zip(axes.flat, holdouts.items(), strict=False):
        for method, e in entries.items():
            mean, std, every = e["curve"]["mean"], e["curve"]["std"], e["curve"]["every"]
            steps = [min(every * (i + 1), e["max_steps"]) for i in range(len(mean))]
            ax.plot(steps, [100 * m for m in mean], label=label(method), color=color(method),
                    lw=1.2)
            ax.fill_between(steps, [100 * (m - s) for m, s in zip(mean, std, strict=True)],
                            [100 * (m + s) for m, s in zip(mean, std, strict=True)], alpha=0.12,
                            color=color(method))
        ax.set(title=f"held out: {holdout}", xlabel="SGD step", ylim=(0, 100))
    for ax in axes.flat[len(holdouts):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("training error (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Held-out data sets from each method's pretraining (mean; bands ±1 std over "
                 "seeds)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def multicv_tables(summary: dict[str, Any]) -> list[str]:
    """The paper's Table 1 (per held-out data set and method), the paired differences from
    Leap, and the means over every held-out data set."""
    head = " | ".join(f"{name} (%)" for _, name in MULTICV_METRICS)
    lines = [f"| held out | method | {head} | SGD steps (of at most) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for holdout, entries in summary["holdouts"].items():
        for method, e in entries.items():
            cells = " | ".join(Interval(**e[m]["ci"]).format(100) for m, _ in MULTICV_METRICS)
            lines.append(f"| {holdout} | {label(method)} | {cells} | "
                         f"{Interval(**e['steps']['ci']).format(1, 0)} ({e['max_steps']}) | "
                         f"{len(e['seeds'])} |")
    diffs = [(h, m, e["vs_leap"]) for h, entries in summary["holdouts"].items()
             for m, e in entries.items() if "vs_leap" in e]
    if diffs:
        lines += ["", "**Paired differences from Leap** (method − Leap on the same seed, "
                  "percentage points; positive: Leap lower, which is better)", "",
                  f"| held out | method − Leap | {' | '.join(n for _, n in MULTICV_METRICS)} |",
                  "|---|---|---|---|---|"]
        for holdout, method, vs in diffs:
            cells = " | ".join(f"{Interval(**vs[m]).format(100)} {verdict(Interval(**vs[m]))}"
                               for m, _ in MULTICV_METRICS)
            lines.append(f"| {holdout} | {label(method)} | {cells} |")
    overall = summary["methods"]
    if len(summary["holdouts"]) > 1 and overall:
        lines += ["", "**Over every held-out data set** (means over the (held-out data set, "
                  "seed) pairs, differences paired on them; then over the data sets' and the "
                  "seeds' means)", "",
                  f"| method | {head} | − Leap: {' | − Leap: '.join(n for _, n in MULTICV_METRICS)}"
                  " |", "|---|---|---|---|---|---|---|"]
        for method, e in overall.items():
            means = " | ".join(cell(Interval(**e[m]["ci"]), units(e[m]["per_seed"]), 100)
                               for m, _ in MULTICV_METRICS)
            diff = " | ".join(f"{cell(found[0], units(found[1]), 100)} {verdict(found[0])}"
                              if (found := pooled_difference(summary, method, m)) else ""
                              for m, _ in MULTICV_METRICS)
            lines.append(f"| {label(method)} | {means} | {diff} |")
    return lines


def units(groups: stats.Groups) -> dict[str, Interval]:
    """The data-set-level and seed-level intervals of values keyed "HELD_OUT/SEED"."""
    return {unit: stats.by_group(stats.regroup(groups, lambda k, i=i: k.rsplit("/", 1)[i]),
                                 LEVEL)
            for unit, i in (("data sets", 0), ("seeds", 1))}


def pooled_difference(summary: dict[str, Any], method: str, metric: str
                      ) -> tuple[Interval, dict[str, list[float]]] | None:
    """``method`` − Leap over every (held-out data set, seed) pair, and the differences by
    pair; ``None`` for Leap or without it."""
    e, leap = summary["methods"][method], summary["methods"].get(multicv.REFERENCE)
    if "vs_leap" not in e or leap is None:
        return None
    return (Interval(**e["vs_leap"][metric]),
            stats.differences(e[metric]["per_seed"], leap[metric]["per_seed"]))


def multicv_reading(summary: dict[str, Any]) -> str:
    """Plain sentences, generated from the tables: where Leap has the lowest mean test error
    (the paper's Table 1 claim), what the pooled differences resolve, and how many of the
    per-data-set intervals would exclude 0 by chance."""
    holdouts = summary["holdouts"]
    best = {h: min(entries, key=lambda m: entries[m]["test_error"]["ci"]["mean"])
            for h, entries in holdouts.items()}
    leads = [h for h, m in best.items() if m == "leap"]
    others = "; ".join(f"{h}: {label(m)}" for h, m in best.items() if m != "leap")
    sentences = [f"Leap has the lowest mean test error on {len(leads)} of {len(holdouts)} "
                 "held-out data sets (the paper: all but one)"
                 + (f"; elsewhere the lowest is {others}." if others else ".")]
    pooled = {m: found for m in summary["methods"]
              if (found := pooled_difference(summary, m, "test_error"))}
    if len(holdouts) > 1 and pooled:
        for method, (d, pairs) in pooled.items():
            datasets = stats.regroup(pairs, lambda k: k.rsplit("/", 1)[0])
            by_set = stats.by_group(datasets, LEVEL)
            higher, lower, p = stats.sign_test([statistics.fmean(v)
                                                for v in datasets.values()])
            sentences.append(
                f"{label(method)} − Leap, test error over every held-out data set: "
                f"{d.format(100)} points over the {d.n} (data set, seed) pairs ({verdict(d)}), "
                f"{by_set.format(100)} with the {by_set.n} data sets as the unit "
                f"({verdict(by_set)}); {label(method)} is lower on {lower} and higher on "
                f"{higher} of them (sign test p = {p:.3f}).")
    count = sum(len(MULTICV_METRICS) for entries in holdouts.values()
                for e in entries.values() if "vs_leap" in e)
    if count:
        sentences.append(f"The per-data-set table holds {count} intervals of differences; at "
                         f"{100 * LEVEL:.0f} % about {round(count * (1 - LEVEL))} of them would "
                         "exclude 0 by chance if no method differed.")
    return " ".join(sentences)


def multicv_report(run: Path, summary: dict[str, Any]) -> list[str]:
    """The Multi-CV study's report lines and plot."""
    plot_multicv_curves(summary, run / "heldout_curves.png")
    cfg, methods = summary["config"], summary["methods_config"]
    budgets: dict[tuple[int, int], list[str]] = {}
    for m, c in methods.items():
        if m in METHODS and METHODS[m].meta_trains:
            budgets.setdefault((c["meta_steps"], c["meta_patience"]), []).append(label(m))
    budget = "; ".join(f"{', '.join(names)}: at most {steps} meta-steps, stopping after "
                       f"{patience} without a lower mean validation error"
                       for (steps, patience), names in budgets.items())
    lines = ["# Multi-CV: leave one data set out", "",
             f"Each held-out data set trained from what each method learned on the other "
             f"data sets ({', '.join(cfg['datasets'])}). Every task, in pretraining and held "
             f"out, trains by SGD (lr {cfg['inner_lr']}, cosine-annealed over at most "
             f"{cfg['max_epochs']} epoch(s), batch {cfg['batch_size']}) and stops after "
             f"{cfg['patience']} validations (every {cfg['val_every']} steps) without a new "
             f"best. Pretraining: {budget or 'none'}; Progressive Nets and HAT learn each "
             "pretraining data set once, in order. Encoder: "
             f"{cfg['blocks']} conv blocks of {cfg['channels']} channels, a fresh head per data "
             f"set. Seeds {cfg['seeds']}. Lower is better.", "",
             *multicv_tables(summary), "", "**Reading.** " + multicv_reading(summary), "",
             "Errors are those of the final network on the held-out data set's test and "
             "training splits. AUC is the area under its training-error curve, normalised: the "
             "mean training error over the most steps the data set allows, steps after early "
             "stopping counted at the last error. "
             + interval_note("(held-out data set, seed)", "data sets", "seeds")
             + " Per held-out data set, an interval is over the seeds alone (one held-out run "
             "per seed, df = seeds − 1: with 3 seeds they are wide).", ""]
    if summary.get("left_out"):
        lines += ["Left out (not installed): " + "; ".join(
            f"{name}: {why}" for name, why in summary["left_out"].items()), ""]
    data = (summary.get("provenance") or {}).get("data") or {}
    if data.get("datasets"):
        lines += ["Data: " + "; ".join(f"{name} ({d['num_classes']} classes, {d['images']:,} "
                                       f"images; {d['source']})"
                                       for name, d in data["datasets"].items()) + ".", ""]
    return lines + ["![held-out training curves](heldout_curves.png)"]


# ------------------------------------------------------------------------------- RL
def plot_rl_curves(summary: dict[str, Any], path: Path) -> None:
    """Paper Fig. 3: normalised score (moving average) against environment steps per
    held-out game, mean and ±2 std over seeds, one line per initialization."""
    games = summary["config"]["heldout"]
    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 3.6), squeeze=False)
    steps = summary["steps"]
    for ax, game in zip(axes[0], games, strict=True):
        for method, e in summary["methods"].items():
            mean, std = e["curves"][game]["mean"], e["curves"][game]["std"]
            name = "Random init." if method == "scratch" else label(method)
            ax.plot(steps, [100 * m for m in mean], label=f"{name} ({len(e['seeds'])} seeds)",
                    color=color(method))
            ax.fill_between(steps, [100 * (m - 2 * s) for m, s in zip(mean, std, strict=True)],
                            [100 * (m + 2 * s) for m, s in zip(mean, std, strict=True)],
                            alpha=0.15, color=color(method))
        ax.set(title=game, xlabel="environment steps", ylabel="normalised score (%)")
        ax.legend(fontsize=8)
    fig.suptitle("Held-out games (mean over seeds; bands ±2 std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rl_meta_training(records: list[dict[str, Any]], path: Path) -> bool:
    """Return (last episodes) of each pretraining game as meta-training proceeds, and the
    mean path energy of the meta-batch: mean over seeds."""
    steps = [r for r in records if r.get("event") == "meta_step"]
    if not steps:
        return False
    keys = sorted({k for r in steps for k in r if k.startswith("return_")})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in keys + ["path"]:
        by_step: dict[int, list[float]] = {}
        for r in steps:
            if key in r:
                by_step.setdefault(r["step"], []).append(r[key])
        xs = sorted(by_step)
        ys = [sum(by_step[x]) / len(by_step[x]) for x in xs]
        ax = axes[1] if key == "path" else axes[0]
        ax.plot(xs, ys, marker="o", label=key.removeprefix("return_"))
    axes[0].set(xlabel="meta-step", ylabel="return (last episodes of the game)",
                title="Pretraining games, trained from θ⁰")
    if keys:
        axes[0].legend(fontsize=8)
    axes[1].set(xlabel="meta-step", ylabel="mean path (energy)", title="Leap's objective")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def rl_report(run: Path, summary: dict[str, Any]) -> list[str]:
    """The RL study's report lines and plots."""
    plot_rl_curves(summary, run / "heldout_scores.png")
    figures = ["heldout_scores.png"]
    if (run / "metrics.jsonl").is_file() and plot_rl_meta_training(
            read_metrics(run), run / "meta_training.png"):
        figures.append("meta_training.png")
    cfg, methods = summary["config"], summary["methods"]
    lines = [f"# Reinforcement learning: {cfg['env']}, held out {', '.join(cfg['heldout'])}",
             "",
             f"Leap meta-trained the encoder on {', '.join(cfg['pretrain'])} "
             f"({cfg['meta_steps']} meta-steps of {min(cfg['meta_batch'], len(cfg['pretrain']))}"
             f" games × {cfg['train_steps']:,} environment steps). Each held-out game then "
             f"trained for {cfg['eval_steps']:,} environment steps from each initialization "
             "(same heads, environment seeds and action streams). Scores are normalised per "
             "game: 0 = uniformly random policy, 100 = the best moving average "
             f"({cfg['window']} episodes) any run reached. Higher is better.", "",
             "| initialization | score AUC (%) [95% CI] | final score (%) [95% CI] | "
             "seeds × games |", "|---|---|---|---|"]
    for method, e in methods.items():
        name = "Random init." if method == "scratch" else label(method)
        scores = " | ".join(cell(Interval(**e[m]["ci"]), {"seeds": stats.by_group(
            e[m]["per_seed"], LEVEL)}, 100) for m, _ in RL_METRICS)
        lines.append(f"| {name} | {scores} | {len(e['seeds'])} × {len(e['games'])} |")
    lines += ["", "| game | random policy | " + " | ".join(
        f"{'Random init.' if m == 'scratch' else label(m)}: final return" for m in methods)
              + " |", "|---|---|" + "---|" * len(methods)]
    for i, game in enumerate(cfg["heldout"]):
        cells = []
        for e in methods.values():
            values = [v[i] for v in e["final_return"]["per_seed"].values()]
            cells.append(mean_ci(values).format(1.0, 2))
        lines.append(f"| {game} | {summary['random_return'][game]:.2f} | "
                     + " | ".join(cells) + " |")
    if "difference" in summary:
        lines += ["", "Paired difference, Leap − random initialization, on the same (seed, "
                  "game):", "", "| metric | difference (points) [95% CI] | verdict |",
                  "|---|---|---|"]
        for metric, name in RL_METRICS:
            d = Interval(**summary["difference"][metric])
            seeds = stats.by_group(stats.differences(
                *(methods[m][metric]["per_seed"] for m in ("leap", "scratch"))), LEVEL)
            lines.append(f"| all games: {name} | {cell(d, {'seeds': seeds}, 100)} | "
                         f"{verdict(d)} |")
        lines += [f"| {game}: {name} | {d.format(100.0, 1)} | {verdict(d)} |"
                  for game, name, d in rl_game_differences(summary)]
        lines += ["", "**Reading.** " + rl_reading(summary)]
    lines += ["", interval_note("(seed, game)", "seeds") + " Per game, an interval is over "
              "the seeds alone (df = seeds − 1).", "", provenance_line(summary), ""]
    return lines + [f"![{f}]({f})" for f in figures]


RL_METRICS = (("score_auc", "score AUC"), ("final_score", "final score"))


def rl_game_differences(summary: dict[str, Any]) -> list[tuple[str, str, Interval]]:
    """(game, metric name, Leap − random initialization over seeds) for every held-out game."""
    methods, out = summary["methods"], []
    for i, game in enumerate(summary["config"]["heldout"]):
        for metric, name in RL_METRICS:
            leap, scratch = (methods[m][metric]["per_seed"] for m in ("leap", "scratch"))
            common = [k for k in leap if k in scratch]
            out.append((game, name, stats.paired_difference([leap[k][i] for k in common],
                                                            [scratch[k][i] for k in common])))
    return out


def rl_reading(summary: dict[str, Any]) -> str:
    """Plain sentences, generated from the paired differences, on what the table shows."""
    sentences = []
    for metric, name in RL_METRICS:
        d = Interval(**summary["difference"][metric])
        if d.excludes_zero:
            side = "higher" if d.mean > 0 else "lower"
            sentences.append(f"Leap's {name} is {side} than random initialization's by "
                             f"{abs(100 * d.mean):.1f} points ({d.format(100.0, 1)}).")
        else:
            sentences.append(f"The {name} difference, {d.format(100.0, 1)} points, spans 0: "
                             "this study does not show Leap and random initialization apart "
                             f"on {name}.")
    if len(summary["config"]["heldout"]) > 1:
        per_game = rl_game_differences(summary)
        resolved = [f"{game} {name} ({d.format(100.0, 1)}, {verdict(d)})"
                    for game, name, d in per_game if d.excludes_zero]
        tests = len(per_game)
        chance = 1 - 0.95 ** tests
        sentences.append(
            f"Per game, {len(resolved)} of {tests} intervals exclude 0"
            + (f": {'; '.join(resolved)}" if resolved else "")
            + f". With {tests} intervals, at least one would exclude 0 by chance with "
            f"probability {100 * chance:.0f} % if they were independent and there were no "
            "effect.")
    return " ".join(sentences)


#: How each protocol turns its (seed, method) results into ``results.json``, and its report.
PROTOCOLS = {"transfer": transfer.summarize, "rl": rl.summarize,
             "multicv": multicv.summarize}
REPORTS = {"transfer": transfer_report, "rl": rl_report, "multicv": multicv_report}
