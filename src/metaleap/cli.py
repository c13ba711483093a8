"""The ``metaleap`` command: argument parsing only; each command calls into the library."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from metaleap.protocols.transfer import (
    PRESETS,
    ConfigError,
    DivergedError,
    TransferConfig,
    TransferStudy,
    resolve_config,
)
from metaleap.report import write_report, write_sweep_report
from metaleap.runs import RunDir, RunError
from metaleap.tasks import DataError

PAPER_NS = "1,3,5,10,15,20,25"


def _study_arguments(p: argparse.ArgumentParser, preset: str) -> None:
    p.add_argument("--preset", default=preset, choices=sorted(PRESETS),
                   help=f"starting configuration (default {preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. meta_steps=50, seeds=0,1,2, "
                        "maml.inner_steps=5 (repeatable)")
    p.add_argument("--data", help="'glyphs' (default) or 'omniglot:PATH' (the standard layout)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars for TensorBoard into OUT/tensorboard")


def _config(args: argparse.Namespace, **fields: object) -> TransferConfig:
    if args.data:
        fields["data"] = args.data
    return resolve_config(args.preset, args.overrides, **fields)


def _run(cfg: TransferConfig, out: Path, args: argparse.Namespace, resume: bool) -> Path:
    study = TransferStudy(cfg, progress=not args.no_progress)
    with RunDir(out, cfg.to_dict(), resume=resume, overwrite=args.overwrite,
                tensorboard=args.tensorboard) as run:
        study.run(run)
    return write_report(out)


def cmd_transfer(args: argparse.Namespace) -> None:
    report = _run(_config(args), Path(args.out), args, args.resume)
    print(report.read_text())
    print(f"report and plots in {report.parent}")


def cmd_demo(args: argparse.Namespace) -> None:
    out = Path(args.out)
    cfg = _config(args)
    resume = args.resume or ((out / "config.json").is_file() and not args.overwrite)
    print(f"metaleap demo: {', '.join(cfg.methods)} on {cfg.data}, N = {cfg.num_pretrain} "
          f"pretraining tasks, {cfg.meta_steps} meta-steps; writing {out}", flush=True)
    report = _run(cfg, out, args, resume)
    print(report.read_text())
    print(f"Plots: {report.parent / 'heldout_curves.png'}, {report.parent / 'meta_training.png'}")


def cmd_sweep(args: argparse.Namespace) -> None:
    out = Path(args.out)
    try:
        ns = sorted({int(n) for n in args.ns.split(",") if n})
    except ValueError:
        raise ConfigError(f"--ns expects integers like {PAPER_NS}, got {args.ns!r}") from None
    if not ns:
        raise ConfigError("--ns names no N")
    configs = {n: _config(args, num_pretrain=n) for n in ns}
    if out.exists() and any(out.iterdir()) and not (args.resume or args.overwrite):
        raise RunError(f"{out} exists and is not empty: "
                       "pass --resume to continue it or --overwrite to replace it")
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    for n, cfg in configs.items():
        run = out / f"n-{n}"
        print(f"sweep: N = {n} -> {run}", flush=True)
        _run(cfg, run, argparse.Namespace(**{**vars(args), "overwrite": False}),
             resume=(run / "config.json").is_file())
    report = write_sweep_report(out)
    print(report.read_text())
    print(f"AUC against N: {out / 'auc_vs_n.png'}")


def cmd_report(args: argparse.Namespace) -> None:
    path = Path(args.dir)
    report = write_report(path) if (path / "config.json").is_file() else write_sweep_report(path)
    print(report.read_text())


def cmd_data_glyphs(args: argparse.Namespace) -> None:
    from metaleap.tasks.glyphs import GlyphAlphabets, list_alphabets, preview_sheet

    ds = GlyphAlphabets(size=args.size, fonts=args.fonts)
    if args.list or not args.preview:
        print(list_alphabets(ds))
    if args.preview:
        preview_sheet(ds, args.preview)
        print(f"contact sheet written to {args.preview}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaleap", description="Leap: meta-learning "
                                "initializations that shorten learning processes.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a few-minute transfer study on glyph alphabets")
    _study_arguments(demo, "demo")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.set_defaults(func=cmd_demo)

    transfer = sub.add_parser("transfer", help="one transfer study (SPEC §2.1)")
    _study_arguments(transfer, "omniglot-paper")
    transfer.add_argument("--out", required=True, help="run folder")
    transfer.set_defaults(func=cmd_transfer)

    sweep = sub.add_parser("sweep", help="the study over several N (AUC against N)")
    _study_arguments(sweep, "omniglot-paper")
    sweep.add_argument("--ns", default=PAPER_NS, help=f"numbers of pretraining tasks "
                                                      f"(default {PAPER_NS})")
    sweep.add_argument("--out", required=True, help="sweep folder (one run per N inside)")
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser("report", help="rebuild tables and plots of a run or sweep")
    report.add_argument("dir")
    report.set_defaults(func=cmd_report)

    data = sub.add_parser("data", help="inspect the task data")
    data_sub = data.add_subparsers(dest="source", required=True)
    glyphs = data_sub.add_parser("glyphs", help="the glyph alphabets (built and cached once)")
    glyphs.add_argument("--list", action="store_true", help="alphabets and character counts")
    glyphs.add_argument("--preview", metavar="PNG", help="write a contact sheet")
    glyphs.add_argument("--size", type=int, default=28, help="image size (default 28)")
    glyphs.add_argument("--fonts", choices=("all", "matplotlib"), default="all",
                        help="all fonts on the machine (default) or matplotlib's alone")
    glyphs.set_defaults(func=cmd_data_glyphs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DataError, DivergedError, RunError) as e:
        print(f"metaleap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaleap: interrupted; the last checkpoint is kept: rerun with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
