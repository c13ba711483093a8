"""The report of an ablation grid: transfer runs that differ in a few settings, each factor's
effect on every method and on the gap between two methods.

An ablation grid is a folder of transfer runs (one per cell of the grid, e.g. data version ×
block order) that share seeds, split and budget and differ only in some settings. For every
two runs that differ in exactly one setting, the report pairs their values on the same (seed,
held-out task), so a factor's effect is a paired difference: on each method's own metrics,
and on the gap ``other − reference`` (a difference of differences), which says whether the
factor moves the two methods apart or together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaleap import methods, stats
from metaleap.methods import label
from metaleap.protocols.reporting import (
    LEVEL,
    cell,
    interval_note,
    load_summary,
    provenance_line,
    verdict,
    write_report,
)
from metaleap.protocols.transfer.config import RECORDED_BEFORE
from metaleap.protocols.transfer.report import SHOWN
from metaleap.runs import RunError, write_json
from metaleap.stats import Groups, Interval

SCHEMA_VERSION = 1
#: The metrics of the grid's tables, in their order.
METRICS = ("error_auc", "test_error")
#: The settings in which the runs of a grid may not differ (they define what is compared).
SHARED = ("seeds", "num_pretrain", "num_heldout", "inner_steps", "meta_steps", "meta_batch",
          "eval_steps", "image_size", "ways")


@dataclass
class Cell:
    """One run of the grid: its folder, the settings that tell it apart, and its summary."""

    name: str
    settings: dict[str, Any]
    summary: dict[str, Any]

    def values(self, method: str, metric: str) -> Groups:
        return self.summary["methods"][method][metric]["per_seed"]

    def gap(self, other: str, reference: str, metric: str) -> Groups:
        """``other − reference`` per (seed, task)."""
        return stats.differences(self.values(other, metric), self.values(reference, metric))


def collect(folder: Path) -> list[Cell]:
    """The grid's runs in ``folder``, with the settings in which they differ."""
    summaries = {p.name: load_summary(p) for p in sorted(folder.iterdir())
                 if (p / "config.json").is_file()}
    summaries = {k: s for k, s in summaries.items()
                 if s["protocol"] == "transfer" and s["methods"]}
    if len(summaries) < 2:
        raise RunError(f"{folder} holds fewer than two finished transfer runs: no grid")
    configs = {k: {**RECORDED_BEFORE, **s["config"]} for k, s in summaries.items()}
    first = next(iter(configs.values()))
    for name, cfg in configs.items():
        for key in SHARED:
            if cfg.get(key) != first.get(key):
                raise RunError(f"{folder / name}: {key} = {cfg.get(key)} but another run has "
                               f"{first.get(key)}: the runs of a grid share {', '.join(SHARED)}")
    keys = sorted({k for cfg in configs.values() for k in cfg
                   if len({repr(c.get(k)) for c in configs.values()}) > 1} - {"methods"})
    cells = [Cell(name, {k: configs[name].get(k) for k in keys}, s)
             for name, s in summaries.items()]
    tasks = [c.summary["methods"][m]["tasks"] for c in cells for m in c.summary["methods"]]
    if any(t != tasks[0] for t in tasks):
        raise RunError(f"the runs in {folder} held out different tasks: not comparable")
    return cells


def pair(a: Groups, b: Groups) -> tuple[Interval, Interval]:
    """``a − b`` paired on (seed, task), and over the per-seed mean differences."""
    diffs = stats.differences(a, b)
    return stats.mean_ci(stats.pooled(diffs), LEVEL), stats.by_group(diffs, LEVEL)


def shown(intervals: tuple[Interval, Interval], metric: str, word: bool = False) -> str:
    text = cell(intervals[0], {"seeds": intervals[1]}, *SHOWN[metric][1:])
    return text + (f" {verdict(intervals[0])}" if word else "")


