"""The Multi-CV study's tables, plot and generated sentences (the paper's Table 1)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaleap import methods, stats  # noqa: E402
from metaleap.methods import color, label  # noqa: E402
from metaleap.protocols.reporting import LEVEL, cell, interval_note, verdict  # noqa: E402
from metaleap.stats import Interval  # noqa: E402

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
    vs = f"vs_{methods.reference()}"
    diffs = [(h, m, e[vs]) for h, entries in summary["holdouts"].items()
             for m, e in entries.items() if vs in e]
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
    reference = methods.reference()
    e, ref = summary["methods"][method], summary["methods"].get(reference)
    if f"vs_{reference}" not in e or ref is None:
        return None
    return (Interval(**e[f"vs_{reference}"][metric]),
            stats.differences(e[metric]["per_seed"], ref[metric]["per_seed"]))


def multicv_reading(summary: dict[str, Any]) -> str:
    """Plain sentences, generated from the tables: where Leap has the lowest mean test error
    (the paper's Table 1 claim), what the pooled differences resolve, and how many of the
    per-data-set intervals would exclude 0 by chance."""
    holdouts = summary["holdouts"]
    best = {h: min(entries, key=lambda m: entries[m]["test_error"]["ci"]["mean"])
            for h, entries in holdouts.items()}
    reference = methods.reference()
    leads = [h for h, m in best.items() if m == reference]
    others = "; ".join(f"{h}: {label(m)}" for h, m in best.items() if m != reference)
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
                for e in entries.values() if f"vs_{reference}" in e)
    if count:
        sentences.append(f"The per-data-set table holds {count} intervals of differences; at "
                         f"{100 * LEVEL:.0f} % about {round(count * (1 - LEVEL))} of them would "
                         "exclude 0 by chance if no method differed.")
    return " ".join(sentences)


def multicv_report(run: Path, summary: dict[str, Any]) -> list[str]:
    """The Multi-CV study's report lines and plot."""
    plot_multicv_curves(summary, run / "heldout_curves.png")
    cfg, settings = summary["config"], summary["methods_config"]
    budgets: dict[tuple[int, int], list[str]] = {}
    for m, c in settings.items():
        if methods.get(m).kind == methods.META_BATCH and methods.get(m).meta_trains:
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
