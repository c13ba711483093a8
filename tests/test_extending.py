"""The two walk-throughs of docs/architecture.md, literally: a method and a protocol added from
this file alone (no package file changes), each run end to end through the CLI entry point."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap import methods, protocols, seeding
from metaleap.cli import main
from metaleap.metalearners import Context, TaskHandle
from metaleap.metalearners.theta import ThetaHandle, ThetaLearner
from metaleap.methods import META_BATCH, MetaOptions
from metaleap.protocols.base import MethodRun, RunContext, StudyProtocol
from metaleap.protocols.commands import run_arguments, run_study
from metaleap.protocols.config import MethodConfig, at_least, resolve_preset
from metaleap.protocols.reporting import cell, verdict
from metaleap.stats import mean_ci, paired_difference


# ---------------------------------------------------------------- adding a method
class _TowardsHandle(ThetaHandle):
    def _finish(self, final_loss: Tensor) -> None:
        with torch.no_grad():  # θ⁰ − θ^K, as Reptile, halved: a method of its own
            self.learner.mean.add([(a - b) / 2 for a, b in zip(  # type: ignore[attr-defined]
                self.learner.theta.values(), self.params, strict=True)])  # type: ignore


class Towards(ThetaLearner):
    """Half of Reptile's step towards the tasks' final iterates."""

    Handle = _TowardsHandle


@pytest.fixture
def towards() -> Iterator[str]:
    methods.register(methods.Method("towards", "Halfway", "tab:olive", MetaOptions, Towards,
                                    protocols=frozenset({"transfer"})))
    yield "towards"
    methods.unregister("towards")


def test_a_method_registered_here_runs_in_the_transfer_study_through_the_cli(
        towards: str, omniglot: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    argv = ["transfer", "--preset", "tiny", "--data", f"omniglot:{omniglot}", "--no-progress",
            "--set", f"methods=leap,{towards},scratch", "--set", f"{towards}.meta_lr=0.5",
            "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["methods"]) == ["leap", towards, "scratch"]
    assert summary["methods_config"][towards]["meta_lr"] == 0.5
    assert "vs_leap" in summary["methods"][towards]  # compared with the registry's reference
    report = (out / "report.md").read_text()
    assert "| Halfway |" in report  # its display name, in the tables
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "meta_step" and r["method"] == towards for r in log) == 2
    capsys.readouterr()
    assert main(["settings", "--preset", "tiny", "--set", f"methods=leap,{towards}"]) == 0
    assert f"{towards}.meta_lr = 0.1" in capsys.readouterr().out
    assert main(["multicv", "--preset", "tiny", "--set", f"methods=leap,{towards}",
                 "--out", str(tmp_path / "refused")]) == 2  # it runs in transfer only
    assert "the Multi-CV protocol runs" in capsys.readouterr().err


# ---------------------------------------------------------------- adding a protocol
@dataclass
class LineConfig(MethodConfig):
    """Fit lines y = a·x; each slope a is a task."""

    PROTOCOL: ClassVar[str] = "lines"
    TITLE: ClassVar[str] = "lines"

    methods: list[str] = field(default_factory=lambda: LineConfig.supported())
    """the methods to compare"""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """one study per seed"""
    meta_steps: int = 5
    """meta-steps"""
    inner_steps: int = 4
    """SGD steps per task"""
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sparse per-method settings: the method's options"""

    def check(self) -> None:
        self.check_methods()
        at_least(self, 1, "inner_steps")
        at_least(self, 0, "meta_steps")
        for method in self.methods:
            self.options(method)


PRESETS = {"tiny": {}}


def line_batches(slope: float, steps: int, generator: torch.Generator
                 ) -> Iterator[tuple[Tensor, Tensor]]:
    for _ in range(steps + 1):
        x = torch.randn(8, 1, generator=generator)
        yield x, slope * x


class LineTask:
    """A slope as a task of a meta-batch (a ``MetaBatchTask``)."""

    def __init__(self, model: nn.Module, index: int, slope: float, steps: int,
                 generator: torch.Generator) -> None:
        self.net, self.index, self.slope, self.steps, self.generator = (
            model, index, slope, steps, generator)

    def model(self) -> nn.Module:
        return self.net

    def optimizer(self, params: Iterable[Tensor], momentum: float = 0.0
                  ) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.1, momentum=momentum)

    def start(self, handle: TaskHandle) -> LineRun:
        return LineRun(handle, line_batches(self.slope, self.steps, self.generator),
                       self.steps)


class LineRun:
    """A ``TaskRun``: one SGD step per ``advance``, then f(θ^K) on one more batch."""

    def __init__(self, handle: TaskHandle, batches: Iterator[tuple[Tensor, Tensor]],
                 steps: int) -> None:
        self.handle, self.batches, self.left = handle, batches, steps

    @property
    def done(self) -> bool:
        return self.left == 0

    def advance(self) -> None:
        x, y = next(self.batches)
        self.handle.step(F.mse_loss(self.handle.model(x), y))
        self.left -= 1

    def close(self) -> None:
        x, y = next(self.batches)
        self.handle.close(lambda: F.mse_loss(self.handle.model(x), y))


