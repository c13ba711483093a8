"""What every protocol's report shares: run folders read and summarised, intervals worded.

:func:`write_report` turns one run folder into ``results.json`` (from whatever ``results/``
holds: finished and partial runs alike), ``report.md`` and its plots, through the protocol
that ran it (``config.json`` names it; :mod:`metaleap.protocols` has its descriptor). A
folder holding ``results.json`` alone (a published run, such as ``docs/results/n-*``) is
reported from it. Every interval in the tables is computed from the per-task values
(``per_seed``), so results.json of every schema read alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaleap import protocols
from metaleap.runs import OFFSET, RunError, write_json
from metaleap.stats import Interval


def read_record(run: Path) -> dict[str, Any]:
    """A run's ``config.json``: the protocol that ran and its resolved configuration."""
    if not (run / "config.json").is_file():
        raise RunError(f"{run} is not a run folder (no config.json)")
    record = json.loads((run / "config.json").read_text())
    known = protocols.registered()
    if record.get("protocol") not in known:
        raise RunError(f"{run}/config.json names no protocol this metaleap reports on "
                       f"({', '.join(known)}); it may come from metaleap 0.1: rerun it")
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
    summary = protocols.get(record["protocol"]).summarize(record, results)
    tally = meta_training(results)
    if tally:
        summary["meta_training"] = tally
    if (run / "provenance.json").is_file():
        summary["provenance"] = json.loads((run / "provenance.json").read_text())
    write_json(run / "results.json", summary)
    return summary


def meta_training(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per method, summed over its seeds: the meta-steps taken, those that moved θ⁰ and the
    tasks dropped for a non-finite loss or gradient (each result's ``"meta_training"``)."""
    out: dict[str, dict[str, int]] = {}
    for result in results.values():
        if "meta_training" in result:
            total = out.setdefault(result["method"], dict.fromkeys(result["meta_training"], 0))
            for k, v in result["meta_training"].items():
                total[k] += v
    return out


def meta_training_lines(summary: dict[str, Any]) -> list[str]:
    """What meta-training did to θ⁰, per method; first, in bold, each method whose θ⁰ never
    moved (every task of every meta-step dropped), whose results are its starting point's."""
    tally = summary.get("meta_training") or {}
    stuck = [m for m, t in tally.items() if t["meta_steps"] and not t["moved"]]
    lines = [f"**θ⁰ never moved for {m}: all {tally[m]['tasks_dropped']} tasks of its "
             f"{tally[m]['meta_steps']} meta-steps were dropped for a non-finite loss or "
             "gradient, so its results are those of its starting point; lower the learning "
             "rates.**" for m in stuck]
    if tally:
        lines.append("Meta-training: " + "; ".join(
            f"{m} moved θ⁰ in {t['moved']} of {t['meta_steps']} meta-steps, "
            f"{t['tasks_dropped']} tasks dropped" for m, t in tally.items()) + ".")
    return [line for text in lines for line in ("", text)]


def load_summary(run: str | Path) -> dict[str, Any]:
    """A run's summary: :func:`summarize_run` when it has its ``results/`` folder, else its
    ``results.json`` as it is (a published copy of a run, e.g. ``docs/results/n-*``)."""
    run = Path(run)
    if (run / "results").is_dir() or not (run / "results.json").is_file():
        return summarize_run(run)
    read_record(run)
    return json.loads((run / "results.json").read_text())


def write_report(run: str | Path) -> Path:
    """``results.json`` (when ``run`` has its results), ``report.md`` and the plots of one
    run; returns report.md."""
    run = Path(run)
    summary = load_summary(run)
    if not summary["methods"]:
        raise RunError(f"{run} has no finished (seed, method) result yet")
    lines = protocols.get(summary["protocol"]).report(run, summary)
    lines[1:1] = meta_training_lines(summary)
    (run / "report.md").write_text("\n".join(lines) + "\n")
    return run / "report.md"


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
