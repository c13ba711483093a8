"""The transfer protocol, run folders, resume, reports and the CLI, on tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omniglot_tree import make_tree
from safetensors import safe_open

from metaleap.cli import main
from metaleap.metalearners import METHODS
from metaleap.protocols.transfer import (
    ConfigError,
    TransferStudy,
    make_split,
    resolve_config,
)
from metaleap.runs import OFFSET, RunDir, RunError, load_initialization, read_metrics
from metaleap.tasks.base import Task

ALL = "methods=" + ",".join(METHODS)


class Synthetic:
    """A fast TaskSet: each task's classes are noisy copies of random prototypes."""

    def __init__(self, n: int = 8) -> None:
        self.names = [f"task{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.names)

    def task(self, index: int, seed: int, ways: int = 20, train_per_class: int = 15,
             test_per_class: int = 5) -> Task:
        g = torch.Generator().manual_seed(1000 * seed + index)
        protos = torch.rand(ways, 1, 28, 28, generator=g)

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(ways).repeat_interleave(n)
            return (protos[y] + 0.3 * torch.rand(len(y), 1, 28, 28, generator=g)).clamp(0, 1), y

        return Task(self.names[index], ways, *draw(train_per_class), *draw(test_per_class))


def run_study(path: Path, overrides: list[str], **kwargs) -> dict:
    cfg = resolve_config("tiny", overrides)
    with RunDir(path, cfg.to_dict(), **kwargs) as run:
        return TransferStudy(cfg, taskset=Synthetic(), progress=False).run(run)


# ---------------------------------------------------------------- configuration


def test_presets_and_overrides_resolve():
    paper = resolve_config("omniglot-paper")
    assert (paper.num_pretrain, paper.meta_batch, paper.inner_steps, paper.inner_lr,
            paper.meta_lr, paper.meta_steps, paper.eval_steps, len(paper.seeds)) == (
        20, 20, 100, 0.1, 0.1, 1000, 100, 10)
    assert paper.for_method("maml").inner_steps == 5
    assert paper.for_method("fomaml").meta_lr == 0.5
    cfg = resolve_config("tiny", ["seeds=3,4", "augment=false", "reptile.meta_lr=0.3",
                                  "meta_steps=7"])
    assert cfg.seeds == [3, 4] and cfg.augment is False and cfg.meta_steps == 7
    assert cfg.for_method("reptile").meta_lr == 0.3 and cfg.for_method("leap").meta_lr == 0.1


@pytest.mark.parametrize("override,message", [
    ("nonsense=1", "unknown key"), ("meta_steps=ten", "expected int"),
    ("magic.meta_lr=1", "unknown method"), ("leap.ways=3", "may override"),
    ("meta_steps", "key=value"), ("augment=maybe", "expected bool")])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("tiny", [override])


def test_heldout_fixed_per_seed_and_pretraining_nested_in_n():
    tasks = Synthetic(30)
    splits = {n: make_split(resolve_config("omniglot-paper", [f"num_pretrain={n}"]), tasks, 0)
              for n in (1, 5, 15)}
    assert splits[1].heldout == splits[5].heldout == splits[15].heldout
    assert splits[1].val == splits[15].val
    assert splits[15].pretrain[:5] == splits[5].pretrain
    s = splits[15]
    assert len(set(s.heldout) | set(s.val) | set(s.pretrain)) == 10 + 5 + 15
    assert make_split(resolve_config("omniglot-paper", ["num_pretrain=1"]), tasks,
                      1).heldout != s.heldout
    with pytest.raises(ConfigError, match="need 36 alphabets, but the data has 30"):
        make_split(resolve_config("omniglot-paper", ["num_pretrain=21"]), tasks, 0)


# ---------------------------------------------------------------- end to end


def test_every_method_runs_and_writes_the_documented_results(tmp_path: Path):
    results = run_study(tmp_path / "run", [ALL])
    assert sorted(results) == sorted(f"seed0-{m}" for m in METHODS)
    for r in results.values():
        assert len(r["error_auc"]) == len(r["test_error"]) == 2
        assert all(0 <= v <= 1 for v in r["error_auc"] + r["test_error"])
        assert all(len(c) == 3 + 1 for c in r["train_error_curves"])
    records = read_metrics(tmp_path / "run")
    steps = [r for r in records if r["event"] == "meta_step"]
    assert len(steps) == 2 * (len(METHODS) - 1)  # scratch does not meta-train
    assert {r["step"] for r in records if r["event"] == "validation"} == {0, 1, 2}
    model = load_initialization(tmp_path / "run" / "init" / "seed0-leap.safetensors")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 5)


def test_methods_share_initial_weights_and_data(tmp_path: Path):
    """Every method starts from the same θ⁰: scratch's curve equals a 0-meta-step Leap's."""
    results = run_study(tmp_path / "run", ["methods=leap,scratch", "meta_steps=0"])
    assert results["seed0-leap"]["error_auc"] == results["seed0-scratch"]["error_auc"]
    assert results["seed0-leap"]["test_error"] == results["seed0-scratch"]["test_error"]


