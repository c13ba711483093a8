"""The reinforcement-learning protocol (docs/rl.md): A2C with Leap on the encoder."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_transfer import content

from metaleap import seeding
from metaleap.cli import main
from metaleap.metalearners import LeapLearner
from metaleap.metalearners.base import Context
from metaleap.methods import LeapOptions
from metaleap.protocols import rl
from metaleap.protocols.rl import study
from metaleap.tasks import games

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

pytest.importorskip("minatar")

TINY = ["rl", "--preset", "tiny", "--no-progress"]
STRAIGHT_FILES = ["metrics.jsonl", "results/seed0-leap.json", "results/seed0-scratch.json",
                  "init/seed0-leap.safetensors", "init/seed0-scratch.safetensors"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny MinAtar study run without interruption."""
    out = tmp_path_factory.mktemp("rl") / "straight"
    assert main(TINY + ["--out", str(out)]) == 0
    return out


def test_tiny_minatar_study_meta_trains_evaluates_and_reports(straight: Path):
    summary = json.loads((straight / "results.json").read_text())
    assert summary["protocol"] == "rl" and set(summary["methods"]) == {"leap", "scratch"}
    assert set(summary["difference"]) == {"score_auc", "final_score"}
    result = json.loads((straight / "results" / "seed0-leap.json").read_text())
    episodes = result["games"]["breakout"]
    assert episodes["steps"] == sorted(episodes["steps"]) and len(episodes["returns"]) > 0
    assert all(s <= 200 for s in episodes["steps"])  # eval_steps of the tiny preset
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    meta = [r for r in records if r["event"] == "meta_step"]
    assert [r["step"] for r in meta] == [1, 2] and all(r["tasks"] == 2.0 for r in meta)
    report = (straight / "report.md").read_text()
    assert "Paired difference, Leap − no pretraining" in report
    for png in ("heldout_scores.png", "meta_training.png"):
        assert (straight / png).stat().st_size > 0


def test_progress_bars_count_meta_steps_and_environment_steps(tmp_path: Path, capsys):
    assert main(["rl", "--preset", "tiny", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "leap seed 0: 100%" in err and "2/2 [" in err  # the meta-steps
    assert "meta-step 2: freeway" in err and "leap seed 0 held-out" in err  # env steps


def test_theta0_is_the_encoder_and_heads_are_fresh_per_game(straight: Path):
    from safetensors.torch import load_file

    init = load_file(str(straight / "init" / "seed0-leap.safetensors"))
    assert init and all(k.startswith("encoder.") for k in init)
    study = rl.RLStudy(rl.resolve_config("tiny"))
    a, b = study.agent("asterix", 0, 0), study.agent("freeway", 0, 0)
    assert a.policy.out_features == 5 and b.policy.out_features == 3  # minimal action sets
    assert torch.equal(a.encoder[0].weight, b.encoder[0].weight)  # the seed's encoder
    c = study.agent("asterix", 0, 1)
    assert not torch.equal(a.policy.weight, c.policy.weight)  # another meta-step: fresh head


@pytest.mark.parametrize("fail_at", [2, 3, 6, 10])
def test_resume_mid_game_between_games_and_in_evaluation_is_bit_identical(
        tmp_path: Path, straight: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int):
    """Segments 1–8 are Leap's meta-training (2 meta-steps × 2 games × 2 segments), 9–10 its
    held-out game: the run stops at segment ``fail_at`` and resumes from its checkpoint."""
    original, calls = study.a2c_segment, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("killed")
        return original(*args, **kwargs)

    out = tmp_path / "broken"
    monkeypatch.setattr(study, "a2c_segment", failing)
    assert main(TINY + ["--out", str(out)]) == 1
    assert (out / "checkpoints" / "seed0-leap.pt").is_file()
    monkeypatch.setattr(study, "a2c_segment", original)
    assert main(TINY + ["--out", str(out), "--resume"]) == 0
    for rel in STRAIGHT_FILES:
        assert content(straight / rel) == content(out / rel), rel


KILLER = """
import os, sys, torch
torch.set_num_threads(1)
from metaleap.cli import main
from metaleap.protocols.rl import study
original, calls = study.a2c_segment, []
def killed(*args, **kwargs):
    calls.append(1)
    if len(calls) == {kill_at}:
        os._exit(137)  # like kill -9: no cleanup
    return original(*args, **kwargs)
study.a2c_segment = killed
sys.exit(main({argv!r}))
"""


def test_resume_after_kill_minus_nine_is_bit_identical(tmp_path: Path, straight: Path):
    out = tmp_path / "killed"
    argv = TINY + ["--out", str(out)]
    child = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=5, argv=argv)],
                           capture_output=True, text=True)
    assert child.returncode == 137, child.stderr
    assert main(argv + ["--resume"]) == 0
    for rel in STRAIGHT_FILES:
        assert content(straight / rel) == content(out / rel), rel


