"""The transfer study's tables, plots and generated sentences, of one run and of a sweep."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaleap import methods, stats  # noqa: E402
from metaleap.methods import color, label  # noqa: E402
from metaleap.protocols.reporting import (  # noqa: E402
    LEVEL,
    cell,
    interval_note,
    load_summary,
    provenance_line,
    verdict,
)
from metaleap.protocols.transfer.summary import METRICS  # noqa: E402
from metaleap.runs import RunError, read_metrics, write_json  # noqa: E402
from metaleap.stats import Interval  # noqa: E402


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
                         methods.reference(), LEVEL,
                         (lambda d: stats.by_group(d, LEVEL)) if by_seed else None)


def sgd_steps(summary: dict[str, Any], method: str) -> str:
    """A method's meta-training SGD steps: meta-steps × tasks per meta-step × inner steps."""
    if not methods.get(method).meta_trains:
        return "none"
    cfg = summary["methods_config"][method]
    tasks = min(cfg["meta_batch"], summary["config"]["num_pretrain"])
    return (f"{cfg['meta_steps']} × {tasks} × {cfg['inner_steps']} = "
            f"{cfg['meta_steps'] * tasks * cfg['inner_steps']}")


def metrics_of(summary: dict[str, Any]) -> list[str]:
    """The transfer metrics every method of ``summary`` holds (schema 3 and earlier lack the
    path length)."""
    return [m for m in METRICS if all(m in e for e in summary["methods"].values())]


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
        rows.append(f"| {label(method)} | {cells} | {sgd_steps(summary, method)} "
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


def baselines(names: list[str]) -> list[str]:
    """The registry's baselines among ``names``: the one that does not meta-train (does Leap
    transfer at all?) first, then those that do."""
    return sorted((m for m in names if m in methods.METHODS and methods.get(m).baseline),
                  key=lambda m: methods.get(m).meta_trains)


def starting(method: str) -> str:
    """How the sentences name training from ``method``'s initialization."""
    return f"from {label(method).lower()}"


def reading(summary: dict[str, Any]) -> str:
    """One plain sentence on how the reference (Leap) compares with each baseline of the
    registry (no pretraining, finetuning), generated from the paired differences (the demo
    ends with them)."""
    shown = [m for m in PHRASES if m in metrics_of(summary)]
    diffs = {m: differences(summary, m) for m in shown}
    sentences = []
    for method in baselines(list(diffs["error_auc"])):
        parts = [phrase(m, diffs[m][method], starting(method)) for m in shown]
        sentences.append(f"{label(methods.reference())} " + ", ".join(parts[:-1])
                         + (", " if len(parts) > 2 else " ") + parts[-1] + ".")
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
    names = list(dict.fromkeys(r["method"] for r in val))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False,
                             sharey=True)
    for ax, method in zip(axes[0], names, strict=True):
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
    names = list(dict.fromkeys(m for s in summaries.values() for m in s["methods"]))
    ns_all = list(summaries)
    for ax, metric, name in zip(axes, ("error_auc", "test_error"),
                                ("train-error AUC", "test error"), strict=True):
        for method in names:
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
    trained = dict.fromkeys(m for s in summaries.values() for m in s["methods"])
    for method in (m for m in trained if m not in methods.METHODS
                   or methods.get(m).meta_trains):
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
