"""The Multi-CV protocol (docs/multicv.md): leave one data set out, every method, on toy data
sets."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_transfer import content

from metaleap import seeding
from metaleap.cli import main
from metaleap.metalearners import HAT, ProgressiveNets
from metaleap.methods import HATOptions
from metaleap.protocols import multicv as P
from metaleap.protocols import transfer
from metaleap.protocols.base import RunContext
from metaleap.protocols.config import ConfigError
from metaleap.protocols.multicv import training
from metaleap.tasks import multicv
from metaleap.tasks.errors import MissingDependencyError
from metaleap.tasks.multicv import LabeledImages

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

#: Toy data sets: (name, classes); each class is a bright bar at its own height.
TOYS = {"toy_a": 3, "toy_b": 4, "toy_c": 5}
ALL = "methods=" + ",".join(P.MultiCVConfig.supported())
TINY = ["multicv", "--preset", "tiny", "--no-progress", "--set", "datasets=toy_a,toy_b,toy_c",
        "--holdout", "toy_c"]


def toy(name: str, classes: int, n: int = 60):
    def load(seed: int = 0) -> LabeledImages:
        g = torch.Generator().manual_seed(classes)
        y = torch.arange(n) % classes
        x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
        for c in range(classes):
            x[y == c, 0, 2 + 4 * c:6 + 4 * c, 4:24] += 0.7
        return LabeledImages(name, x.clamp(0, 1), y, classes, f"toy, {classes} bars")
    return load


@pytest.fixture(autouse=True, scope="module")
def toys() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, classes in TOYS.items():
            mp.setitem(multicv.DATASETS, name, toy(name, classes))
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study of every method with toy_c held out, run without interruption."""
    out = tmp_path_factory.mktemp("multicv") / "straight"
    assert main(TINY + ["--set", ALL, "--out", str(out)]) == 0
    return out


def study(*overrides: str) -> P.MultiCVStudy:
    return P.MultiCVStudy(P.resolve_config("tiny", ["datasets=toy_a,toy_b,toy_c",
                                                    "holdout=toy_c", *overrides]))


# ------------------------------------------------------------------------ the study
def test_every_method_runs_and_the_report_has_the_table(straight: Path):
    summary = json.loads((straight / "results.json").read_text())
    assert summary["protocol"] == "multicv" and summary["schema"] == P.SCHEMA_VERSION
    cell = summary["holdouts"]["toy_c"]
    assert list(cell) == P.MultiCVConfig.supported()
    for method, e in cell.items():
        assert e["seeds"] == [0]
        for metric in (*P.METRICS, "steps"):
            assert list(e[metric]["per_seed"]) == ["0"] and "ci" in e[metric]
        assert 0 <= e["test_error"]["ci"]["mean"] <= 1 and 0 <= e["error_auc"]["ci"]["mean"] <= 1
        assert len(e["curve"]["mean"]) == math.ceil(e["max_steps"] / e["curve"]["every"])
        assert ("vs_leap" in e) == (method != "leap")
    assert set(summary["methods"]) == set(P.MultiCVConfig.supported())
    result = json.loads((straight / "results" / "seed0-hat-holdout-toy_c.json").read_text())
    assert result["pretrain"] == ["toy_a", "toy_b"] and result["holdout"] == "toy_c"
    assert result["val_errors"] and 1 <= result["steps"] <= result["max_steps"]
    report = (straight / "report.md").read_text()
    for text in ("| held out | method | test error (%) | train error (%) | AUC (%)",
                 "Progressive Nets", "HAT", "Paired differences from Leap", "toy_b (4 classes"):
        assert text in report
    best = min(cell, key=lambda m: cell[m]["test_error"]["ci"]["mean"])
    leads = int(best == "leap")
    assert f"Leap has the lowest mean test error on {leads} of 1 held-out data sets" in report
    assert "The per-data-set table holds 18 intervals of differences" in report  # 6 × 3
    assert (straight / "heldout_curves.png").stat().st_size > 0
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().split("\n")
               if line]
    leap = [r for r in records if r["method"] == "leap"]
    assert [r["step"] for r in leap] == [1, 2] and all(r["tasks"] == 2.0 for r in leap)
    assert [r["step"] for r in records if r["method"] == "hat"] == [1, 2]  # two data sets
    provenance = json.loads((straight / "provenance.json").read_text())
    assert list(provenance["data"]["datasets"]) == ["toy_a", "toy_b", "toy_c"]
    assert provenance["data"]["datasets"]["toy_b"]["source"] == "toy, 4 bars"


