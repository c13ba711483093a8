"""``--dry-run``: the budget is counted from the config, priced, printed; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaleap.cli import main
from metaleap.protocols.dryrun import Budget, Phase, duration
from metaleap.protocols.transfer import TransferStudy, resolve_config
from metaleap.protocols.transfer.dryrun import transfer_budget


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def test_transfer_dry_run_prints_the_budget_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["transfer", "--preset", "tiny", "--dry-run", "--threads", "1",
                 "--out", str(out)]) == 0
    assert files_under(tmp_path) == [] and not out.exists()
    text = capsys.readouterr().out
    assert "inner steps per run" in text and "estimated wall" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["leap"][1] == "27" and rows["scratch"][1] == "6" and rows["all"][1] == "33"


def test_transfer_budget_counts_each_phase_per_process():
    cfg = resolve_config("tiny", ["methods=leap,finetune,scratch", "heldout_at=1"])
    budget = transfer_budget(TransferStudy(cfg), steps=1, repeats=1)
    phases = {m: {p.name: p.units for p in ps} for m, ps in budget.methods.items()}
    # meta-steps 2 × tasks 2 × K 3; validation at 0, 1 and 2 × 1 task × 3 steps; held-out:
    # 2 tasks × 3 steps, once more for the meta-step of heldout_at
    assert phases["leap"] == {"meta": 12, "val": 9, "held-out": 12}
    assert phases["finetune"] == {"meta": 12, "val": 9, "held-out": 12}
    assert phases["scratch"] == {"held-out": 6}
    assert budget.runs == 1 and all(p.seconds > 0 for ps in budget.methods.values() for p in ps)


def test_each_tasks_fixed_cost_is_spread_over_its_own_k_steps(monkeypatch):
    """Meta-steps of 2 tasks take 28 ms at 4 inner steps and 44 ms at 12: 1 ms a step and
    10 ms a task, so the tiny preset's tasks of K = 3 steps cost (3 + 10) / 3 ms a step; the
    medians of the interleaved repeats ignore one burst of load."""
    from metaleap.protocols.transfer import dryrun

    seconds = iter([0.028, 0.044, 0.028, 0.044, 0.900, 0.900, 0.012, 0.012, 0.012])
    monkeypatch.setattr(dryrun, "timed", lambda fn, device: next(seconds))
    budget = transfer_budget(TransferStudy(resolve_config("tiny", ["methods=leap"])))
    meta, heldout = budget.methods["leap"][0], budget.methods["leap"][-1]
    assert meta.seconds == pytest.approx((3 * 0.001 + 0.010) / 3)
    assert heldout.seconds == pytest.approx(0.001)


def test_the_estimate_multiplies_units_by_seconds_and_runs():
    budget = Budget("inner steps", 3, {"leap": [Phase("meta", 100, 0.01),
                                                Phase("held-out", 10, 0.02)]})
    assert budget.units("leap") == 110
    assert budget.seconds("leap") == pytest.approx(3 * (1.0 + 0.2))
    assert "330" in budget.render() and duration(7200 * 3) == "6.0 h"


def test_rl_dry_run_without_ale_py_fails_in_one_line(monkeypatch, capsys):
    import importlib.metadata

    real = importlib.metadata.version

    def version(package: str) -> str:
        if package == "ale-py":
            raise importlib.metadata.PackageNotFoundError(package)
        return real(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert main(["rl", "--preset", "atari-paper", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the Python package 'ale-py'" in err and "\n" not in err
