"""The transfer protocol, run folders, resume, reports and the CLI, on tiny budgets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from metaleap import methods
from metaleap.cli import main
from metaleap.metalearners import SupervisedMetaStep, TaskStream
from metaleap.protocols import evaluation
from metaleap.protocols.base import RunContext
from metaleap.protocols.config import ConfigError
from metaleap.protocols.reporting import write_report
from metaleap.protocols.trainer import run_study as run_protocol
from metaleap.protocols.transfer import TransferConfig, TransferStudy, make_split, resolve_config
from metaleap.runs import OFFSET, RunDir, RunError, load_initialization, read_metrics
from metaleap.shared import ONE_PROCESS
from metaleap.tasks.base import Task

METHODS = TransferConfig.supported()
ALL = "methods=" + ",".join(METHODS)


class Synthetic:
    """A fast TaskSet: each task's classes are noisy copies of random prototypes.

    Task 0 has ``smallest`` classes at most (like a small alphabet); the others have 30.
    """

    def __init__(self, n: int = 8, smallest: int = 30) -> None:
        self.names = [f"task{i}" for i in range(n)]
        self.smallest = smallest

    def __len__(self) -> int:
        return len(self.names)

    def identity(self) -> dict:
        return {"kind": "synthetic", "alphabets": self.names, "smallest": self.smallest}

    def task(self, index: int, seed: int, ways: int = 20, train_per_class: int = 15,
             test_per_class: int = 5) -> Task:
        if ways > (self.smallest if index == 0 else 30):
            raise ValueError(f"{self.names[index]} has fewer than ways={ways} classes")
        g = torch.Generator().manual_seed(1000 * seed + index)
        protos = torch.rand(ways, 1, 28, 28, generator=g)

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(ways).repeat_interleave(n)
            return (protos[y] + 0.3 * torch.rand(len(y), 1, 28, 28, generator=g)).clamp(0, 1), y

        return Task(self.names[index], ways, *draw(train_per_class), *draw(test_per_class))


def run_study(path: Path, overrides: list[str], taskset: Synthetic | None = None,
              **kwargs) -> dict:
    cfg = resolve_config("tiny", overrides)
    study = TransferStudy(cfg, taskset=taskset or Synthetic())
    with RunDir(path, study.config_record(), study.data_identity(), **kwargs) as run:
        return run_protocol(study, run, progress=False)


# ---------------------------------------------------------------- configuration


def test_presets_and_overrides_resolve():
    paper = resolve_config("omniglot-paper")
    assert (paper.num_pretrain, paper.meta_batch, paper.inner_steps, paper.inner_lr,
            paper.options("leap").meta_lr, paper.meta_steps, paper.eval_steps,
            len(paper.seeds)) == (20, 20, 100, 0.1, 0.1, 1000, 100, 10)
    assert paper.for_method("maml").inner_steps == 5
    assert paper.options("fomaml").meta_lr == 0.5
    leap = paper.options("leap")
    assert (leap.metric, leap.loss_term, leap.stabilizer) == ("length", True, True)
    scale = resolve_config("scale")  # the fidelity study: the paper's meta-batch and horizon
    assert (scale.data, scale.image_size, scale.num_pretrain, scale.meta_batch, scale.inner_steps,
            scale.meta_steps, scale.heldout_at, scale.block_order) == (
        "glyphs:v2", 16, 20, 20, 100, 200, [12, 48, 100], "pool-bn-relu")
    cfg = resolve_config("tiny", ["seeds=3,4", "augment=false", "reptile.meta_lr=0.3",
                                  "meta_steps=7", "leap.metric=energy", "leap.inner_steps=9"])
    assert cfg.seeds == [3, 4] and cfg.augment is False and cfg.meta_steps == 7
    assert cfg.options("reptile").meta_lr == 0.3 and cfg.options("leap").meta_lr == 0.1
    assert cfg.options("leap").metric == "energy"
    assert cfg.for_method("leap").inner_steps == 9 and cfg.for_method("reptile").inner_steps == 3


@pytest.mark.parametrize("override,message", [
    ("nonsense=1", "unknown key"), ("meta_steps=ten", "expected int"),
    ("magic.meta_lr=1", "unknown method"), ("leap.ways=3", "may override"),
    ("meta_steps", "key=value"), ("augment=maybe", "expected bool"),
    # every value is checked, globally and per method, before any work
    ("leap.meta_steps=-1", "leap: meta_steps must be at least 0, got -1"),
    ("maml.inner_steps=0", "maml: inner_steps must be at least 1, got 0"),
    ("leap.meta_batch=0", "leap: meta_batch must be at least 1, got 0"),
    ("image_size=8", "image_size must be at least 16, got 8"),
    ("eval_lr=-5", "eval_lr must be a positive number, got -5"),
    ("inner_lr=nan", "leap: inner_lr must be a positive number, got nan"),
    ("leap.meta_lr=0", "leap: meta_lr must be a positive number"),
    ("leap.metric=area", "leap: metric must be 'length' or 'energy'"),
    ("leap.loss_term=false", "leap: stabilizer needs loss_term"),
    ("ways=1", "ways must be at least 2"), ("methods=leap,leap", "must not repeat"),
    ("checkpoint_every=0", "checkpoint_every must be at least 1")])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config("tiny", [override, "methods=leap,maml"]
                       if not override.startswith("methods") else [override])


def test_ways_beyond_the_smallest_alphabet_is_refused_before_any_work():
    cfg = resolve_config("tiny", ["ways=12"])
    with pytest.raises(ConfigError, match="task0: task0 has fewer than ways=12 classes"):
        TransferStudy(cfg, taskset=Synthetic(n=5, smallest=10))  # every task is used


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
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)  # BatchNorm on 1×1 maps needs 2


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
    from metaleap.protocols.trainer import run_study
    from metaleap.protocols.transfer import TransferStudy, resolve_config
    from metaleap.runs import RunDir

    class Killed(RunDir):
        def log(self, record):
            super().log(record)
            self.records = getattr(self, "records", 0) + 1
            if self.records == {kill_at}:
                os._exit(137)  # like kill -9: no cleanup, no flush beyond what was written

    study = TransferStudy(resolve_config("tiny", {overrides!r}), taskset=Synthetic())
    run = Killed({path!r}, study.config_record(), study.data_identity())
    run_study(study, run, progress=False)
""")