class LineStudy(StudyProtocol):
    name = "lines"

    def __init__(self, cfg: LineConfig) -> None:
        self.cfg, self.device = cfg, torch.device("cpu")

    def config_record(self) -> dict[str, Any]:
        return {"protocol": self.name, "config": self.cfg.to_dict(),
                "methods": self.cfg.resolved_methods()}

    def data_identity(self) -> dict[str, Any]:
        return {"kind": "lines"}

    def runs(self) -> Iterator[MethodRun]:
        for seed in self.cfg.seeds:
            for method in self.cfg.methods:
                yield LineMethodRun(self.cfg, method, seed)


class LineMethodRun(MethodRun):
    def __init__(self, cfg: LineConfig, method: str, seed: int) -> None:
        self.cfg, self.method, self.seed = cfg, method, seed
        self.model = nn.Linear(1, 1)
        nn.init.zeros_(self.model.weight)
        self.learner = methods.get(method).load()(self.model, cfg.options(method), Context())
        self.meta_steps, self.eval_every, self.checkpoint_every = cfg.meta_steps, 1, 1

    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        tasks = [LineTask(self.model, j, slope, self.cfg.inner_steps,
                          seeding.generator(self.seed, "inner", step, j))
                 for j, slope in enumerate((1.0, 2.0, 3.0))]
        return self.learner.meta_step(tasks)[1]

    def validate(self, step: int) -> dict[str, Any] | None:
        return None

    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        model = nn.Linear(1, 1)
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in line_batches(2.5, self.cfg.inner_steps, seeding.generator(self.seed, "eval")):
            loss = F.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"method": self.method, "seed": self.seed, "final_loss": float(loss.detach())}

    def export_metadata(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed)}


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entries = {m: {"final_loss": {str(r["seed"]): r["final_loss"] for r in results.values()
                                  if r["method"] == m}} for m in record["config"]["methods"]}
    return {"schema": 1, "protocol": "lines", "config": record["config"],
            "methods_config": record["methods"], "methods": entries}


def report(run: Path, summary: dict[str, Any]) -> list[str]:
    reference = methods.reference()
    ref = summary["methods"][reference]["final_loss"]
    lines = ["# Lines", "", "| method | final loss | − reference |", "|---|---|---|"]
    for method, e in summary["methods"].items():
        values = e["final_loss"]
        d = paired_difference([values[s] for s in ref], list(ref.values()))
        lines.append(f"| {methods.label(method)} | {mean_ci(list(values.values())).format()} | "
                     f"{cell(d, {})} {verdict(d)} |")
    return lines


def cmd_lines(args: argparse.Namespace) -> None:
    cfg = resolve_preset(LineConfig, PRESETS, "tiny", args.overrides)
    report_md = run_study(LineStudy(cfg), Path(args.out), args, args.resume, args.overwrite)
    if report_md is not None:
        print(report_md.read_text())


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lines", help="fit lines")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    run_arguments(p, "runs/lines")
    p.set_defaults(func=cmd_lines)


@pytest.fixture
def lines() -> Iterator[str]:
    protocols.register(protocols.Descriptor(
        name="lines", config=LineConfig, presets=PRESETS, default_preset="tiny",
        add_commands=add_commands, summarize=summarize, report=report))
    yield "lines"
    protocols.unregister("lines")


def test_a_protocol_registered_here_runs_resumes_and_reports_through_the_cli(
        lines: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    assert main([lines, "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["protocol"] == lines
    assert list(summary["methods"]) == LineConfig.supported() == ["leap", "scratch"]
    losses = summary["methods"]
    # Leap's θ⁰ moved from 0 towards the slopes 1–3, so the held-out slope 2.5 fits faster
    assert statistics.fmean(losses["leap"]["final_loss"].values()) < statistics.fmean(
        losses["scratch"]["final_loss"].values())
    report_md = (out / "report.md").read_text()
    assert "| Leap |" in report_md and "| No pretraining |" in report_md
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == report_md
    capsys.readouterr()
    assert main(["settings", "--protocol", lines]) == 0
    assert "inner_steps = 4" in capsys.readouterr().out
    assert main([lines, "--no-progress", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["methods"] == losses
    assert main([lines, "--set", "methods=leap,maml", "--out", str(tmp_path / "x")]) == 2
    assert "the lines protocol runs leap, scratch; not ['maml']" in capsys.readouterr().err


def test_the_registries_refuse_a_second_entry_of_a_name():
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get("leap"))
    with pytest.raises(ValueError, match="already registered"):
        protocols.register(protocols.get("transfer"))
    assert methods.get("maml").kind == META_BATCH and methods.reference() == "leap"
