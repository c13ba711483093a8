"""The statistics of results.json and the report tables, against hand-computed values; and
the committed write-up against what the code generates from the committed results."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from metaleap import stats
from metaleap.protocols import reporting
from metaleap.protocols.multicv import report as multicv_report
from metaleap.protocols.transfer import ablation, budget, paths, report, summarize

T_975_5 = 2.5705818366147395  # Student t, 97.5 % quantile, 5 degrees of freedom
T_975_2 = 4.302652729911275   # … 2 degrees of freedom
T_975_1 = 12.706204736174698  # … 1 degree of freedom
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def result(method: str, seed: int, error_auc: list[float], test_error: list[float]) -> dict:
    """One (seed, method) result as a TransferRun writes it (3 held-out tasks per seed)."""
    return {"method": method, "seed": seed, "num_pretrain": 2,
            "tasks": [f"s{seed}-t{i}" for i in range(3)], "pretrain_tasks": ["p0", "p1"],
            "error_auc": error_auc, "loss_auc": [2 * v for v in error_auc],
            "test_error": test_error, "train_error_curves": [[1.0, v] for v in error_auc],
            "train_loss_curves": [[2.0, v] for v in error_auc]}


LEAP = {0: [0.50, 0.60, 0.70], 1: [0.40, 0.50, 0.60]}
DIFF = {0: [0.01, 0.02, 0.03], 1: [0.04, 0.05, 0.06]}  # reptile − leap, pair by pair


def study() -> tuple[dict, dict]:
    """config.json and results of leap and reptile (2 seeds) and fomaml (seed 1 only).

    Reptile's results come seed 1 first: pairs must be matched by seed, not by position.
    """
    methods = ["leap", "reptile", "fomaml"]
    record = {"protocol": "transfer",
              "config": {"methods": methods, "num_pretrain": 2, "data": "synthetic",
                         "eval_steps": 1, "ways": 5, "seeds": [0, 1]},
              "methods": {m: {"meta_steps": 3, "meta_batch": 4, "inner_steps": 5}
                          for m in methods}}
    results = {"seed0-leap": result("leap", 0, LEAP[0], [0.8, 0.8, 0.8]),
               "seed1-leap": result("leap", 1, LEAP[1], [0.7, 0.7, 0.7])}
    for seed in (1, 0):
        auc = [a + d for a, d in zip(LEAP[seed], DIFF[seed], strict=True)]
        results[f"seed{seed}-reptile"] = result("reptile", seed, auc, [0.8, 0.7, 0.9])
    results["seed1-fomaml"] = result("fomaml", 1, [0.4, 0.4, 0.5], [0.6, 0.7, 0.7])
    return record, results


def test_summary_intervals_and_paired_differences_match_hand_values():
    summary = summarize(*study())
    assert summary["schema"] == 4
    leap, reptile, fomaml = (summary["methods"][m] for m in ("leap", "reptile", "fomaml"))
    # Leap's AUC over its 6 (seed, task) values: mean 0.55, sample variance 0.055 / 5
    ci = leap["error_auc"]["ci"]
    half = T_975_5 * math.sqrt(0.055 / 5) / math.sqrt(6)
    assert (ci["n"], ci["level"]) == (6, 0.95)
    assert ci["mean"] == pytest.approx(0.55)
    assert (ci["low"], ci["high"]) == pytest.approx((0.55 - half, 0.55 + half))
    assert leap["error_auc"]["mean"] == pytest.approx(0.55)
    assert "vs_leap" not in leap
    # Reptile − Leap: the differences 0.01 … 0.06 (mean 0.035, sample variance 3.5e-4)
    diff = reptile["vs_leap"]["error_auc"]
    half = T_975_5 * math.sqrt(3.5e-4) / math.sqrt(6)
    assert diff["n"] == 6 and diff["mean"] == pytest.approx(0.035)
    assert (diff["low"], diff["high"]) == pytest.approx((0.035 - half, 0.035 + half))
    assert reptile["vs_leap"]["loss_auc"]["mean"] == pytest.approx(0.07)  # loss = 2 × AUC
    # test error: differences 0, −0.1, 0.1 (seed 0) and 0.1, 0, 0.2 (seed 1)
    test = reptile["vs_leap"]["test_error"]
    values = [0.0, -0.1, 0.1, 0.1, 0.0, 0.2]
    mean = sum(values) / 6
    half = T_975_5 * math.sqrt(sum((v - mean) ** 2 for v in values) / 5) / math.sqrt(6)
    assert (test["mean"], test["low"], test["high"]) == pytest.approx(
        (mean, mean - half, mean + half))
    # FOMAML finished seed 1 only: paired with Leap's seed 1 alone, 3 pairs
    diff = fomaml["vs_leap"]["error_auc"]
    values = [0.0, -0.1, -0.1]
    mean = sum(values) / 3
    half = T_975_2 * math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
    assert diff["n"] == 3
    assert (diff["mean"], diff["low"], diff["high"]) == pytest.approx(
        (mean, mean - half, mean + half))


def test_no_differences_without_leap():
    record, results = study()
    record["config"]["methods"] = ["reptile", "fomaml"]
    summary = summarize(record, {k: v for k, v in results.items() if "leap" not in k})
    assert all("vs_leap" not in e for e in summary["methods"].values())
    assert report.difference_table(summary) is None


def test_report_tables_compute_what_summarize_stores():
    summary = summarize(*study())
    for method, entry in summary["methods"].items():
        for metric in ("error_auc", "loss_auc", "test_error"):
            assert report.interval(entry, metric).to_dict() == entry[metric]["ci"]
            if method != "leap":
                assert (report.differences(summary, metric)[method].to_dict()
                        == entry["vs_leap"][metric])
    means = report.table(summary).splitlines()
    # Leap's test errors 0.8, 0.8, 0.8, 0.7, 0.7, 0.7: mean 0.75, half-width
    # t · sqrt(0.015 / 5) / sqrt(6) = 0.0575
    # Seed level: two per-seed means differing by 0.1, so the half-width is
    # t₁ · 0.1 / √2 / √2 = 0.05 · t₁ = 0.635 (AUC means 0.6, 0.5; test 0.8, 0.7)
    half = T_975_1 * 0.05
    leap_auc = report.interval(summary["methods"]["leap"], "error_auc")
    assert means[2] == (f"| Leap | {100 * leap_auc.mean:.1f} [{100 * leap_auc.low:.1f}, "
                        f"{100 * leap_auc.high:.1f}]; seeds [{100 * (0.55 - half):.1f}, "
                        f"{100 * (0.55 + half):.1f}] | 75.0 [69.3, 80.7]; seeds "
                        f"[{100 * (0.75 - half):.1f}, {100 * (0.75 + half):.1f}] | "
                        f"{2 * leap_auc.mean:.3f} [{2 * leap_auc.low:.3f}, "
                        f"{2 * leap_auc.high:.3f}]; seeds [{2 * (0.55 - half):.3f}, "
                        f"{2 * (0.55 + half):.3f}] | 3 × 2 × 5 = 30 | 2 × 3 |")
    # half-widths: Reptile 0.0196 (AUC), 0.1101 (test); FOMAML, 3 pairs, t₂ · 0.0577 / √3.
    # Reptile's per-seed mean differences: AUC 0.02 and 0.05 (half-width t₁ · 0.015),
    # test 0 and 0.1 (t₁ · 0.05); FOMAML ran one seed, so it has no seed-level interval.
    assert report.difference_table(summary).splitlines()[4:] == [
        f"| Reptile | 3.5 [1.5, 5.5]; seeds [{100 * (0.035 - T_975_1 * 0.015):.1f}, "
        f"{100 * (0.035 + T_975_1 * 0.015):.1f}] Leap better | 5.0 [-6.0, 16.0]; seeds "
        f"[{100 * (0.05 - half):.1f}, {100 * (0.05 + half):.1f}] spans 0 |",
        "| FOMAML | -6.7 [-21.0, 7.7] spans 0 | -3.3 [-17.7, 11.0] spans 0 |"]


@pytest.mark.parametrize("mean,low,high,word", [(0.02, 0.01, 0.03, "Leap better"),
                                                (-0.02, -0.03, -0.01, "Leap worse"),
                                                (0.01, -0.01, 0.03, "spans 0")])
def test_verdict_says_whether_the_interval_excludes_zero(mean, low, high, word):
    assert report.verdict(report.Interval(mean, low, high, 6, 0.95)) == word


def test_scratch_has_no_meta_training_budget():
    record, results = study()
    record["config"]["methods"].append("scratch")
    record["methods"]["scratch"] = record["methods"]["leap"]
    results["seed0-scratch"] = result("scratch", 0, LEAP[0], [0.8, 0.8, 0.8])
    summary = summarize(record, results)
    assert report.sgd_steps(summary, "scratch") == "none"
    assert report.sgd_steps(summary, "leap") == "3 × 2 × 5 = 30"  # meta-batch 4 capped at N = 2


# ---------------------------------------------------------------- the committed write-up


def test_committed_reports_are_generated_from_the_committed_results():
    """docs/results/n-*/report.md and docs/results/report.md are what the code writes from the
    committed results.json (schema 2, intervals computed from per_seed): no hand edits."""
    summaries = {}
    for run in sorted(RESULTS.glob("n-*")):
        summary = json.loads((run / "results.json").read_text())
        figures = [f for f in report.FIGURES if (run / f).is_file()]
        expected = "\n".join(report.transfer_lines(summary, figures)) + "\n"
        assert (run / "report.md").read_text() == expected, run
        summaries[summary["config"]["num_pretrain"]] = summary
    expected = "\n".join(report.sweep_lines(dict(sorted(summaries.items())))) + "\n"
    assert (RESULTS / "report.md").read_text() == expected


@pytest.mark.parametrize("folder,least", [(RESULTS, 20), (RESULTS / "budget", 20),
                                          (RESULTS / "multicv", 5), (RESULTS / "rl", 2),
                                          (RESULTS / "ablation", 10), (RESULTS / "scale", 10),
                                          (RESULTS / "scale-400", 20),
                                          (RESULTS / "rl-long", 4)])
def test_every_number_the_write_up_quotes_is_in_the_generated_tables(folder: Path, least: int):
    """Each interval and budget in a write-up (README.md) is copied from its report.md (or,
    for a study with a paths folder, from paths/report.md)."""
    write_up = (folder / "README.md").read_text()
    tables = "".join(p.read_text() for p in (folder / "report.md", folder / "paths" /
                                             "report.md") if p.is_file())
    quoted = re.findall(r"-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]", write_up)
    quoted += re.findall(r"\d+ × \d+ × \d+ = \d+", write_up)
    assert len(quoted) >= least
    assert [q for q in quoted if q not in tables] == []


@pytest.mark.parametrize("study", ["budget", "scale", "scale-400"])
def test_committed_budget_report_is_generated_from_the_committed_results(tmp_path: Path,
                                                                         study: str):
    """docs/results/budget, scale and scale-400: report.md and results.json are what
    `metaleap report` writes from the committed run folders (config.json and results.json of
    each, and metrics.jsonl where committed)."""
    committed = RESULTS / study
    for run in (p for p in committed.iterdir() if (p / "config.json").is_file()):
        (tmp_path / run.name).mkdir()
        for name in ("config.json", "results.json", "metrics.jsonl"):
            if (run / name).is_file():
                shutil.copy(run / name, tmp_path / run.name / name)
    budget.write_budget_report(tmp_path)
    for name in ("report.md", "results.json"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name


def test_the_audited_intervals_are_in_the_generated_reports():
    """Intervals an independent audit computed with its own code from the committed
    results.json: comparisons across N paired on (seed, task), and Multi-CV's pooled
    difference with the data set as the unit, with its sign test."""
    sweep = (RESULTS / "report.md").read_text()
    assert "| Leap | 1 → 5 | -2.0 [-3.5, -0.6]; seeds" in sweep
    assert re.search(r"\| Finetuning \| 5 → 20 \| [^|]+ \| 14\.9 \[7\.2, 22\.6\]",
                     sweep)
    summary = json.loads((RESULTS / "multicv" / "results.json").read_text())
    assert ("Finetuning − Leap, test error over every held-out data set: "
            "-17.6 [-27.2, -8.1] points over the 21 (data set, seed) pairs (Leap worse), "
            "-17.6 [-37.5, 2.2] with the 7 data sets as the unit (spans 0); Finetuning "
            "is lower on 7 and higher on 0 of them (sign test p = 0.016)."
            ) in multicv_report.multicv_reading(summary)


def test_committed_paths_report_is_generated_from_its_results(tmp_path: Path):
    shutil.copy(RESULTS / "scale-400" / "paths" / "results.json", tmp_path / "results.json")
    assert paths.write_paths_report(tmp_path) is not None
    assert ((tmp_path / "report.md").read_text()
            == (RESULTS / "scale-400" / "paths" / "report.md").read_text())


def test_committed_multicv_and_rl_reports_are_generated_from_their_results(tmp_path: Path):
    for name in ("multicv", "rl", "rl-long", "rl-long/a2c-check/asterix-breakout",
                 "rl-long/a2c-check/space-invaders"):
        shutil.copytree(RESULTS / name, tmp_path / name, dirs_exist_ok=True)
        reporting.write_report(tmp_path / name)
        assert ((tmp_path / name / "report.md").read_text()
                == (RESULTS / name / "report.md").read_text()), name


def test_the_readme_results_table_is_the_committed_results():
    """Every number in the top-level README's Results table, computed here from the committed
    results.json files."""
    readme = (RESULTS.parents[1] / "README.md").read_text()
    rows = readme[readme.index("## Results"):].split("\n## ")[0].splitlines()
    rows = {r.split("](")[1].split(")")[0]: r for r in rows if r.startswith("| [")}
    paper = 1000 * 20 * 100  # the paper's inner SGD steps per run: meta-steps × tasks × K

    n5 = json.loads((RESULTS / "n-5" / "results.json").read_text())
    steps = int(report.sgd_steps(n5, "leap").split(" = ")[1])
    assert report.differences(n5, "error_auc")["finetune"].format(100) in rows["docs/results/"]
    assert f"{steps} / {paper:,} inner SGD steps per run: {100 * steps / paper:.2f} %" in \
        rows["docs/results/"]

    found = budget.comparisons(budget.collect(RESULTS / "budget"))
    ft5 = next(c for c in found if c.other.method == "finetune" and c.leap.num_pretrain == 5)
    ft100 = next(c for c in found if c.other.method == "finetune" and c.leap.inner_steps == 100)
    last = ft5.steps[-1]
    row = rows["docs/results/budget/"]
    assert f"{ft5.at(last, 'error_auc').format(100)} (N = 5, {last} meta-steps)" in row
    assert (f"{budget.gap_change(ft100.other, ft100.leap, 12, 48, 'error_auc').format(100)} "
            "from 12 to 48 meta-steps") in row
    most = ft5.leap.consumed(last)
    assert f"{most} / {paper:,} inner SGD steps per run: {100 * most / paper:.1f} %" in row

    multicv = json.loads((RESULTS / "multicv" / "results.json").read_text())
    d, pairs = multicv_report.pooled_difference(multicv, "finetune", "test_error")
    datasets = stats.regroup(pairs, lambda k: k.rsplit("/", 1)[0])
    higher, lower, p = stats.sign_test([sum(v) / len(v) for v in datasets.values()])
    row = rows["docs/results/multicv/"]
    assert f"lowest on {lower} of {len(datasets)} (sign test p = {p:.3f})" in row
    assert f"{stats.by_group(datasets).format(100)} with data sets as the unit" in row
    cfg = multicv["config"]
    most = cfg["meta_steps"] * (len(cfg["datasets"]) - 1) * cfg["max_epochs"] * math.ceil(
        cfg["max_train"] / cfg["batch_size"])
    assert f"≤ {most} pretraining SGD steps per run" in row

    cells = ablation.collect(RESULTS / "ablation")

    def cell(order: str, data: str, resample: str = "bilinear") -> ablation.Cell:
        return next(c for c in cells if c.settings == {
            "augment_resample": resample, "block_order": order, "data": data})

    v1, v2 = cell("pool-bn-relu", "glyphs"), cell("pool-bn-relu", "glyphs:v2")
    old, nearest = cell("bn-relu-pool", "glyphs:v2"), cell("pool-bn-relu", "glyphs:v2", "nearest")
    row = rows["docs/results/ablation/"]
    gap = {c.name: c.gap("finetune", "leap", "error_auc") for c in (v1, v2, old, nearest)}
    assert (f"narrows the finetuning − Leap gap by "
            f"{ablation.pair(gap[v2.name], gap[old.name])[0].format(100)} on handwriting-like "
            f"glyphs, and those glyphs widen it by "
            f"{ablation.pair(gap[v2.name], gap[v1.name])[0].format(100)}") in row
    assert (f"the authors' nearest-neighbour resampling moves it by "
            f"{ablation.pair(gap[nearest.name], gap[v2.name])[0].format(100)}") in row
    cfg = v2.summary["config"]
    steps = cfg["meta_steps"] * cfg["meta_batch"] * cfg["inner_steps"]
    assert f"{steps} / {paper:,} inner SGD steps per run: {100 * steps / paper:.2f} %" in row

    found = budget.comparisons(budget.collect(RESULTS / "scale"))
    ft = next(c for c in found if c.other.method == "finetune")
    first, last = ft.steps[0], ft.steps[-1]
    row = rows["docs/results/scale/"]
    assert (f"{ft.at(last, 'error_auc').format(100)} after {last} meta-steps, from "
            f"{ft.at(first, 'error_auc').format(100)} after {first}") in row
    most = ft.leap.consumed(last)
    assert f"{most} / {paper:,} inner SGD steps per run: {100 * most / paper:.0f} %" in row

    found = budget.comparisons(budget.collect(RESULTS / "scale-400"))
    ft = next(c for c in found if c.other.method == "finetune")
    before, last = ft.steps[-2:]
    row = rows["docs/results/scale-400/"]
    assert f"by {ft.at(last, 'error_auc').format(100)} after {last} meta-steps" in row
    assert (f"{budget.gap_change(ft.other, ft.leap, before, last, 'error_auc').format(100)} "
            f"from {before} to {last}, no change shown; with the seed as the unit the gap spans "
            f"0, seeds {ft.at(last, 'error_auc', by_seed=True).bounds(100)}") in row
    assert not ft.at(last, "error_auc", by_seed=True).excludes_zero
    traced = json.loads((RESULTS / "scale-400" / "paths" / "results.json").read_text())
    to_one = {m: stats.Interval(**c["path_to 1.0"]["pairs"]).format()
              for m, c in traced["comparisons"].items()}
    assert (f"no pretraining − Leap {to_one['scratch']}, finetuning − Leap "
            f"{to_one['finetune']}") in row
    most = ft.leap.consumed(last)
    assert f"{most} / {paper:,} inner SGD steps per run: {100 * most / paper:.0f} %" in row

    rl = json.loads((RESULTS / "rl" / "results.json").read_text())
    cfg = rl["config"]
    ours = cfg["meta_steps"] * min(cfg["meta_batch"], len(cfg["pretrain"])) * cfg["train_steps"]
    theirs = 100 * 16 * 5_000_000  # meta-steps × games per meta-step × steps per game
    row = rows["docs/results/rl/"]
    assert f"score AUC {report.Interval(**rl['difference']['score_auc']).format(100)}" in row
    assert (f"{ours / 1e6:.1f} million / {theirs / 1e6:,.0f} million meta-training environment "
            f"steps: {100 * ours / theirs:.2f} %") in row

    rl = json.loads((RESULTS / "rl-long" / "results.json").read_text())
    cfg = rl["config"]
    ours = cfg["meta_steps"] * min(cfg["meta_batch"], len(cfg["pretrain"])) * cfg["train_steps"]
    row = rows["docs/results/rl-long/"]
    assert f"score AUC {report.Interval(**rl['difference']['score_auc']).format(100)}" in row
    learned = rl["methods"]["scratch"]["final_return"]["per_seed"]
    for i, game in enumerate(cfg["heldout"]):  # A2C learned: its final return against random
        final = stats.mean_ci([v[i] for v in learned.values()])
        assert f"{final.format(1.0, 2)} against {rl['random_return'][game]:.2f}" in row
        assert final.low > rl["random_return"][game]
    assert (f"{ours / 1e6:.0f} million / {theirs / 1e6:,.0f} million meta-training environment "
            f"steps: {100 * ours / theirs:.2f} %") in row


def test_committed_ablation_report_is_generated_from_the_committed_results(tmp_path: Path):
    committed = RESULTS / "ablation"
    for run in (p for p in committed.iterdir() if (p / "config.json").is_file()):
        shutil.copytree(run, tmp_path / run.name)
    ablation.write_ablation_report(tmp_path)
    for name in ("report.md", "results.json"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