def test_leap_meta_gradient_in_the_a2c_loop_matches_the_reference():
    """Σ_i −(Δθ + Δf·g) with Δf = −|f(θ^{i+1}) − f(θ^i)| (energy, loss term, stabilizer),
    computed by hand in float64 from the trajectory the A2C loop took."""
    cfg = rl.resolve_config("tiny")
    study = rl.RLStudy(cfg)
    agent = study.agent("asterix", 0, 0)
    learner = LeapLearner(agent, LeapOptions(metric="energy"),
                          Context(exclude=lambda n: not n.startswith("encoder.")))
    names = learner.leap.names
    optimizer = study.optimizer(agent)
    thetas, grads, losses = [], [], []

    def flat(tensors):
        return torch.cat([t.detach().reshape(-1).double() for t in tensors])

    with learner.task(agent, optimizer) as t:
        params = dict(agent.named_parameters())

        def report(loss):
            thetas.append(flat(params[n] for n in names))
            grads.append(flat(params[n].grad for n in names))
            losses.append(float(loss.detach()))
            t.report(loss)

        final = rl.a2c_segment(agent, optimizer, cfg, study.games["asterix"], 6, 1,
                               seeding.generator(0, "test"), rl.Episodes(), 0, report,
                               closing=True)
        thetas.append(flat(params[n] for n in names))
        losses.append(float(final))
        t.finish(final)
    expected = torch.zeros_like(thetas[0])
    for i in range(len(grads)):
        df = -abs(losses[i + 1] - losses[i])
        expected -= (thetas[i + 1] - thetas[i]) + df * grads[i]
    got = learner.contribution().sums["grad"].double()
    assert len(grads) == 6
    # The same recorded float32 trajectory on both sides (no retraining to amplify rounding):
    # Leap's float32 accumulation of 6 increments rounds at a relative few 1e-7; rtol 1e-5
    # leaves a margin of ten, while a wrong sign or term is off by O(1).
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_the_game_in_one_line():
    from metaleap.protocols.base import DivergedError

    study = rl.RLStudy(rl.resolve_config("tiny"))
    agent = study.agent("breakout", 0, 0)
    with torch.no_grad():
        agent.value.bias.fill_(float("nan"))
    with pytest.raises(DivergedError, match="breakout is not finite at update 1"):
        rl.a2c_segment(agent, study.optimizer(agent), study.cfg, study.games["breakout"], 2, 0,
                       seeding.generator(0, "test"), rl.Episodes(), 0)


def test_moving_average_by_hand():
    steps, returns = [10, 20, 30, 40], [1.0, 3.0, 5.0, 7.0]
    assert rl.moving_average(steps, returns, [5, 20, 35, 50], window=2, before=-1.0) == [
        -1.0, 2.0, 4.0, 6.0]


def test_tiny_atari_study(tmp_path: Path):
    pytest.importorskip("ale_py")
    argv = ["rl", "--env", "atari", "--no-progress", "--out", str(tmp_path / "atari"),
            "--set", "pretrain=pong", "--set", "heldout=breakout", "--set", "num_envs=2",
            "--set", "train_steps=20", "--set", "eval_steps=20", "--set", "segment_steps=10",
            "--set", "random_steps=10", "--set", "window=2", "--set", "curve_points=2",
            "--set", "meta_batch=1"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "atari" / "results.json").read_text())
    assert summary["config"]["env"] == "atari" and set(summary["methods"]) == {"leap",
                                                                                "scratch"}
    assert (tmp_path / "atari" / "report.md").is_file()


@pytest.mark.parametrize("overrides,message", [
    (["heldout=pong"], "unknown minatar game(s) pong"),
    (["max_actions=3"], "more than max_actions = 3 actions: seaquest (6)"),
    (["methods=leap,maml"], "the RL protocol runs leap, scratch"),
    (["train_steps=10"], "less than one update"),
])
def test_bad_input_fails_in_one_line_before_any_work(tmp_path: Path, capsys, overrides,
                                                     message):
    argv = ["rl", "--out", str(tmp_path / "run")]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_dependency_names_the_install_command(tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch):
    real = importlib.metadata.version

    def version(package):
        if package == "ale-py":
            raise importlib.metadata.PackageNotFoundError(package)
        return real(package)

    monkeypatch.setattr(games.importlib.metadata, "version", version)
    assert main(["rl", "--env", "atari", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'ale-py', which is not installed" in err and "pip install" in err
    assert main(["rl", "--env", "atari", "--preset", "minatar", "--out",
                 str(tmp_path / "run")]) == 2
    assert "contradicts --preset minatar" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_summary_scores_by_hand():
    """Window 2 at steps 50 and 100; random policy 1, best moving average 6 (Leap's)."""
    cfg = {**rl.resolve_config("tiny").to_dict(), "heldout": ["g"], "eval_steps": 100,
           "curve_points": 2, "window": 2}
    record = {"protocol": "rl", "config": cfg, "methods": {}}

    def result(method, steps, returns):
        return {"method": method, "seed": 0, "games": {"g": {
            "steps": steps, "returns": returns, "random_return": 1.0}}}

    summary = rl.summarize(record, {
        "a": result("leap", [10, 40, 60, 90], [1.0, 3.0, 5.0, 7.0]),  # averages 2, then 6
        "b": result("scratch", [30, 80], [2.0, 2.0])})                   # averages 2, then 2
    assert summary["steps"] == [50, 100] and summary["best_return"] == {"g": 6.0}
    leap, scratch = summary["methods"]["leap"], summary["methods"]["scratch"]
    assert leap["score_auc"]["per_seed"]["0"] == [pytest.approx(0.6)]   # (0.2 + 1.0) / 2
    assert leap["final_score"]["per_seed"]["0"] == [pytest.approx(1.0)]
    assert leap["final_return"]["per_seed"]["0"] == [6.0]
    assert scratch["score_auc"]["per_seed"]["0"] == [pytest.approx(0.2)]
    assert leap["curves"]["g"]["mean"] == [pytest.approx(0.2), pytest.approx(1.0)]
    assert summary["difference"]["score_auc"]["mean"] == pytest.approx(0.4)
    assert summary["difference"]["final_score"]["mean"] == pytest.approx(0.8)


def test_dry_run_prices_environment_steps_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["rl", "--preset", "tiny", "--dry-run", "--threads", "1",
                 "--out", str(tmp_path / "run")]) == 0
    assert list(tmp_path.iterdir()) == []
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip()}
    # tiny: 2 meta-steps × 2 games × 200 steps, and 1 held-out game × 200 steps
    assert rows["leap"][1] == "1,000" and rows["scratch"][1] == "200"