@pytest.mark.parametrize("kill_at", [4, 9])
def test_resume_after_kill_is_bit_identical(tmp_path: Path, kill_at: int):
    overrides = ["methods=leap,finetune", "meta_steps=4", "checkpoint_every=2", "eval_every=3",
                 "heldout_at=1,3"]  # held-out evaluations on both sides of a checkpoint
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


def test_a_run_whose_every_task_was_dropped_warns_and_its_report_says_so_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """inner lr 1e30 makes every pretraining loss non-finite: each meta-step warns in one line
    as it happens, and results.json and the report's first lines say θ⁰ never moved; a
    healthy run reports every meta-step as moving θ⁰."""
    run_study(tmp_path / "bad", ["methods=leap,scratch", "meta_steps=3", "inner_lr=1e30"])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "dropped" in line]
    assert [w.split(":")[1] for w in warnings] == [f" leap seed 0, meta-step {s}"
                                                    for s in (1, 2, 3)]
    lines = write_report(tmp_path / "bad").read_text().splitlines()
    summary = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert summary["meta_training"] == {"leap": {"meta_steps": 3, "moved": 0,
                                                 "tasks_dropped": 6}}
    assert lines[2].startswith("**θ⁰ never moved for leap: all 6 tasks of its 3 meta-steps")
    run_study(tmp_path / "good", ["methods=leap,scratch", "meta_steps=3"])
    assert "dropped" not in capsys.readouterr().err
    lines = write_report(tmp_path / "good").read_text().splitlines()
    assert lines[2] == "Meta-training: leap moved θ⁰ in 3 of 3 meta-steps, 0 tasks dropped."


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


