"""Distributed meta-training: torchrun with 2 gloo processes against 1, restarts, one writer."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metaleap import Contribution
from metaleap.cli import main
from metaleap.shared import Processes

# 3 pretraining tasks over 2 processes (one rank gets one task fewer), every method
STUDY = ["transfer", "--preset", "tiny", "--no-progress", "--threads", "1", "--timeout", "60",
         "--set", "methods=leap,reptile,fomaml,maml,finetune,scratch", "--set", "num_pretrain=3",
         "--set", "meta_batch=3", "--set", "meta_steps=3", "--set", "checkpoint_every=1"]


def torchrun(args: list[str], restarts: int = 0, env: dict[str, str] | None = None,
             procs: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2`` (a loopback rendezvous) on ``args``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs), f"--max-restarts={restarts}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def inits(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted((run / "init").glob("*.safetensors"))}


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_study(one: Path, two: Path) -> None:
    """Bit for bit the same θ⁰, results and log: the meta-batch sums are kept in float64, so
    the 2 + 1 split of three tasks adds up to what one process gives."""
    a, b = inits(one), inits(two)
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    for method in ("leap", "reptile", "fomaml", "maml", "finetune", "scratch"):
        ra = json.loads((one / "results" / f"seed0-{method}.json").read_text())
        rb = json.loads((two / "results" / f"seed0-{method}.json").read_text())
        for key in ("tasks", "test_error", "train_error_curves", "train_loss_curves"):
            assert ra[key] == rb[key], (method, key)
    ra, rb = records(one), records(two)  # rank 1 wrote nothing: no record twice
    assert [(r["event"], r["method"], r["step"]) for r in ra] == [
        (r["event"], r["method"], r["step"]) for r in rb]


def test_two_processes_give_the_single_process_study(tmp_path: Path, omniglot: Path):
    data = ["--data", f"omniglot:{omniglot}"]
    assert main(STUDY + data + ["--out", str(tmp_path / "one")]) == 0
    child = torchrun(["-m", "metaleap", *STUDY, *data, "--out", str(tmp_path / "two")])
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.count("| Leap |") == 1  # rank 0 alone prints
    assert_same_study(tmp_path / "one", tmp_path / "two")
    sessions = json.loads((tmp_path / "two" / "provenance.json").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["threads"] == 1


KILLED = textwrap.dedent("""
    import os, sys
    from metaleap.cli import main
    from metaleap.protocols.transfer import TransferRun

    original = TransferRun.meta_step

    def meta_step(self, step, context):  # rank 1 dies in Reptile's third meta-step, on the
        if (self.method == "reptile" and step == 2 and os.environ["RANK"] == "1"  # first try
                and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"):
            os._exit(137)
        return original(self, step, context)

    TransferRun.meta_step = meta_step
    sys.exit(main(sys.argv[1:]))
""")


def test_a_killed_worker_restarts_and_finishes_as_if_uninterrupted(tmp_path: Path,
                                                                   omniglot: Path):
    data = ["--data", f"omniglot:{omniglot}"]
    assert main(STUDY + data + ["--out", str(tmp_path / "one")]) == 0
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    child = torchrun([str(script), *STUDY, *data, "--out", str(tmp_path / "two")], restarts=1)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "failed (exitcode" in child.stderr  # the first group failed (rank 1 killed)
    assert_same_study(tmp_path / "one", tmp_path / "two")
    sessions = json.loads((tmp_path / "two" / "provenance.json").read_text())["sessions"]
    assert len(sessions) == 2  # the restarted group resumed the same folder


def test_a_failing_rank_reports_its_error_and_nothing_hangs(tmp_path: Path, omniglot: Path):
    child = torchrun(["-m", "metaleap", *STUDY, "--data", f"omniglot:{omniglot}/missing",
                      "--out", str(tmp_path / "run")])
    assert child.returncode != 0
    assert "metaleap: error (rank 0):" in child.stderr and "does not exist" in child.stderr
    assert not (tmp_path / "run").exists()


def test_reduce_flattens_every_entry_into_one_all_reduce():
    calls = []

    def all_sum(t: torch.Tensor) -> torch.Tensor:  # two identical processes
        calls.append(t.shape)
        return 2 * t

    local = Contribution({"grad": torch.tensor([1.0, 2.0], dtype=torch.float32),
                          "tasks": torch.tensor(3), "path": torch.tensor(0.5,
                                                                         dtype=torch.float64)})
    total = Processes(rank=0, world=2, all_sum=all_sum).reduce(local)
    assert calls == [torch.Size([4])]
    assert total.sums["grad"].dtype == torch.float32 and total.sums["grad"].tolist() == [2, 4]
    assert total.count("tasks") == 6 and total.sums["path"].item() == 1.0
    blocks = [Processes(rank=r, world=3).share(list(range(7))) for r in range(3)]
    assert blocks == [[0, 1, 2], [3, 4], [5, 6]]
    assert Processes(rank=2, world=3).share([0, 1]) == []  # a rank may hold no task


# ---------------------------------------------------------------- every protocol's tiny preset
RUN = ["--no-progress", "--threads", "1", "--timeout", "60"]
MULTICV = ["multicv", "--preset", "tiny", *RUN]
RL = ["rl", "--preset", "tiny", *RUN]


def numbers(value: object, path: str = "") -> dict[str, object]:
    """Every leaf of a results.json by its path, the provenance (times, code state) left out."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key != "provenance"
                for k, v in numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}[{i}]")
                .items()}
    return {path: value}


