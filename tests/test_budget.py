"""Held-out evaluations during meta-training (``heldout_at``), the budget report built on them,
and the generated sentences of the transfer report."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from test_transfer import run_study

from metaleap.cli import main
from metaleap.protocols.config import ConfigError
from metaleap.protocols.reporting import load_summary
from metaleap.protocols.transfer import METRICS, budget, resolve_config
from metaleap.protocols.transfer.report import reading
from metaleap.runs import RunError, read_metrics

LONG = ["methods=leap,finetune,scratch", "seeds=0,1", "meta_steps=3", "heldout_at=1,2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny budget study: Leap, finetuning and no pretraining to 3 meta-steps (held-out
    evaluations after 1 and 2), and a Leap ablation (energy) to 2 meta-steps."""
    root = tmp_path_factory.mktemp("budget")
    run_study(root / "base", LONG)
    run_study(root / "energy", ["methods=leap", "seeds=0,1", "meta_steps=2", "heldout_at=1",
                                "leap.metric=energy"])
    return root


def test_heldout_at_equals_the_final_evaluation_of_a_shorter_run(study: Path, tmp_path: Path):
    """What a run records after meta-step k is what a k-step run ends with, bit for bit."""
    long = {p.stem: json.loads(p.read_text()) for p in (study / "base" / "results").iterdir()}
    for k in (1, 2):
        short = run_study(tmp_path / f"k{k}", ["methods=leap,finetune", "seeds=0,1",
                                               f"meta_steps={k}"])
        for key in ("seed0-leap", "seed1-finetune"):
            assert long[key]["budget"][str(k)] == {m: short[key][m] for m in METRICS}
    assert long["seed0-scratch"]["budget"] == {}


def test_summary_lists_every_budget_with_the_last_meta_step(study: Path):
    summary = load_summary(study / "base")
    leap = summary["methods"]["leap"]
    assert list(leap["budget"]) == ["1", "2", "3"]
    assert leap["budget"]["3"] == {m: leap[m]["per_seed"] for m in METRICS}
    assert "budget" not in summary["methods"]["scratch"]
    assert summary["schema"] == 4 and "path_length" in summary["methods"]["finetune"]["vs_leap"]