def test_every_method_sees_the_same_meta_batches_and_evaluation_data(monkeypatch):
    """Each meta-step hands every method the same tasks and the same (augmented) batches,
    finetuning taking them round-robin and MAML, with fewer inner steps, a prefix of each;
    the held-out tasks of every method, scratch included, train on the same batches."""
    meta: dict[str, list[dict[int, list]]] = {}
    heldout: dict[str, list] = {}
    evaluating: list[str] = []

    def key(x: torch.Tensor, y: torch.Tensor) -> tuple[int, list[int]]:
        return hash(x.numpy().tobytes()), y.tolist()  # the exact images, readably

    def recorded(task: TaskStream, seen: list) -> Iterator:
        for x, y in task.batches:
            seen.append(key(x, y))
            yield x, y

    step = SupervisedMetaStep.__call__
    names = {m.load(): m.name for m in methods.METHODS.values()}

    def recording_step(self, tasks, processes=ONE_PROCESS):
        seen: dict[int, list] = {t.index: [] for t in tasks}
        meta.setdefault(names[type(self.learner)], []).append(seen)
        return step(self, [TaskStream(t.index, recorded(t, seen[t.index])) for t in tasks],
                    processes)

    draw = evaluation.batches

    def recording_batches(*args, **kwargs):
        for x, y in draw(*args, **kwargs):
            heldout[evaluating[-1]].append(key(x, y))
            yield x, y

    monkeypatch.setattr(SupervisedMetaStep, "__call__", recording_step)
    monkeypatch.setattr(evaluation, "batches", recording_batches)
    cfg = resolve_config("tiny", [ALL, "inner_steps=2", "maml.inner_steps=1", "num_pretrain=3",
                                  "num_heldout=1"])
    study = TransferStudy(cfg, taskset=Synthetic())
    for run in study.runs():
        for i in range(run.meta_steps if run.method != "scratch" else 0):
            run.meta_step(i, RunContext())
        evaluating.append(run.method)
        heldout[run.method] = []
        run.evaluate(run.learner.initialization(), RunContext())

    reference = meta["leap"]
    assert sorted(meta) == sorted(set(METHODS) - {"scratch"})
    assert len(reference) == cfg.meta_steps
    assert all(len(seen) == 2 and all(len(b) == cfg.inner_steps + 1 for b in seen.values())
               for seen in reference)
    assert reference[0] != reference[1]  # the meta-batches do move on
    for method, steps in meta.items():
        keep = 1 + 1 if method == "maml" else cfg.inner_steps + 1
        assert steps == [{i: b[:keep] for i, b in seen.items()} for seen in reference], method
    assert len(heldout["leap"]) == cfg.num_heldout * (cfg.eval_steps + 1)
    assert all(batches == heldout["leap"] for batches in heldout.values())


# ---------------------------------------------------------------- the command line


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
    assert summary["schema"] == 4 and summary["protocol"] == "transfer"
    assert summary["config"]["data"] == data
    assert summary["methods_config"]["leap"]["metric"] == "length"
    data_id = summary["provenance"]["data"]
    assert data_id["kind"] == "omniglot" and len(data_id["files_sha256"]) == 64
    assert data_id["alphabets"] == ["A0", "A1", "A2", "B0", "B1", "B2"]
    session = summary["provenance"]["sessions"][0]
    assert session["device"] == "cpu" and session["torch"] == torch.__version__
    leap = summary["methods"]["leap"]
    assert set(leap) >= {"error_auc", "loss_auc", "test_error", "path_length", "curve", "seeds",
                         "tasks"}
    assert set(leap["error_auc"]) == {"mean", "std_seeds", "std_tasks", "per_seed", "ci"}
    assert "vs_leap" not in leap
    assert set(summary["methods"]["reptile"]["vs_leap"]) == {"error_auc", "loss_auc",
                                                             "test_error", "path_length"}
    report = (out / "report.md").read_text()
    assert "| Reptile |" in report and "**Paired differences from Leap**" in report
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()

    sweep = tmp_path / "sweep"
    assert main(["sweep", "--preset", "tiny", "--data", data, "--ns", "1,2", "--out",
                 str(sweep), "--no-progress"]) == 0
    assert (sweep / "auc_vs_n.png").is_file() and (sweep / "n-2" / "results.json").is_file()
    text = (sweep / "report.md").read_text()
    assert "## N = 1" in text and "## N = 2" in text and "| Leap |" in text
    points = json.loads((sweep / "sweep.json").read_text())
    assert set(points["leap"]) == {"1", "2"} and "vs_leap" in points["scratch"]["2"]


def test_cli_demo_ends_with_the_sentences_its_numbers_support(tmp_path: Path, omniglot: Path,
                                                             capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--out", str(out),
                 "--no-progress", "--set", "methods=leap,finetune,scratch"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (out / "report.md").read_text().strip().splitlines()[-1]
    learns = r"Leap (learns|shows no difference in how fast it learns) the held-out tasks"
    assert re.fullmatch(rf"{learns} .* from no pretraining .*\. {learns} .* from finetuning .*\.",
                        last)


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


@pytest.mark.parametrize("args,message", [
    (["--set", "leap.meta_steps=-1"], "leap: meta_steps must be at least 0, got -1"),
    (["--set", "image_size=8"], "image_size must be at least 16"),
    (["--set", "inner_lr=nan"], "inner_lr must be a positive number, got nan"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "tpu"], "device"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--resume", "--overwrite"], "choose one of --resume and --overwrite"),
])
def test_cli_impossible_settings_fail_before_anything_is_written(tmp_path: Path, omniglot: Path,
                                                                 capsys, args, message):
    argv = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}",
            "--out", str(tmp_path / "run"), "--no-progress", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaleap: error:") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_cli_sweep_checks_every_n_and_its_flags_before_training(tmp_path: Path, omniglot: Path,
                                                                capsys):
    base = ["sweep", "--preset", "tiny", "--data", f"omniglot:{omniglot}",
            "--out", str(tmp_path / "sweep"), "--no-progress"]
    for extra, message in [(["--ns", "1,9"], "need 12 alphabets, but the data has 6"),
                           (["--ns", "1,2", "--set", "num_pretrain=3"], "do not --set it"),
                           (["--ns", "1,x"], "--ns expects integers"),
                           (["--ns", "1", "--resume", "--overwrite"], "choose one of")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "sweep").exists()  # N = 1 was not trained