def assert_same_results(one: Path, two: Path) -> None:
    """The same results.json, bit for bit (the provenance aside)."""
    a, b = (numbers(json.loads((run / "results.json").read_text())) for run in (one, two))
    assert a.keys() == b.keys()
    for path, x in a.items():
        assert x == b[path], (path, x, b[path])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], Path]:
    """The 1-process run folder of a command line, run once per module."""
    done: dict[str, Path] = {}

    def run(argv: list[str]) -> Path:
        key = " ".join(argv)
        if key not in done:
            out = tmp_path_factory.mktemp("one")
            assert main([*argv, "--out", str(out), "--overwrite"]) == 0
            done[key] = out
        return done[key]

    return run


def test_multicv_on_two_processes_gives_the_single_process_results(
        tmp_path: Path, single: Callable[[list[str]], Path]):
    """Each rank pretrains one of the two data sets; the meta-trained runs' held-out data
    sets, the sequential baselines and no pretraining are dealt out one per rank; the early
    stopping sees every data set's metrics."""
    child = torchrun(["-m", "metaleap", *MULTICV, "--out", str(tmp_path / "two")])
    assert child.returncode == 0, child.stderr[-3000:]
    one = single(MULTICV)
    assert_same_results(one, tmp_path / "two")
    assert records(one) == records(tmp_path / "two")


def test_rl_on_two_processes_gives_the_single_process_results(
        tmp_path: Path, single: Callable[[list[str]], Path]):
    child = torchrun(["-m", "metaleap", *RL, "--out", str(tmp_path / "two")])
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.count("report and plots in") == 1  # rank 0 alone writes and prints
    one = single(RL)
    assert_same_results(one, tmp_path / "two")
    assert records(one) == records(tmp_path / "two")


KILLED_GAME = textwrap.dedent("""
    import os, sys
    from metaleap.cli import main
    from metaleap.protocols.rl.study import RLRun

    original, boundaries = RLRun._train_game, []

    def _train_game(self, game, agent, optimizer, total, purpose, saved, save, *rest, **kw):
        def dying(segments):  # rank 1 dies mid-game in Leap's second meta-step, first try
            boundaries.append(purpose)
            if (boundaries.count("train") == 2 and os.environ["RANK"] == "1"
                    and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"):
                os._exit(137)
            save(segments)
        return original(self, game, agent, optimizer, total, purpose, saved, dying, *rest, **kw)

    RLRun._train_game = _train_game
    sys.exit(main(sys.argv[1:]))
""")


def test_rl_resumes_after_a_killed_rank_as_if_uninterrupted(
        tmp_path: Path, single: Callable[[list[str]], Path]):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_GAME)
    child = torchrun([str(script), *RL, "--out", str(tmp_path / "two")], restarts=1)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "failed (exitcode" in child.stderr  # the first group failed (rank 1 killed)
    assert_same_results(single(RL), tmp_path / "two")
    sessions = json.loads((tmp_path / "two" / "provenance.json").read_text())["sessions"]
    assert len(sessions) == 2