def test_heads_have_each_data_sets_width_and_are_never_in_theta0(straight: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    for method in ("leap", "reptile", "fomaml", "finetune", "scratch"):
        init = load_file(str(straight / "init" / f"seed0-{method}-holdout-toy_c.safetensors"))
        assert init and all(k.startswith("encoder.") for k in init), method
    s = study()
    assert s.classes == TOYS and s.model("toy_b", 0, 0).head.out_features == 4
    run = P.MetaRun(s, "leap", 0, "toy_c")
    widths, original = [], run.learner.task

    def spy(model, optimizer, *, index):
        widths.append((index, model.head.out_features))
        return original(model, optimizer, index=index)

    monkeypatch.setattr(run.learner, "task", spy)
    before = {k: v.clone() for k, v in run.learner.initialization().items()}
    run.meta_step(0, RunContext())
    assert widths == [(0, 3), (1, 4)]
    after = run.learner.initialization()
    assert after.keys() == before.keys() and all(k.startswith("encoder.") for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # θ⁰ moved
    finetune = P.MetaRun(s, "finetune", 0, "toy_c").learner
    assert [h.out_features for h in finetune.net.heads] == [3, 4]  # type: ignore[attr-defined]
    progressive = P.SequentialRun(s, "progressive", 0, "toy_c").learner
    assert [c.head.out_features for c in progressive.columns] == [3, 4, 5]
    hat = P.SequentialRun(s, "hat", 0, "toy_c").learner
    assert [h.out_features for h in hat.heads] == [3, 4, 5]


@pytest.mark.parametrize("fail", [[("leap", 1), ("progressive", 1)],
                                  [("finetune", 1), ("hat", 1)]])
def test_resume_after_failures_is_bit_identical(tmp_path: Path, straight: Path, capsys,
                                                monkeypatch: pytest.MonkeyPatch, fail):
    """Each (method, meta-step) of ``fail`` raises once, after that method's checkpoint of
    its first meta-step; the run is resumed after each failure."""
    pending = list(fail)
    originals = {kind: kind.meta_step for kind in (P.MetaRun, P.SequentialRun)}

    def failing(kind):
        def meta_step(self, step, context):
            if pending and (self.method, step) == pending[0]:
                pending.pop(0)
                raise ZeroDivisionError("a bug")
            return originals[kind](self, step, context)
        return meta_step

    for kind in originals:
        monkeypatch.setattr(kind, "meta_step", failing(kind))
    argv = TINY + ["--set", ALL, "--out", str(tmp_path / "broken")]
    assert main(argv) == 1
    assert main(argv + ["--resume"]) == 1 and not pending
    assert "rerun with --resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    files = ["metrics.jsonl"] + [f"{d}/seed0-{m}-holdout-toy_c.{x}"
                                 for m in P.MultiCVConfig.supported()
                                 for d, x in (("results", "json"), ("init", "safetensors"))]
    for rel in files:
        assert content(straight / rel) == content(tmp_path / "broken" / rel), rel


def test_missing_data_set_names_its_install_command_and_writes_nothing(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    def missing(seed: int = 0) -> LabeledImages:
        raise MissingDependencyError("Python package 'toyb' is not installed; install it "
                                     "with: pip install toyb")

    monkeypatch.setitem(multicv.DATASETS, "toy_b", missing)
    out = tmp_path / "run"
    argv = TINY + ["--set", "methods=leap,scratch", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "toy_b" in err and "pip install toyb" in err
    assert "--allow-missing" in err and not out.exists()
    assert main(argv[:-2] + ["--holdout", "toy_b", "--allow-missing", "--out", str(out)]) == 2
    assert "held-out data set toy_b is not installed" in capsys.readouterr().err
    assert not out.exists()
    assert main(argv + ["--allow-missing"]) == 0
    assert "running without toy_b: Python package 'toyb'" in capsys.readouterr().err
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["datasets"] == ["toy_a", "toy_c"]
    assert "pip install toyb" in record["left_out"]["toy_b"]
    assert json.loads((out / "provenance.json").read_text())["data"]["left_out"] == ["toy_b"]
    result = json.loads((out / "results" / "seed0-leap-holdout-toy_c.json").read_text())
    assert result["pretrain"] == ["toy_a"]
    report = (out / "report.md").read_text()
    assert "Left out (not installed): toy_b: Python package 'toyb'" in report


def test_settings_methods_and_holdouts_are_checked():
    cfg = P.resolve_config("tiny", ["methods=progressive,hat", "hat.s_max=100",
                                    "progressive.alpha=0.5", "leap.meta_lr=0.02"])
    assert cfg.options("hat").s_max == 100 and cfg.options("progressive").alpha == 0.5
    assert cfg.options("leap").metric == "energy" and cfg.options("leap").meta_lr == 0.02
    assert P.resolve_config("tiny", ["holdout=all"]).holdouts() == ["digits", "animal_mnist",
                                                                    "mnist"]
    for overrides, message in [(["methods=maml"], "MAML cannot unroll"),
                               (["holdout=fashion_mnist"], "not among datasets"),
                               (["datasets=mnist"], "at least two"),
                               (["datasets=mnist,nope"], "unknown data set"),
                               (["hat.s_max=0.5"], "s_max must be at least 1"),
                               (["hat.meta_steps=3"], "with no meta-steps")]:
        with pytest.raises(ConfigError, match=message):
            P.resolve_config("tiny", overrides)
    with pytest.raises(ConfigError, match=r"transfer protocol runs .*; not \['hat'\]"):
        transfer.resolve_config("tiny", ["methods=leap,hat"])
    with pytest.raises(ConfigError, match="unknown method"):
        P.resolve_config("tiny", ["methods=leap,magic"])


# ------------------------------------------------------------------------ early stopping
def test_patience_against_a_hand_built_sequence():
    p = training.Patience(2)
    stops = [p.update(v) for v in [0.5, 0.4, 0.4, 0.45, 0.3, 0.35, float("nan")]]
    assert stops == [False, False, False, True, False, False, True]
    assert p.best == 0.3 and p.since == 2
    q = training.Patience(2)
    q.load_state(p.state())
    assert q == p


def test_a_task_stops_after_patience_validations_without_improvement(
        monkeypatch: pytest.MonkeyPatch):
    """Validations every 2 steps read 0.9, 0.8, 0.7, 0.75, 0.7: the last two do not improve
    on 0.7, so with patience 2 the task stops at step 8 of at most 20."""
    values = iter([0.9, 0.8, 0.7, 0.75, 0.7])
    real = training.error_rate
    monkeypatch.setattr(training, "error_rate", lambda f, x, y: next(values))
    s = study("max_epochs=4")
    cfg, task = s.cfg, s.task("toy_a", 0)
    model = s.model("toy_a", 0, "test")
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr)
    trained = training.InnerTraining(cfg, task, training.ModelTrainee(model, model),
                                     optimizer, seeding.generator(0, "test")).run()
    assert trained.max_steps == 20 and trained.steps == 8 and trained.done
    assert trained.val_errors == [0.9, 0.8, 0.7, 0.75, 0.7]
    assert trained.patience.best == 0.7
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        cfg.inner_lr * (1 + math.cos(math.pi * 8 / 20)) / 2)  # cosine annealing over 20 steps
    errors = torch.stack(trained.errors).double()
    curve = [float(errors[i:i + 2].mean()) for i in range(0, 8, 2)]
    assert trained.curve == pytest.approx(curve)
    assert trained.error_auc == pytest.approx((float(errors.sum()) + 12 * curve[-1]) / 20)
    monkeypatch.setattr(training, "error_rate", real)
    assert 0 <= trained.scores()["test_error"] <= 1


def test_meta_training_stops_early_and_resumes_at_the_same_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A constant validation error improves once, then never: meta_patience 2 stops Leap
    after meta-step 3 of 5, and so does a run killed in meta-step 3 and resumed from the
    checkpoint of step 2 (which holds the counter)."""
    monkeypatch.setattr(P.MetaRun, "round_metrics",
                        staticmethod(lambda best, steps: {"val_error": 0.5, "inner_steps": 1.0}))
    argv = TINY + ["--set", "methods=leap,scratch", "--set", "meta_steps=5"]
    assert main(argv + ["--out", str(tmp_path / "straight")]) == 0
    original = P.MetaRun.meta_step

    def failing(self, step, context):
        if step == 2:
            raise ZeroDivisionError("killed")
        return original(self, step, context)

    monkeypatch.setattr(P.MetaRun, "meta_step", failing)
    assert main(argv + ["--out", str(tmp_path / "broken")]) == 1
    monkeypatch.setattr(P.MetaRun, "meta_step", original)
    assert main(argv + ["--out", str(tmp_path / "broken"), "--resume"]) == 0
    log = content(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in log if r["method"] == "leap"] == [1, 2, 3]
    assert content(tmp_path / "broken" / "metrics.jsonl") == log
    for rel in ["results/seed0-leap-holdout-toy_c.json", "init/seed0-leap-holdout-toy_c"
                ".safetensors"]:
        assert content(tmp_path / "straight" / rel) == content(tmp_path / "broken" / rel)


# ------------------------------------------------------------------------ the baselines
def batch(classes: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % classes


def train_steps(task, steps: int = 3) -> None:
    optimizer = torch.optim.SGD(task.parameters, lr=0.1)
    for _ in range(steps):
        x, y = batch(3)
        task.backward(task.loss(task.forward(x), y))
        optimizer.step()
        optimizer.zero_grad()
        task.stepped()


def test_progressive_nets_freeze_earlier_columns_and_read_them_laterally():
    net = ProgressiveNets([3, 3], channels=4, blocks=2, seed=0, image_size=28)
    assert net.columns[0].head_lateral is None and len(net.columns[0].laterals) == 0
    assert len(net.columns[1].laterals) == 1  # block 1 reads block 0 of column 0
    with net.task(0, 4) as t:
        train_steps(t)
    first = {k: v.clone() for k, v in net.columns[0].state_dict().items()}
    with net.task(1, 4) as t:
        assert {id(p) for p in t.parameters} == {id(p) for p in net.columns[1].parameters()}
        train_steps(t)
        assert not net.columns[0].training and net.columns[1].training
    assert all(torch.equal(first[k], v) for k, v in net.columns[0].state_dict().items())
    x, _ = batch(3)
    net.eval()
    out = net(x, 1)
    with torch.no_grad():  # without its adapters, column 1 computes something else
        net.columns[1].head_lateral.alpha.zero_()
        for adapter in net.columns[1].laterals:
            adapter.alpha.zero_()
    assert not torch.allclose(out, net(x, 1))


def test_hat_anneals_protects_used_units_and_compensates_embedding_gradients():
    options = HATOptions(s_max=50.0)
    net = HAT([3, 3], options, channels=4, blocks=2, seed=0)
    with net.task(0, 5) as t:
        assert t.s == pytest.approx(1 / 50)  # batch 1 of 5: the softest gate
        t.batch = 4
        assert t.s == pytest.approx(50.0)  # the last batch of an epoch
        t.mode(False)
        assert t.s == 50.0
        t.mode(True)
        t.batch = 0
        train_steps(t)
    used = net.gates(0, 50.0)
    assert torch.equal(net.used, used) and net.used.max() <= 1
    net.used.copy_((net.used > 0.5).float())  # crisp attention: units either used or free
    before = [c.weight.detach().clone() for c in net.convs]
    held = [net.used[0][:, None] if i == 0 else torch.minimum(net.used[i][:, None],
                                                              net.used[i - 1][None, :])
            for i in range(len(net.convs))]
    with net.task(1, 5) as t:
        x, y = batch(3)
        t.backward(t.loss(t.forward(x), y))
        for i, conv in enumerate(net.convs):
            grad = conv.weight.grad.abs().sum((2, 3))
            assert torch.all(grad[held[i].expand_as(grad) == 1] == 0), i  # eq. (3)
            assert grad[held[i].expand_as(grad) == 0].sum() > 0
        e, s = net.embeddings[1], t.s  # s = 1/s_max: the first batch of an epoch
        raw = torch.autograd.grad(t.loss(t.forward(x), y), e)[0]
        factor = 50.0 / s * (torch.cosh(s * e) + 1) / (torch.cosh(e) + 1)
        # eq. (4), in float32: one backward pass each side, the factor's cosh ratios rounded
        # at a relative 1e-7 each; rtol 1e-4 is far above that and far below a wrong factor.
        assert torch.allclose(e.grad, raw * factor, rtol=1e-4)
        optimizer = torch.optim.SGD(t.parameters, lr=10.0)
        optimizer.step()
        t.stepped()
        assert e.abs().max() <= options.clamp and t.batch == 1
    for conv, w, h in zip(net.convs, before, held, strict=True):
        kept = h.expand(conv.out_channels, conv.in_channels) == 1
        assert kept.any() and torch.equal(conv.weight[kept], w[kept])


def test_dry_run_prints_an_upper_bound_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(TINY + ["--dry-run", "--threads", "1", "--out", str(tmp_path / "run")]) == 0
    assert list(tmp_path.iterdir()) == []
    text = capsys.readouterr().out
    assert "SGD steps (at most) per run" in text and "upper bounds" in text
    assert {line.split()[0] for line in text.splitlines()[2:] if line.strip()} >= {
        "leap", "finetune", "scratch", "all"}
