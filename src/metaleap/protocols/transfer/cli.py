"""The transfer protocol's commands: ``metaleap demo``, ``transfer`` and ``sweep``, and the
reports of its folders of runs (a sweep, a budget study, an ablation grid)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from metaleap.protocols.commands import (
    Presets,
    cpu_settings,
    dry_run_argument,
    flags,
    prepare,
    run_arguments,
    run_or_price,
    run_study,
    say,
)

if TYPE_CHECKING:
    from metaleap.protocols.transfer.config import TransferConfig
    from metaleap.shared import Processes
    from metaleap.tasks import TaskSet


PAPER_NS = "1,3,5,10,15,20,25"


def study_arguments(p: argparse.ArgumentParser, preset: str, out: str) -> None:
    p.add_argument("--preset", default=preset, choices=Presets("transfer"),
                   metavar="NAME", help=f"starting configuration: %(choices)s (default {preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. meta_steps=50, seeds=0,1,2, "
                        "maml.inner_steps=5, leap.metric=energy (repeatable)")
    p.add_argument("--data", help="'glyphs' (default; data version 1), 'glyphs:v2', "
                                  "'omniglot' (after `metaleap data omniglot --download`) or "
                                  "'omniglot:PATH' (the standard layout)")
    p.add_argument("--task-batching", choices=("auto", "on", "off"),
                   help="train a meta-batch's tasks and the held-out tasks as one computation "
                        "(auto: on CUDA only; equal to off up to float rounding)")
    run_arguments(p, out)


def fields_of(args: argparse.Namespace) -> dict[str, object]:
    fields: dict[str, object] = {"data": args.data} if args.data else {}
    if getattr(args, "task_batching", None):
        fields["task_batching"] = args.task_batching
    return fields


def open_data(cfg: TransferConfig, processes: Processes) -> TaskSet:
    """The config's alphabets; rank 0 opens them first (building the glyph cache if needed),
    the other ranks then read what it built."""
    from metaleap.tasks import open_taskset

    if not processes.main:
        processes.barrier()
    taskset = open_taskset(cfg.data, size=cfg.image_size, ways=cfg.ways)
    if processes.main:
        processes.barrier()
    return taskset


def cmd_transfer(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer.config import resolve_config
    from metaleap.protocols.transfer.study import TransferStudy

    cfg = resolve_config(args.preset, args.overrides, **fields_of(args))
    processes, device = prepare(args)
    study = TransferStudy(cfg, open_data(cfg, processes), device, processes)
    run_or_price(study, args, "metaleap.protocols.transfer.dryrun:transfer_budget",
                 f"transfer {args.preset}: config checked, {len(study.taskset)} alphabets, "
                 f"on {device}")


def cmd_demo(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer.config import resolve_config
    from metaleap.protocols.transfer.study import TransferStudy

    out = Path(args.out)
    cfg = resolve_config(args.preset, args.overrides, **fields_of(args))
    processes, device = prepare(args)
    say(processes, f"metaleap demo: {', '.join(cfg.methods)} on {cfg.data}, N = "
                    f"{cfg.num_pretrain} pretraining tasks, {cfg.meta_steps} meta-steps, on "
                    f"{device}; writing {out}")
    study = TransferStudy(cfg, open_data(cfg, processes), device, processes)
    resume = args.resume or ((out / "config.json").is_file() and not args.overwrite)
    report = run_study(study, out, args, *flags(args, out, resume))
    if report is not None:  # the report ends with the sentences that say what it shows
        plots = [str(p) for p in sorted(report.parent.glob("*.png"))]
        print(f"Plots: {', '.join(plots)}\n")
        print(report.read_text())


def cmd_sweep(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer.config import sweep_configs
    from metaleap.protocols.transfer.report import write_sweep_report
    from metaleap.protocols.transfer.study import TransferStudy
    from metaleap.runs import RunError

    out = Path(args.out)
    configs = sweep_configs(args.preset, args.overrides, args.ns, **fields_of(args))
    processes, device = prepare(args)
    taskset = open_data(next(iter(configs.values())), processes)
    studies = {n: TransferStudy(cfg, taskset, device, processes)  # checks every N first
               for n, cfg in configs.items()}
    resume, overwrite = flags(args, out, args.resume)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise RunError(f"{out} exists and is not empty: "
                       "pass --resume to continue it or --overwrite to replace it")
    processes.barrier()
    if overwrite and out.exists() and processes.main:
        shutil.rmtree(out)
    processes.barrier()
    for n, study in studies.items():
        run = out / f"n-{n}"
        say(processes, f"sweep: N = {n} -> {run}")
        run_study(study, run, args, resume=(run / "config.json").is_file(), overwrite=False)
    if processes.main:
        report = write_sweep_report(out)
        print(report.read_text())
        print(f"AUC against N: {out / 'auc_vs_n.png'}")


def cmd_paths(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer.paths import write_paths

    cpu_settings(args)
    report = write_paths([Path(r) for r in args.runs], Path(args.out), args.steps, args.losses,
                         args.window, progress=not args.no_progress)
    print(report.read_text())
    print(f"report and plot in {report.parent}")


def loss_levels(text: str) -> list[float]:
    """``--losses``: comma-separated numbers (argparse reports anything else in one line)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``metaleap demo``, ``transfer``, ``sweep`` and ``transfer-paths``."""
    demo = sub.add_parser("demo", help="a few-minute transfer study on glyph alphabets")
    study_arguments(demo, "demo", "runs/demo")
    demo.set_defaults(func=cmd_demo)

    transfer = sub.add_parser("transfer", help="one transfer study (docs/experiments.md)")
    study_arguments(transfer, "omniglot-paper", "runs/transfer")
    dry_run_argument(transfer)
    transfer.set_defaults(func=cmd_transfer)

    sweep = sub.add_parser("sweep", help="the study over several N (AUC against N)")
    study_arguments(sweep, "omniglot-paper", "runs/sweep")
    sweep.add_argument("--ns", default=PAPER_NS, help=f"numbers of pretraining tasks "
                                                      f"(default {PAPER_NS})")
    sweep.set_defaults(func=cmd_sweep)

    paths = sub.add_parser("transfer-paths", help="held-out paths to fixed losses from a "
                                                  "finished transfer run's initializations")
    paths.add_argument("runs", nargs="+", metavar="RUN",
                       help="finished transfer run folders (with init/ and results/) that "
                            "differ in their seeds alone")
    paths.add_argument("--out", required=True, help="folder for results.json, report.md and "
                                                    "paths.png")
    paths.add_argument("--steps", type=int, default=1000,
                       help="SGD steps per held-out task (default 1000)")
    paths.add_argument("--losses", default=[1.0, 0.5, 0.2, 0.1], type=loss_levels,
                       help="loss levels, comma-separated (default 1,0.5,0.2,0.1)")
    paths.add_argument("--window", type=int, default=10,
                       help="batch losses averaged to decide arrival (default 10)")
    paths.add_argument("--threads", type=int, help="torch CPU threads")
    paths.add_argument("--no-progress", action="store_true", help="no progress bars")
    paths.set_defaults(func=cmd_paths)


def settings_arguments(p: argparse.ArgumentParser) -> None:
    """``metaleap settings --data``."""
    p.add_argument("--data", help="as for transfer")


def settings_config(args: argparse.Namespace) -> TransferConfig:
    """The config ``metaleap settings --protocol transfer`` describes."""
    from metaleap.protocols.transfer.config import resolve_config

    return resolve_config(args.preset or "omniglot-paper", args.overrides, **fields_of(args))


def sweep_report(folder: Path) -> Path | None:
    """The report of a sweep (runs ``n-*``), or ``None`` for another kind of folder."""
    if not any(folder.glob("n-*/config.json")):
        return None
    from metaleap.protocols.transfer.report import write_sweep_report

    return write_sweep_report(folder)


def _runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/config.json"))]


def budget_report(folder: Path) -> Path | None:
    """The report of a budget study (transfer runs with ``heldout_at``), or ``None``."""
    runs = _runs(folder)
    if not any(r.get("protocol") == "transfer" and r.get("config", {}).get("heldout_at")
               for r in runs):
        return None
    from metaleap.protocols.transfer.budget import write_budget_report

    return write_budget_report(folder)


def paths_report(folder: Path) -> Path | None:
    """The report of a ``transfer-paths`` folder, or ``None``."""
    from metaleap.protocols.transfer.paths import write_paths_report

    return write_paths_report(folder)


def ablation_report(folder: Path) -> Path | None:
    """The report of an ablation grid (transfer runs without held-out evaluations on the
    way), or ``None``."""
    runs = _runs(folder)
    if not runs or any(r.get("protocol") != "transfer" for r in runs):
        return None
    from metaleap.protocols.transfer.ablation import write_ablation_report

    return write_ablation_report(folder)