KILLED_SEGMENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    from metaleap.cli import main
    from metaleap.protocols.rl import study

    original, calls = study.a2c_segment, []
    saved = Path(sys.argv[sys.argv.index("--out") + 1]) / "checkpoints" / "seed0-leap.pt"

    def written() -> bool:  # rank 0 has renamed the save point's checkpoint into place
        try:
            return "progress" in torch.load(saved, weights_only=True)
        except (OSError, RuntimeError):
            return False

    def a2c_segment(*args, **kwargs):  # rank 1 dies in its game's second segment of
        calls.append(1)                # meta-step 2, after the meta-step's first save point
        if len(calls) == 4 and os.environ["RANK"] == "1":
            deadline = time.monotonic() + 60  # dying at once could stop rank 0 mid-write
            while not written() and time.monotonic() < deadline:
                time.sleep(0.05)
            os._exit(137)
        return original(*args, **kwargs)

    study.a2c_segment = a2c_segment
    sys.exit(main(sys.argv[1:]))
""")


def test_rl_saves_every_ranks_progress_inside_a_meta_step_and_resumes_there(
        tmp_path: Path, single: Callable[[list[str]], Path], capsys: pytest.CaptureFixture):
    """Each rank trains one game of two segments per meta-step; the save point between the
    segments gathers both ranks' progress into rank 0's checkpoint, and a group started
    again with --resume continues inside the meta-step, with the single-process results."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SEGMENT)
    out = tmp_path / "two"
    child = torchrun([str(script), *RL, "--out", str(out)])
    assert child.returncode != 0
    state = torch.load(out / "checkpoints" / "seed0-leap.pt", weights_only=True)
    progress = state["progress"]
    assert state["step"] == 1 and (progress["kind"], progress["world"], progress["point"]) == (
        "ranks", 2, 1)
    assert [r["game"] for r in progress["ranks"]] == [0, 1]  # both mid-game
    assert all(r["segments"]["segment"] == 1 for r in progress["ranks"])
    shutil.copytree(out, tmp_path / "alone")
    child = torchrun(["-m", "metaleap", *RL, "--out", str(out), "--resume"])
    assert child.returncode == 0, child.stderr[-3000:]
    assert_same_results(single(RL), out)
    assert main([*RL, "--out", str(tmp_path / "alone"), "--resume"]) == 2  # one process
    assert "by 2 processes: resume it with as many" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [RL, MULTICV], ids=["rl", "multicv"])
def test_more_processes_than_a_meta_batch_holds_are_refused(tmp_path: Path, argv: list[str]):
    child = torchrun(["-m", "metaleap", *argv, "--out", str(tmp_path / "run")], procs=3)
    assert child.returncode != 0
    assert "3 processes but a meta-" in child.stderr and "start at most 2" in child.stderr
    assert not (tmp_path / "run").exists()


def two_nodes(args: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Two torchrun launchers, 1 process each, meeting at a c10d rendezvous on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "two-nodes",
         "--rdzv-endpoint", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}) for r in (0, 1)]
    done = []
    for p in launchers:
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.parametrize("protocol", ["transfer", "rl"])
def test_two_nodes_give_the_single_process_results(tmp_path: Path, protocol: str,
                                                   single: Callable[[list[str]], Path]):
    argv = [protocol, "--preset", "tiny", *RUN]
    for child in two_nodes(["-m", "metaleap", *argv, "--out", str(tmp_path / "two")]):
        assert child.returncode == 0, child.stderr[-3000:]
    assert_same_results(single(argv), tmp_path / "two")


MISSING_ON_RANK_1 = textwrap.dedent("""
    import os, sys
    from metaleap.cli import main
    from metaleap.protocols.rl import study
    from metaleap.tasks.errors import MissingDependencyError

    original = study.open_games

    def open_games(env, names):  # rank 1's machine lacks the game package
        if os.environ["RANK"] == "1":
            raise MissingDependencyError("minatar is not installed: pip install 'metaleap[rl]'")
        return original(env, names)

    study.open_games = open_games
    sys.exit(main(sys.argv[1:]))
""")


def test_a_rank_missing_its_game_package_fails_the_group_in_one_line(tmp_path: Path):
    script = tmp_path / "missing.py"
    script.write_text(MISSING_ON_RANK_1)
    child = torchrun([str(script), *RL, "--out", str(tmp_path / "run")])
    assert child.returncode != 0
    lines = [line for line in child.stderr.splitlines() if line.startswith("metaleap: error")]
    assert lines == ["metaleap: error (rank 1): minatar is not installed: pip install "
                     "'metaleap[rl]'"]
    assert not (tmp_path / "run").exists()