@pytest.mark.parametrize(("override", "message"), [
    ("heldout_at=2,1", "must increase strictly"),
    ("heldout_at=1,1", "must increase strictly"),
    ("heldout_at=0", "strictly between 0 and meta_steps"),
    ("heldout_at=2", "strictly between 0 and meta_steps"),
])
def test_impossible_heldout_at_is_refused(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        resolve_config("tiny", [override])


def test_budget_series_merge_runs_and_count_inner_steps(study: Path):
    series = {(s.method, s.variant): s for s in budget.collect(study)}
    assert set(series) == {("leap", ""), ("leap", "metric=energy"), ("finetune", ""),
                           ("scratch", "")}
    leap, scratch = series["leap", ""], series["scratch", ""]
    assert sorted(leap.points) == [1, 2, 3] and sorted(scratch.points) == [0]
    cfg = resolve_config("tiny")
    assert leap.consumed(3) == 3 * min(cfg.meta_batch, cfg.num_pretrain) * cfg.inner_steps
    assert series["leap", "metric=energy"].name == "Leap (metric=energy)"


def test_budget_differences_are_paired_by_hand(study: Path):
    """finetune − Leap at meta-step 2, and how that gap moved from 1 to 3, against values
    computed from the per-task results."""
    runs = {p.stem: json.loads(p.read_text()) for p in (study / "base" / "results").iterdir()}

    def values(method: str, step: int) -> list[float]:
        return [x for seed in (0, 1) for x in
                runs[f"seed{seed}-{method}"]["budget"].get(str(step), {}).get("error_auc")
                or runs[f"seed{seed}-{method}"]["error_auc"]]

    series = {s.method: s for s in budget.collect(study) if not s.variant}
    ft, leap = series["finetune"], series["leap"]
    diff = budget.difference(ft, 2, leap, 2, "error_auc")
    assert diff.mean == pytest.approx(statistics.fmean(
        a - b for a, b in zip(values("finetune", 2), values("leap", 2), strict=True)))
    change = budget.gap_change(ft, leap, 1, 3, "error_auc")
    by_hand = [(f3 - l3) - (f1 - l1) for f3, l3, f1, l1 in zip(
        values("finetune", 3), values("leap", 3), values("finetune", 1), values("leap", 1),
        strict=True)]
    assert change.mean == pytest.approx(statistics.fmean(by_hand))
    assert change.n == len(by_hand) == 2 * 2


def test_budget_report_end_to_end_through_the_cli(study: Path, capsys):
    main(["report", str(study)])
    out = capsys.readouterr().out
    assert out == (study / "report.md").read_text() + "\n"
    assert (study / "budget.png").stat().st_size > 0
    for heading in ("## Reading", "### Paired differences from Leap", "## Leap ablations",
                    "| Leap (metric=energy) | 3 | 1 |"):
        assert heading in out
    assert "N = 2, K = 3, after 3 meta-steps (18 inner steps): Leap " in out
    saved = json.loads((study / "results.json").read_text())
    assert saved["study"] == "budget" and saved["runs"] == ["base", "energy"]
    assert {d["variant"] for d in saved["differences"]} == {"", "metric=energy"}
    assert "## Leap's own objective" in out and (study / "training_path.png").is_file()


def test_each_series_reads_its_training_path_from_its_runs_log(study: Path):
    """Leap's per-meta-step path, seed by seed, exactly as its run's metrics.jsonl logged it;
    the energy ablation's path stays in its own series, finetuning logs none; each table row
    averages the window by hand."""
    logged = [r for r in read_metrics(study / "base")
              if r["event"] == "meta_step" and r["method"] == "leap"]
    series = budget.collect(study)
    leap, energy, finetune, scratch = (
        next(s for s in series if (s.method, s.variant) == key) for key in
        [("leap", ""), ("leap", "metric=energy"), ("finetune", ""), ("scratch", "")])
    paths = leap.training_path
    assert paths == {s: [r["path"] for r in logged if str(r["seed"]) == s] for s in ("0", "1")}
    assert [len(v) for v in paths.values()] == [3, 3]
    assert [len(v) for v in energy.training_path.values()] == [2, 2]
    assert finetune.training_path == {}
    at_two = budget.window_interval(paths, 2)
    assert at_two.mean == pytest.approx(statistics.fmean(paths["0"][:2] + paths["1"][:2]))
    assert budget.window_interval(paths, 1).n == 2
    budget.write_budget_report(study)
    saved = json.loads((study / "results.json").read_text())["series"]
    assert next(s for s in saved if s["method"] == "leap" and not s["variant"])[
        "training_path"] == paths
    assert "training_path" not in next(s for s in saved if s["method"] == "finetune")
    table = budget.training_path_table(leap, scratch)
    assert table[2].startswith(f"| 1 | {budget.window_interval(paths, 1).format()} | — | "
                               f"{scratch.interval(0, 'path_length').format()} |")


def test_runs_of_two_ns_keep_their_training_paths_apart(study: Path, tmp_path: Path):
    shutil.copytree(study / "base", tmp_path / "n2")
    run_study(tmp_path / "n1", ["methods=leap,scratch", "num_pretrain=1", "seeds=0,1",
                                "meta_steps=2", "heldout_at=1"])
    leaps = {s.num_pretrain: s for s in budget.collect(tmp_path) if s.method == "leap"}
    assert [len(v) for v in leaps[1].training_path.values()] == [2, 2]
    assert [len(v) for v in leaps[2].training_path.values()] == [3, 3]
    text = budget.write_budget_report(tmp_path).read_text()
    assert "N = 1, K = 3:" in text and "N = 2, K = 3:" in text


def test_wall_time_sums_the_logged_seconds(study: Path):
    logged = [r for r in read_metrics(study / "energy") if r["event"] == "meta_step"]
    times = budget.wall_times(study)
    assert set(times) == {"base", "energy"} and set(times["base"]) == {"leap", "finetune"}
    energy = times["energy"]["leap"]
    assert energy["meta_steps"] == len(logged) == 4  # 2 seeds × 2 meta-steps
    assert energy["seconds"] == sum(r["seconds"] for r in logged)
    assert energy["median"] == statistics.median(r["seconds"] for r in logged)
    assert energy["tenth"] <= energy["median"]
    assert "| `energy/` | Leap | 4 |" in budget.write_budget_report(study).read_text()


def test_budget_report_refuses_conflicting_or_missing_runs(study: Path, tmp_path: Path):
    with pytest.raises(RunError, match="no finished transfer run"):
        budget.write_budget_report(tmp_path)
    run_study(tmp_path / "plain", ["methods=leap", "meta_steps=2"])
    with pytest.raises(RunError, match="no run with held-out evaluations"):
        budget.write_budget_report(tmp_path)
    shutil.rmtree(tmp_path / "plain")
    (tmp_path / "a").symlink_to(study / "base")
    shutil.copytree(study / "base", tmp_path / "b")
    result = tmp_path / "b" / "results" / "seed0-leap.json"
    twin = json.loads(result.read_text())
    twin["budget"]["1"]["error_auc"][0] += 0.5
    result.write_text(json.dumps(twin))
    with pytest.raises(RunError, match="Leap seed 0 after 1 meta-steps differs"):
        budget.collect(tmp_path)
    shutil.rmtree(tmp_path / "b")
    run_study(tmp_path / "b", ["methods=leap", "meta_steps=2", "eval_steps=4"])
    with pytest.raises(RunError, match="eval_steps = 4 but a has 3"):
        budget.collect(tmp_path)


def test_reading_words_each_comparison_from_its_interval():
    """Leap faster than no pretraining (resolved), slower than finetuning (resolved), and
    unresolved elsewhere: each sentence follows the sign and interval of its difference."""
    def entry(auc: list[float], test: list[float], path: list[float]) -> dict:
        return {"error_auc": {"per_seed": {"0": auc}}, "test_error": {"per_seed": {"0": test}},
                "path_length": {"per_seed": {"0": path}}}

    summary = {"methods": {
        "leap": entry([0.50, 0.60, 0.70], [0.5, 0.5, 0.5], [2.0, 2.0, 2.0]),
        "scratch": entry([0.60, 0.71, 0.79], [0.4, 0.6, 0.5], [3.0, 3.1, 2.9]),
        "finetune": entry([0.40, 0.50, 0.61], [0.6, 0.4, 0.5], [1.0, 1.1, 0.9])}}
    text = reading(summary)
    assert text.startswith("Leap learns the held-out tasks faster than from no pretraining "
                           "(train-error AUC 10.0 [")
    assert "along shorter learning paths (1.00 [" in text
    # an unresolved difference is no difference shown, never equality
    assert "shows no difference in final test error (difference 0.0 [" in text
    summary["methods"]["scratch"]["error_auc"]["per_seed"]["0"] = [0.52, 0.58, 0.71]
    assert reading(summary).startswith(
        "Leap shows no difference in how fast it learns the held-out tasks compared with "
        "training from no pretraining (train-error AUC difference ")
    assert "similar" not in text and "same" not in text
    assert "Leap learns the held-out tasks slower than from finetuning (train-error AUC 9.7 [" \
        in text
    assert "along longer learning paths (1.00 [" in text