def test_cli_unexpected_error_leaves_a_resumable_run(tmp_path: Path, omniglot: Path, capsys,
                                                     monkeypatch):
    argv = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--no-progress",
            "--set", "methods=leap,reptile", "--set", "meta_steps=3"]
    assert main(argv + ["--out", str(tmp_path / "straight")]) == 0
    from metaleap.protocols.transfer import TransferRun

    original = TransferRun.meta_step

    def failing(self, step, context):  # reptile's third meta-step hits a bug
        if self.method == "reptile" and step == 2:
            raise ZeroDivisionError("a bug")
        return original(self, step, context)

    monkeypatch.setattr(TransferRun, "meta_step", failing)
    assert main(argv + ["--out", str(tmp_path / "broken")]) == 1
    assert "rerun with --resume" in capsys.readouterr().err
    monkeypatch.setattr(TransferRun, "meta_step", original)
    assert main(argv + ["--out", str(tmp_path / "broken"), "--resume"]) == 0
    for rel in ["metrics.jsonl", "results/seed0-leap.json", "results/seed0-reptile.json"]:
        assert content(tmp_path / "straight" / rel) == content(tmp_path / "broken" / rel), rel


class Pickled:
    """Not a tensor: a checkpoint holding it must be refused, never unpickled."""


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"not a checkpoint"), "truncated or corrupt"),
    (lambda p: torch.save({"step": 1, "module": Pickled()}, p), "objects other than tensors"),
    (lambda p: torch.save({"weights": torch.zeros(3)}, p), "is not a metaleap checkpoint"),
])
def test_bad_checkpoint_is_refused_in_one_line_naming_the_file(tmp_path: Path, corrupt, message):
    overrides = ["methods=leap", "meta_steps=3", "checkpoint_every=1"]
    with pytest.raises(ZeroDivisionError):  # stop after the first checkpoint
        cfg = resolve_config("tiny", overrides)
        study = TransferStudy(cfg, taskset=Synthetic())
        with RunDir(tmp_path / "run", study.config_record(), study.data_identity()) as run:
            run.save_state = _then_fail(run.save_state)  # type: ignore[method-assign]
            run_protocol(study, run, progress=False)
    checkpoint = tmp_path / "run" / "checkpoints" / "seed0-leap.pt"
    corrupt(checkpoint)
    with pytest.raises(RunError, match=message) as info:
        run_study(tmp_path / "run", overrides, resume=True)
    assert str(checkpoint) in str(info.value) and "delete it" in str(info.value)
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_method_is_refused(tmp_path: Path):
    from metaleap.protocols.base import CheckpointError

    overrides = ["methods=leap", "meta_steps=3", "checkpoint_every=1"]
    with pytest.raises(ZeroDivisionError):
        study = TransferStudy(resolve_config("tiny", overrides), taskset=Synthetic())
        with RunDir(tmp_path / "run", study.config_record(), study.data_identity()) as run:
            run.save_state = _then_fail(run.save_state)  # type: ignore[method-assign]
            run_protocol(study, run, progress=False)
    path = tmp_path / "run" / "checkpoints" / "seed0-leap.pt"
    state = torch.load(path, weights_only=True)
    state["module"] = {"theta.x": torch.zeros(2)}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checkpoints/seed0-leap.pt does not fit leap"):
        run_study(tmp_path / "run", overrides, resume=True)


def test_run_folder_records_the_code_and_names_no_machine_path(tmp_path: Path, omniglot: Path,
                                                                monkeypatch, capsys):
    """provenance.json records the git commit and whether the tree was dirty; a data path
    under the home folder is written as ~/…, and resuming with the absolute path still fits."""
    monkeypatch.setenv("HOME", str(omniglot.parent))
    out = tmp_path / "run"
    args = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--out", str(out),
            "--no-progress", "--set", "methods=scratch"]
    assert main(args) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["data"] == f"omniglot:~/{omniglot.name}"
    for path in out.rglob("*"):
        if path.suffix in (".json", ".jsonl", ".md"):
            assert str(omniglot.parent) not in path.read_text(), path
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    session = json.loads((out / "provenance.json").read_text())["sessions"][0]
    assert session["code"]["commit"] == head and isinstance(session["code"]["dirty"], bool)
    assert main(args + ["--resume"]) == 0, capsys.readouterr().err