def tables(cells: list[Cell], other: str, reference: str) -> list[str]:
    """Means, the gap other − reference per run, and each factor's paired effects."""
    keys = list(cells[0].settings)
    head = " | ".join(SHOWN[m][0] + " (%)" for m in METRICS)
    lines = ["## Means", "", f"| run | {' | '.join(keys)} | method | {head} |",
             "|---" * (len(keys) + 2 + len(METRICS)) + "|"]
    for c in cells:
        for method in c.summary["methods"]:
            means = " | ".join(shown((stats.mean_ci(stats.pooled(v := c.values(method, m)),
                                                    LEVEL), stats.by_group(v, LEVEL)), m)
                               for m in METRICS)
            lines.append(f"| {c.name} | {' | '.join(map(str, c.settings.values()))} | "
                         f"{label(method)} | {means} |")
    lines += ["", f"## {label(other)} − {label(reference)} in each run", "",
              f"Paired on (seed, held-out task); positive: {label(reference)} lower, which is "
              "better.", "", f"| run | {' | '.join(keys)} | {head} |",
              "|---" * (len(keys) + 1 + len(METRICS)) + "|"]
    for c in cells:
        gaps = " | ".join(shown(pair(c.values(other, m), c.values(reference, m)), m, True)
                          for m in METRICS)
        lines.append(f"| {c.name} | {' | '.join(map(str, c.settings.values()))} | {gaps} |")
    lines += ["", "## What each setting changes", "",
              "Between two runs that differ in that setting alone: the later value − the "
              "earlier, paired on (seed, held-out task); negative: lower, which is better, "
              f"with the later setting. The gap row is the change in {label(other)} − "
              f"{label(reference)}: positive, the setting moves the gap in "
              f"{label(reference)}'s favour.", "",
              "| setting | from → to | where | what | "
              + " | ".join(f"change in {SHOWN[m][0]}" for m in METRICS) + " |",
              "|---" * (4 + len(METRICS)) + "|"]
    for key, (a, b) in ((k, ab) for k in keys for ab in itertools.combinations(cells, 2)):
        if [k for k in keys if a.settings[k] != b.settings[k]] != [key]:
            continue
        where = ", ".join(f"{k} {a.settings[k]}" for k in keys if k != key) or "—"
        step = f"{a.settings[key]} → {b.settings[key]}"
        for method in (reference, other):
            cells_ = " | ".join(shown(pair(b.values(method, m), a.values(method, m)), m)
                                for m in METRICS)
            lines.append(f"| {key} | {step} | {where} | {label(method)} | {cells_} |")
        gap = " | ".join(shown(pair(b.gap(other, reference, m), a.gap(other, reference, m)), m)
                         for m in METRICS)
        lines.append(f"| {key} | {step} | {where} | gap | {gap} |")
    return lines


def write_ablation_report(folder: str | Path, other: str | None = None,
                          reference: str | None = None) -> Path:
    """``results.json`` and ``report.md`` of the ablation grid in ``folder`` (each run's own
    report beside them): the gap ``other − reference`` (default: the registry's reference
    method, and the one other method every run holds)."""
    folder = Path(folder)
    cells = collect(folder)
    reference = reference or methods.reference()
    if other is None:
        common = set.intersection(*(set(c.summary["methods"]) for c in cells)) - {reference}
        if len(common) != 1:
            raise RunError(f"{folder}: name the method to compare with {label(reference)} "
                           f"(the runs share {sorted(common) or 'none'})")
        other = common.pop()
    for c in cells:
        if not {other, reference} <= set(c.summary["methods"]):
            raise RunError(f"{folder / c.name} lacks {label(other)} or {label(reference)}")
        write_report(folder / c.name)
    write_json(folder / "results.json", {
        "schema": SCHEMA_VERSION, "study": "ablation", "runs": [c.name for c in cells],
        "settings": {c.name: c.settings for c in cells},
        "gap": {c.name: {m: pair(c.values(other, m), c.values(reference, m))[0].to_dict()
                         for m in METRICS} for c in cells}})
    cfg = cells[0].summary["config"]
    lines = ["# Ablation grid", "",
             f"Runs: {', '.join(f'`{c.name}/`' for c in cells)}, differing in "
             f"{', '.join(cells[0].settings)}; each meta-trained {label(reference)} and "
             f"{label(other)} for {cfg['meta_steps']} meta-steps (N = {cfg['num_pretrain']}, "
             f"K = {cfg['inner_steps']}, meta-batch {cfg['meta_batch']}, {cfg['image_size']} "
             f"px, seeds {cfg['seeds']}) and trained the same held-out tasks "
             f"{cfg['eval_steps']} SGD steps from each initialization. Errors in %, lower is "
             "better.", "", *tables(cells, other, reference), "",
             interval_note("(seed, held-out task)", "seeds"), "",
             *(f"- `{c.name}/`: {provenance_line(c.summary)}" for c in cells)]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return folder / "report.md"
