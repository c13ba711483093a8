"""The ablation grid's report: each setting's paired effect on every method and on the gap."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from test_transfer import run_study

from metaleap.cli import main
from metaleap.protocols.transfer.ablation import write_ablation_report
from metaleap.runs import RunError

GRID = ["methods=leap,finetune", "seeds=0,1", "meta_steps=2"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cells that differ in the block order alone."""
    root = tmp_path_factory.mktemp("grid")
    for order in ("bn-relu-pool", "pool-bn-relu"):
        run_study(root / order, GRID + [f"block_order={order}"])
    return root


def values(run: Path, method: str, metric: str) -> list[float]:
    """Every (seed, task) value of ``method``, seed by seed, from the run's own results."""
    results = [json.loads((run / "results" / f"seed{s}-{method}.json").read_text())
               for s in (0, 1)]
    return [v for r in results for v in r[metric]]


def test_a_settings_effect_on_the_gap_is_a_paired_difference_of_differences(grid: Path, capsys):
    assert main(["report", str(grid)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Ablation grid") and "differing in block_order" in text
    # (finetune − leap) with the 2019 order − (finetune − leap) with the other, task by task
    old, new = grid / "bn-relu-pool", grid / "pool-bn-relu"
    change = [(f2 - l2) - (f1 - l1) for f1, l1, f2, l2 in zip(
        values(old, "finetune", "error_auc"), values(old, "leap", "error_auc"),
        values(new, "finetune", "error_auc"), values(new, "leap", "error_auc"), strict=True)]
    row = next(line for line in text.splitlines()
               if line.startswith("| block_order | bn-relu-pool → pool-bn-relu | — | gap |"))
    assert row.split(" | ")[4].startswith(f"{100 * statistics.fmean(change):.1f} [")
    leap = [b - a for a, b in zip(values(old, "leap", "test_error"),
                                  values(new, "leap", "test_error"), strict=True)]
    row = next(line for line in text.splitlines() if " | Leap | " in line and "→" in line)
    assert row.split(" | ")[5].startswith(f"{100 * statistics.fmean(leap):.1f} [")
    summary = json.loads((grid / "results.json").read_text())
    assert summary["settings"] == {"bn-relu-pool": {"block_order": "bn-relu-pool"},
                                   "pool-bn-relu": {"block_order": "pool-bn-relu"}}
    assert (grid / "pool-bn-relu" / "report.md").is_file()


def test_runs_that_differ_in_what_a_grid_shares_are_refused(grid: Path, tmp_path: Path):
    run_study(tmp_path / "a", GRID)
    run_study(tmp_path / "b", ["methods=leap,finetune", "seeds=0", "meta_steps=2"])
    with pytest.raises(RunError, match="seeds = \\[0\\] but another run has \\[0, 1\\]"):
        write_ablation_report(tmp_path)