KILLER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads({threads})  # the same as the uninterrupted run
    sys.path.insert(0, {tests!r})
    from test_transfer import Synthetic
    from metaleap.protocols.transfer import TransferStudy, resolve_config
    from metaleap.runs import RunDir

    class Killed(RunDir):
        def log(self, record):
            super().log(record)
            self.records = getattr(self, "records", 0) + 1
            if self.records == {kill_at}:
                os._exit(137)  # like kill -9: no cleanup, no flush beyond what was written

    cfg = resolve_config("tiny", {overrides!r})
    run = Killed({path!r}, cfg.to_dict())
    TransferStudy(cfg, taskset=Synthetic(), progress=False).run(run)
""")


@pytest.mark.parametrize("kill_at", [4, 9])
def test_resume_after_kill_is_bit_identical(tmp_path: Path, kill_at: int):
    overrides = ["methods=leap,finetune", "meta_steps=4", "checkpoint_every=2", "eval_every=3"]
    run_study(tmp_path / "straight", overrides)
    code = KILLER.format(tests=str(Path(__file__).parent), threads=torch.get_num_threads(),
                         kill_at=kill_at,
                         overrides=overrides, path=str(tmp_path / "killed"))
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 137, child.stderr
    assert not (tmp_path / "killed" / "results" / "seed0-finetune.json").exists()
    run_study(tmp_path / "killed", overrides, resume=True)
    for rel in ["metrics.jsonl", "results/seed0-leap.json", "results/seed0-finetune.json",
                "init/seed0-leap.safetensors", "init/seed0-finetune.safetensors"]:
        assert content(tmp_path / "straight" / rel) == content(tmp_path / "killed" / rel), rel


def content(path: Path) -> object:
    """What a run file says, less wall times and log offsets (which may differ)."""
    if path.suffix == ".safetensors":  # its header order is not stable across processes
        with safe_open(str(path), framework="pt") as f:
            return f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()}  # noqa: SIM118
    if path.suffix == ".jsonl":
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", OFFSET)}
                for line in path.read_text().splitlines()]
    return {k: v for k, v in json.loads(path.read_text()).items() if k != OFFSET}


def test_existing_folder_is_never_overwritten(tmp_path: Path):
    run_study(tmp_path / "run", ["methods=scratch"])
    before = (tmp_path / "run" / "results" / "seed0-scratch.json").read_bytes()
    with pytest.raises(RunError, match="--resume"):
        run_study(tmp_path / "run", ["methods=scratch"])
    with pytest.raises(RunError, match="differs in"):
        run_study(tmp_path / "run", ["methods=scratch", "seeds=1"], resume=True)
    assert (tmp_path / "run" / "results" / "seed0-scratch.json").read_bytes() == before
    run_study(tmp_path / "run", ["methods=scratch", "seeds=1"], overwrite=True)
    assert not (tmp_path / "run" / "results" / "seed0-scratch.json").exists()


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def omniglot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("omniglot")
    make_tree(root, {"images_background": {f"A{i}": 20 for i in range(3)},
                     "images_evaluation": {f"B{i}": 20 for i in range(3)}})
    return root


def test_cli_transfer_report_and_sweep(tmp_path: Path, omniglot: Path, capsys):
    data = f"omniglot:{omniglot}"
    out = tmp_path / "run"
    assert main(["transfer", "--preset", "tiny", "--data", data, "--out", str(out),
                 "--no-progress", "--set", "methods=leap,reptile,scratch"]) == 0
    assert "| Leap |" in capsys.readouterr().out
    for name in ("config.json", "metrics.jsonl", "results.json", "report.md",
                 "heldout_curves.png", "meta_training.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "results.json").read_text())
    assert summary["schema"] == 1 and summary["config"]["data"] == data
    leap = summary["methods"]["leap"]
    assert set(leap) >= {"error_auc", "loss_auc", "test_error", "curve", "seeds", "tasks"}
    assert set(leap["error_auc"]) == {"mean", "std_seeds", "std_tasks", "per_seed"}
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()

    sweep = tmp_path / "sweep"
    assert main(["sweep", "--preset", "tiny", "--data", data, "--ns", "1,2", "--out",
                 str(sweep), "--no-progress"]) == 0
    assert (sweep / "auc_vs_n.png").is_file() and (sweep / "n-2" / "results.json").is_file()
    assert "N = 1 | N = 2" in (sweep / "report.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--set", "methods=leap,magic"], "unknown method"),
    (["--set", "num_pretrain=9"], "need 12 alphabets, but the data has 6"),
    (["--data", "omniglot:/nonexistent/omniglot"], "/nonexistent/omniglot"),
    (["--data", "mnist"], "unknown data"),
])
def test_cli_bad_input_fails_fast_with_one_line(tmp_path: Path, omniglot: Path, capsys,
                                                 args, message):
    argv = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}",
            "--out", str(tmp_path / "run"), "--no-progress", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaleap: error:") and message in err and "\n" not in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_refuses_existing_folder(tmp_path: Path, omniglot: Path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    assert main(["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_cli_data_glyphs_list_and_preview(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("METALEAP_CACHE", str(tmp_path / "cache"))
    sheet = tmp_path / "sheet.png"
    assert main(["data", "glyphs", "--fonts", "matplotlib", "--list", "--preview",
                 str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "Greek" in out and "Latin" in out and str(sheet) in out
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
