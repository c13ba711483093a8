"""Held-out paths to fixed losses (``metaleap transfer-paths``): the path arithmetic by hand,
a tiny run traced end to end, and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_transfer import Synthetic, run_study

from metaleap.cli import main
from metaleap.protocols.evaluation import Curve
from metaleap.protocols.transfer import paths
from metaleap.runs import RunError


def test_cumulative_path_by_hand():
    """Steps of length 3 and 0 with losses 5 → 1 → 1: the first segment of γ is the
    3-4-5 triangle's hypotenuse, the second has length 0."""
    curve = Curve(train_error=[1, 0, 0], train_loss=[5.0, 1.0, 1.0], test_error=0.0,
                  step_norms=[3.0, 0.0])
    assert curve.cumulative_path == [0.0, 5.0, 5.0]
    assert curve.path_length == 5.0


def test_arrival_waits_for_the_trailing_mean():
    """One low batch loss does not arrive; the mean of the last two must reach the level."""
    loss = paths.trailing_mean([3.0, 0.5, 2.0, 1.0, 0.9], 2)
    assert loss == [None, 1.75, 1.25, 1.5, 0.95]
    path = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert paths.arrival(path, loss, 1.0) == [4, 4.0]
    assert paths.arrival(path, loss, 1.75) == [1, 1.0]
    assert paths.arrival(path, loss, 0.5) is None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Seeds 0 and 1, each in its own run folder (as the scale studies ran)."""
    root = tmp_path_factory.mktemp("paths")
    for seed in (0, 1):
        run_study(root / f"seed{seed}", ["methods=leap,finetune,scratch", f"seeds={seed}",
                                         "eval_steps=4"])
    return [root / "seed0", root / "seed1"]


def test_two_runs_traced_end_to_end(runs: list[Path], tmp_path: Path):
    """The first K steps reproduce the run's held-out paths exactly (the same streams and the
    same float32 computation in one process); the comparisons pair every (seed, task); the
    report regenerates byte for byte."""
    out = tmp_path / "paths"
    report = paths.write_paths(runs, out, steps=12, levels=[1e9, 1e-9], window=3,
                               taskset=Synthetic())
    result = json.loads((out / "results.json").read_text())
    assert result["reproduces_run"] == 0.0
    leap = result["methods"]["leap"]
    for seed in ("0", "1"):
        recorded = json.loads((runs[int(seed)] / "results" / f"seed{seed}-leap.json"
                               ).read_text())
        assert leap["per_seed"][seed]["path_k"] == recorded["path_length"]
        values = leap["per_seed"][seed]
        assert all(p >= k for p, k in zip(values["path"], values["path_k"], strict=True))
        # every task is below 1e9 as soon as the window fills (step 2), and none at 1e-9
        assert [r[0] for r in values["reach"]["1000000000.0"]] == [2, 2]
        assert all(0 < r[1] < p for r, p in zip(values["reach"]["1000000000.0"],
                                                 values["path"], strict=True))
        assert values["reach"]["1e-09"] == [None, None]
    assert len(leap["mean_path"]) == 13 and len(leap["mean_loss"]) == 11
    finetune = result["comparisons"]["finetune"]
    assert finetune["path_k"]["pairs"]["n"] == 4  # 2 seeds × 2 held-out tasks
    diffs = [a - b for s in ("0", "1") for a, b in zip(
        result["methods"]["finetune"]["per_seed"][s]["path_k"], leap["per_seed"][s]["path_k"],
        strict=True)]
    assert math.isclose(finetune["path_k"]["pairs"]["mean"], sum(diffs) / 4)
    assert finetune["path_to 1e-09"] is None and finetune["steps_to 1000000000.0"]["pairs"][
        "mean"] == 0.0
    text = report.read_text()
    assert "no pair arrives" in text and (out / "paths.png").is_file()
    report.unlink()
    assert main(["report", str(out)]) == 0
    assert report.read_text() == text


def test_refusals(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = runs[0]
    with pytest.raises(RunError, match="shorter than the run's evaluation"):
        paths.trace([run], steps=3, levels=[1.0], window=2, taskset=Synthetic())
    with pytest.raises(RunError, match="must be positive"):
        paths.trace([run], steps=8, levels=[0.0], window=2, taskset=Synthetic())
    with pytest.raises(RunError, match="repeat a seed"):
        paths.trace([run, run], steps=8, levels=[1.0], window=2, taskset=Synthetic())
    with pytest.raises(RunError, match="is a run folder"):
        paths.write_paths([tmp_path], run, steps=8, levels=[1.0], window=2)
    unfinished = tmp_path / "unfinished"
    run_study(unfinished, ["methods=leap", "eval_steps=4"])
    (unfinished / "init" / "seed0-leap.safetensors").unlink()
    assert main(["transfer-paths", str(unfinished), "--out", str(tmp_path / "p")]) == 2
    assert "leap seed 0 has no exported initialization" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    with pytest.raises(SystemExit):
        main(["transfer-paths", str(run), "--out", str(tmp_path / "p"), "--losses", "1,x"])
    assert "not comma-separated numbers: '1,x'" in capsys.readouterr().err
