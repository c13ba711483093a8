"""The ``metaleap`` command: argument parsing only; each command calls into the library."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy modules load inside the commands, so --help starts fast
    import torch

    from metaleap.protocols import multicv, rl
    from metaleap.protocols.base import Processes
    from metaleap.protocols.transfer import TransferConfig, TransferStudy
    from metaleap.tasks import TaskSet

PAPER_NS = "1,3,5,10,15,20,25"


class Presets:
    """The preset names of protocol modules, read when argparse first needs them (to check
    a ``--preset`` or print a subcommand's help), so that building the parser imports no
    protocol (nor torch). Arguments that use it need a ``metavar``: argparse formats the
    metavar when the argument is added."""

    def __init__(self, *protocols: str) -> None:
        self.protocols = protocols

    def names(self) -> list[str]:
        return sorted({name for p in self.protocols for name in
                       importlib.import_module(f"metaleap.protocols.{p}").PRESETS})

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def expected_errors() -> tuple[type[Exception], ...]:
    """The errors a command reports in one line (bad config, data, device, run folder)."""
    from metaleap.devices import DeviceError
    from metaleap.protocols.base import CheckpointError, ConfigError, DivergedError
    from metaleap.runs import RunError
    from metaleap.tasks import DataError

    return (CheckpointError, ConfigError, DataError, DeviceError, DivergedError, RunError)


def launched() -> bool:
    """Whether torchrun started this process as one of several (read without torch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _run_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """The flags every study command shares: device, threads, run folder and its handling."""
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; "
                   "under torchrun, cores / LOCAL_WORLD_SIZE per rank)")
    p.add_argument("--out", default=out, help=f"run folder (default {out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars for TensorBoard into OUT/tensorboard")


def _study_arguments(p: argparse.ArgumentParser, preset: str, out: str) -> None:
    p.add_argument("--preset", default=preset, choices=Presets("transfer"),
                   metavar="NAME", help=f"starting configuration: %(choices)s (default {preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. meta_steps=50, seeds=0,1,2, "
                        "maml.inner_steps=5, leap.metric=energy (repeatable)")
    p.add_argument("--data", help="'glyphs' (default; data version 1), 'glyphs:v2' or "
                                  "'omniglot:PATH' (the standard layout)")
    p.add_argument("--task-batching", choices=("auto", "on", "off"),
                   help="train a meta-batch's tasks and the held-out tasks as one computation "
                        "(auto: on CUDA only; equal to off up to float rounding)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="under torchrun: seconds a collective waits for the other ranks "
                        "(default 600)")
    _run_arguments(p, out)


def _dry_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, print the budget (steps per method and seed, and "
                        "in all) and the wall time estimated from a few timed steps on the "
                        "device; write nothing")


def _dry_run(processes: Processes, budget: Callable[[], object], what: str) -> None:
    """Print ``what`` and the priced budget (rank 0 under torchrun); nothing is written."""
    import torch

    _say(processes, f"{what}; {torch.get_num_threads()} CPU thread(s) per process")
    text = str(budget().render())  # type: ignore[attr-defined]
    _say(processes, text)


def _fields(args: argparse.Namespace) -> dict[str, object]:
    fields: dict[str, object] = {"data": args.data} if args.data else {}
    if getattr(args, "task_batching", None):
        fields["task_batching"] = args.task_batching
    return fields


def _prepare(args: argparse.Namespace) -> tuple[Processes, torch.device]:
    """Check the run flags, set the CPU threads and resolve the device, writing nothing;
    under torchrun, join the process group."""
    from metaleap import distributed
    from metaleap.runs import RunError

    if args.resume and args.overwrite:
        raise RunError("choose one of --resume and --overwrite")
    _cpu(args)
    return distributed.from_environment(args.device, args.timeout)


def _cpu(args: argparse.Namespace) -> None:
    """CPU threads (``--threads``; under torchrun, each rank's share of the cores) and an
    allocator that reuses freed memory."""
    from metaleap.devices import reuse_freed_memory, set_threads

    set_threads(args.threads)
    reuse_freed_memory()


def _open_data(cfg: TransferConfig, processes: Processes) -> TaskSet:
    """The config's alphabets; rank 0 opens them first (building the glyph cache if needed),
    the other ranks then read what it built."""
    from metaleap.tasks import open_taskset

    if not processes.main:
        processes.barrier()
    taskset = open_taskset(cfg.data, size=cfg.image_size, ways=cfg.ways)
    if processes.main:
        processes.barrier()
    return taskset


def _flags(args: argparse.Namespace, out: Path, resume: bool) -> tuple[bool, bool]:
    """(resume, overwrite): a group that torchrun restarted resumes what it had written."""
    from metaleap import distributed

    if distributed.restarted() and (out / "config.json").is_file():
        return True, False
    return resume, args.overwrite


def _run(study: TransferStudy | rl.RLStudy | multicv.MultiCVStudy, out: Path,
         args: argparse.Namespace, resume: bool, overwrite: bool) -> Path | None:
    """Run ``study`` into the folder ``out``; rank 0 writes it and its report (returned)."""
    from metaleap.devices import describe
    from metaleap.protocols.trainer import run_study
    from metaleap.protocols.transfer import TransferStudy
    from metaleap.report import write_report
    from metaleap.runs import RunDir, RunReader, check_run_folder

    processes = study.processes
    note = study.batching_note() if isinstance(study, TransferStudy) else None
    if note and processes.main:
        print(f"metaleap: {note}", file=sys.stderr)
    config, identity = study.config_record(), study.data_identity()
    check_run_folder(out, config, identity, resume, overwrite)  # every rank, before any write
    processes.barrier()
    store = RunDir(out, config, identity, describe(study.device), resume=resume,
                   overwrite=overwrite, tensorboard=args.tensorboard) if processes.main else None
    processes.barrier()
    with store or RunReader(out) as run:
        run_study(study, run, progress=processes.main and not args.no_progress)
    processes.barrier()
    return write_report(out) if processes.main else None


def _say(processes: Processes, text: str) -> None:
    if processes.main:
        print(text, flush=True)


def cmd_transfer(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer import TransferStudy, resolve_config

    cfg = resolve_config(args.preset, args.overrides, **_fields(args))
    processes, device = _prepare(args)
    out = Path(args.out)
    study = TransferStudy(cfg, _open_data(cfg, processes), device, processes)
    if args.dry_run:
        from metaleap.protocols.dryrun import transfer_budget

        return _dry_run(processes, lambda: transfer_budget(study),
                        f"transfer {args.preset}: config checked, {len(study.taskset)} "
                        f"alphabets, on {device}")
    report = _run(study, out, args, *_flags(args, out, args.resume))
    if report is not None:
        print(report.read_text())
        print(f"report and plots in {report.parent}")


def cmd_demo(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer import TransferStudy, resolve_config

    out = Path(args.out)
    cfg = resolve_config(args.preset, args.overrides, **_fields(args))
    processes, device = _prepare(args)
    _say(processes, f"metaleap demo: {', '.join(cfg.methods)} on {cfg.data}, N = "
                    f"{cfg.num_pretrain} pretraining tasks, {cfg.meta_steps} meta-steps, on "
                    f"{device}; writing {out}")
    study = TransferStudy(cfg, _open_data(cfg, processes), device, processes)
    resume = args.resume or ((out / "config.json").is_file() and not args.overwrite)
    report = _run(study, out, args, *_flags(args, out, resume))
    if report is not None:  # the report ends with the sentences that say what it shows
        plots = [str(p) for p in sorted(report.parent.glob("*.png"))]
        print(f"Plots: {', '.join(plots)}\n")
        print(report.read_text())


def cmd_sweep(args: argparse.Namespace) -> None:
    from metaleap.protocols.transfer import TransferStudy, sweep_configs
    from metaleap.report import write_sweep_report
    from metaleap.runs import RunError

    out = Path(args.out)
    configs = sweep_configs(args.preset, args.overrides, args.ns, **_fields(args))
    processes, device = _prepare(args)
    taskset = _open_data(next(iter(configs.values())), processes)
    studies = {n: TransferStudy(cfg, taskset, device, processes)  # checks every N first
               for n, cfg in configs.items()}
    resume, overwrite = _flags(args, out, args.resume)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise RunError(f"{out} exists and is not empty: "
                       "pass --resume to continue it or --overwrite to replace it")
    processes.barrier()
    if overwrite and out.exists() and processes.main:
        shutil.rmtree(out)
    processes.barrier()
    for n, study in studies.items():
        run = out / f"n-{n}"
        _say(processes, f"sweep: N = {n} -> {run}")
        _run(study, run, args, resume=(run / "config.json").is_file(), overwrite=False)
    if processes.main:
        report = write_sweep_report(out)
        print(report.read_text())
        print(f"AUC against N: {out / 'auc_vs_n.png'}")


#: The preset ``metaleap rl --env ENV`` starts from.
RL_DEFAULT_PRESET = {"minatar": "minatar", "atari": "atari-quick"}


def _rl_config(args: argparse.Namespace) -> rl.RLConfig:
    from metaleap.protocols import rl
    from metaleap.protocols.base import ConfigError

    preset = args.preset or RL_DEFAULT_PRESET[args.env or "minatar"]
    cfg = rl.resolve_config(preset, args.overrides)
    if args.env and cfg.env != args.env:
        raise ConfigError(f"--env {args.env} contradicts --preset {preset} (env {cfg.env})")
    return cfg


def cmd_rl(args: argparse.Namespace) -> None:
    from metaleap.devices import resolve_device
    from metaleap.protocols import rl
    from metaleap.protocols.base import ConfigError

    if launched():
        raise ConfigError("metaleap rl runs in one process: start it without torchrun")
    cfg = _rl_config(args)
    _cpu(args)
    out = Path(args.out)
    study = rl.RLStudy(cfg, resolve_device(args.device), progress=not args.no_progress)
    if args.dry_run:
        from metaleap.protocols.base import ONE_PROCESS
        from metaleap.protocols.dryrun import rl_budget

        return _dry_run(ONE_PROCESS, lambda: rl_budget(study),
                        f"rl {args.preset or cfg.env}: config checked, {len(study.games)} "
                        f"{cfg.env} games, on {study.device}")
    report = _run(study, out, args, args.resume, args.overwrite)
    if report is not None:
        print(report.read_text())
        print(f"report and plots in {report.parent}")


def cmd_multicv(args: argparse.Namespace) -> None:
    from metaleap.devices import resolve_device
    from metaleap.protocols import multicv
    from metaleap.protocols.base import ConfigError

    if launched():
        raise ConfigError("metaleap multicv runs in one process: start it without torchrun")
    fields = {"holdout": [h for h in args.holdout.split(",") if h]} if args.holdout else {}
    cfg = multicv.resolve_config(args.preset, args.overrides, **fields)
    _cpu(args)
    study = multicv.MultiCVStudy(cfg, resolve_device(args.device), args.allow_missing)
    for name, why in study.left_out.items():
        print(f"metaleap: running without {name}: {why}", file=sys.stderr)
    if args.dry_run:
        from metaleap.protocols.base import ONE_PROCESS
        from metaleap.protocols.dryrun import multicv_budget

        return _dry_run(ONE_PROCESS, lambda: multicv_budget(study),
                        f"multicv {args.preset}: config checked, data sets "
                        f"{', '.join(study.cfg.datasets)}, on {study.device}")
    report = _run(study, Path(args.out), args, args.resume, args.overwrite)
    if report is not None:
        print(report.read_text())
        print(f"report and plots in {report.parent}")


def cmd_settings(args: argparse.Namespace) -> None:
    from metaleap.protocols.base import describe_settings

    if args.protocol == "rl":
        print(describe_settings(_rl_config(args)))
    elif args.protocol == "multicv":
        from metaleap.protocols import multicv

        print(describe_settings(multicv.resolve_config(args.preset or "multicv-small",
                                                       args.overrides)))
    else:
        from metaleap.protocols.transfer import resolve_config

        print(describe_settings(resolve_config(args.preset or "omniglot-paper", args.overrides,
                                               **_fields(args))))


def cmd_report(args: argparse.Namespace) -> None:
    from metaleap.ablation import write_ablation_report
    from metaleap.budget import write_budget_report
    from metaleap.report import write_report, write_sweep_report

    path = Path(args.dir)
    runs = [json.loads(p.read_text()) for p in sorted(path.glob("*/config.json"))]
    if (path / "config.json").is_file():
        report = write_report(path)
    elif any(path.glob("n-*/config.json")) or not runs:
        report = write_sweep_report(path)
    elif any(r.get("config", {}).get("heldout_at") for r in runs):
        report = write_budget_report(path)
    else:  # runs without held-out evaluations on the way: the cells of an ablation grid
        report = write_ablation_report(path)
    print(report.read_text())


def cmd_data_glyphs(args: argparse.Namespace) -> None:
    from metaleap.tasks.glyphs import (
        VERSIONS,
        GlyphAlphabets,
        check_version,
        glyph_stats,
        list_alphabets,
        preview_sheet,
        stats_table,
    )

    version = check_version(args.version) if args.version is not None else None
    if args.stats:
        versions = [version] if version else list(VERSIONS)
        print(stats_table({v: glyph_stats(GlyphAlphabets(size=args.size, fonts=args.fonts,
                                                         version=v)) for v in versions}))
    if args.list or args.preview or not args.stats:
        ds = GlyphAlphabets(size=args.size, fonts=args.fonts, version=version or VERSIONS[-1])
        if args.list or not (args.preview or args.stats):
            print(list_alphabets(ds))
        if args.preview:
            preview_sheet(ds, args.preview)
            print(f"contact sheet (data version {ds.version}) written to {args.preview}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaleap", description="Leap: meta-learning "
                                "initializations that shorten learning processes.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a few-minute transfer study on glyph alphabets")
    _study_arguments(demo, "demo", "runs/demo")
    demo.set_defaults(func=cmd_demo)

    transfer = sub.add_parser("transfer", help="one transfer study (docs/experiments.md)")
    _study_arguments(transfer, "omniglot-paper", "runs/transfer")
    _dry_run_argument(transfer)
    transfer.set_defaults(func=cmd_transfer)

    sweep = sub.add_parser("sweep", help="the study over several N (AUC against N)")
    _study_arguments(sweep, "omniglot-paper", "runs/sweep")
    sweep.add_argument("--ns", default=PAPER_NS, help=f"numbers of pretraining tasks "
                                                      f"(default {PAPER_NS})")
    sweep.set_defaults(func=cmd_sweep)

    rl_cmd = sub.add_parser("rl", help="Leap across games with an actor-critic (docs/rl.md)")
    rl_cmd.add_argument("--env", choices=sorted(RL_DEFAULT_PRESET),
                        help="minatar (default; preset minatar) or atari (preset atari-quick)")
    rl_cmd.add_argument("--preset", choices=Presets("rl"), metavar="NAME",
                        help="starting configuration: %(choices)s (minatar-quick: minutes; "
                             "atari-paper: the paper's budget)")
    rl_cmd.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, e.g. seeds=0,1,2, "
                        "heldout=breakout, leap.meta_lr=0.5 (repeatable; see settings)")
    _run_arguments(rl_cmd, "runs/rl")
    _dry_run_argument(rl_cmd)
    rl_cmd.set_defaults(func=cmd_rl)

    mcv = sub.add_parser("multicv", help="leave one data set out (docs/multicv.md)")
    mcv.add_argument("--holdout", metavar="NAME|all",
                     help="the held-out data set(s), comma-separated, or all (default: the "
                          "preset's; multicv-small: all)")
    mcv.add_argument("--preset", default="multicv-small", choices=Presets("multicv"),
                     metavar="NAME", help="starting configuration: %(choices)s (default "
                          "multicv-small: about 45 minutes on one core; multicv-paper: the "
                          "paper's budget; tiny: seconds)")
    mcv.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a setting, e.g. seeds=0,1, "
                     "methods=leap,hat, leap.meta_lr=0.01, hat.s_max=400 (repeatable; see "
                     "settings --protocol multicv)")
    mcv.add_argument("--allow-missing", action="store_true",
                     help="run without the data sets that are not installed (they are listed "
                          "in the report); without it, a missing one stops the command")
    _run_arguments(mcv, "runs/multicv")
    _dry_run_argument(mcv)
    mcv.set_defaults(func=cmd_multicv)

    settings = sub.add_parser("settings", help="every setting of a preset with its meaning "
                              "(global, and METHOD.key per method)")
    settings.add_argument("--protocol", choices=("transfer", "rl", "multicv"),
                          default="transfer", help="whose settings: transfer (default), rl or "
                          "multicv")
    settings.add_argument("--preset",
                          choices=Presets("transfer", "rl", "multicv"),
                          metavar="NAME", help="%(choices)s; default: omniglot-paper "
                          "(transfer), minatar (rl), multicv-small (multicv)")
    settings.add_argument("--env", choices=sorted(RL_DEFAULT_PRESET), help="as for rl")
    settings.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="as for transfer")
    settings.add_argument("--data", help="as for transfer")
    settings.set_defaults(func=cmd_settings)

    report = sub.add_parser("report", help="rebuild tables and plots of a run, a sweep or a "
                            "budget study (a folder of runs with heldout_at)")
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)

    data = sub.add_parser("data", help="inspect the task data")
    data_sub = data.add_subparsers(dest="source", required=True)
    glyphs = data_sub.add_parser("glyphs", help="the glyph alphabets (built and cached once)")
    glyphs.add_argument("--list", action="store_true", help="alphabets and character counts")
    glyphs.add_argument("--preview", metavar="PNG", help="write a contact sheet")
    glyphs.add_argument("--stats", action="store_true",
                        help="within- against between-character distance and leave-one-drawer-"
                             "out 1-NN accuracy per data version")
    glyphs.add_argument("--version", type=int, metavar="1|2",
                        help="data version (default: 2 for --list and --preview, both for "
                             "--stats; protocols default to 1, see --data glyphs:v2)")
    glyphs.add_argument("--size", type=int, default=28, help="image size (default 28)")
    glyphs.add_argument("--fonts", choices=("all", "matplotlib"), default="all",
                        help="all fonts on the machine (default) or matplotlib's alone")
    glyphs.set_defaults(func=cmd_data_glyphs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    where = f" (rank {os.environ.get('RANK')})" if launched() else ""
    try:
        args.func(args)
    except expected_errors() as e:
        print(f"metaleap: error{where}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaleap: interrupted; the last checkpoint is kept: rerun with --resume",
              file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"metaleap: unexpected error{where} (above); every file written so far is "
              "complete, and the run folder resumes from its last checkpoint: rerun with "
              "--resume", file=sys.stderr)
        return 1
    finally:
        if "torch.distributed" in sys.modules:
            from metaleap import distributed

            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