def _then_fail(save):
    def wrapped(key, state):
        save(key, state)
        raise ZeroDivisionError("stop")
    return wrapped


def test_resume_on_other_data_is_refused_and_sessions_are_recorded(tmp_path: Path):
    run_study(tmp_path / "run", ["methods=scratch"])
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["data"] == Synthetic().identity() and len(provenance["sessions"]) == 1
    with pytest.raises(RunError, match="ran on other data .*differs in alphabets"):
        run_study(tmp_path / "run", ["methods=scratch"], taskset=Synthetic(n=9), resume=True)
    run_study(tmp_path / "run", ["methods=scratch"], resume=True)
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert len(provenance["sessions"]) == 2


def test_resume_under_other_threads_or_processes_says_so_and_records_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A resumed session whose threads, processes or CPU kernels differ from the first
    session's says so in one line and records what changed; the same setting, nothing."""
    first = {"device": "cpu", "threads": 1, "processes": 1, "cpu_capability": "AVX512"}
    RunDir(tmp_path / "run", {"config": {}}, {"kind": "x"}, environment=first).close()
    RunDir(tmp_path / "run", {"config": {}}, {"kind": "x"}, environment=first,
           resume=True).close()
    assert "resuming" not in capsys.readouterr().err
    now = {**first, "threads": 2, "processes": 2, "cpu_capability": "AVX2"}
    RunDir(tmp_path / "run", {"config": {}}, {"kind": "x"}, environment=now, resume=True).close()
    changed = ["cpu_capability AVX512 → AVX2", "threads 1 → 2", "processes 1 → 2"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and ", ".join(changed) in lines[0] and "bit for bit" in lines[0]
    sessions = json.loads((tmp_path / "run" / "provenance.json").read_text())["sessions"]
    assert ["changed" in s for s in sessions] == [False, False, True]
    assert sessions[2]["changed"] == changed


def test_report_refuses_a_folder_of_another_version(tmp_path: Path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"data": "glyphs"}))
    assert main(["report", str(tmp_path / "old")]) == 2
    assert "names no protocol" in capsys.readouterr().err


def test_cli_settings_lists_every_key_with_its_meaning(capsys):
    assert main(["settings", "--preset", "tiny", "--set", "leap.metric=energy"]) == 0
    out = capsys.readouterr().out
    assert "inner_steps = 3  # K, SGD steps" in out
    assert "leap.metric = 'energy'  # " in out and "leap.inner_steps = 3" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_study_on_cuda_matches_cpu_closely(tmp_path: Path):
    """Models, θ⁰, batches and augmentation on the GPU; the same data streams as the CPU."""
    overrides = ["methods=leap,reptile,finetune,scratch", "augment=true"]
    cpu = run_study(tmp_path / "cpu", overrides)
    cfg = resolve_config("tiny", overrides)
    study = TransferStudy(cfg, taskset=Synthetic(), device="cuda")
    with RunDir(tmp_path / "gpu", study.config_record(), study.data_identity()) as run:
        gpu = run_protocol(study, run, progress=False)
    for key in cpu:
        assert cpu[key]["tasks"] == gpu[key]["tasks"]
        torch.testing.assert_close(torch.tensor(gpu[key]["train_loss_curves"]),
                                   torch.tensor(cpu[key]["train_loss_curves"]),
                                   rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inner_steps_on_cuda_never_wait_for_the_device():
    """Batches, augmentation and Leap's observation of every step queue work without a host
    synchronisation (the only ones are once per task and per meta-step)."""
    from metaleap.metalearners import make_metalearner
    from metaleap.models import make_convnet
    from metaleap.seeding import generator
    from metaleap.tasks.augment import RandomAffine
    from metaleap.tasks.base import batches

    task = Synthetic().task(1, 0, ways=5).to("cuda")
    model = make_convnet(5, 0).cuda()
    learner = make_metalearner("leap", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = batches(task, 20, 6, generator(0, "cuda-test"), RandomAffine())
    with learner.task(model, opt) as t:
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                x, y = next(data)
                t.step(torch.nn.functional.cross_entropy(t.model(x), y))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        x, y = next(data)
        with torch.no_grad():
            t.finish(torch.nn.functional.cross_entropy(t.model(x), y))
    assert learner.meta_update()["tasks"] == 1
