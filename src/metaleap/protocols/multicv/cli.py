"""The Multi-CV protocol's command: ``metaleap multicv``."""

from __future__ import annotations

import argparse
import sys

from metaleap.protocols.commands import (
    Presets,
    dry_run_argument,
    prepare,
    run_arguments,
    run_or_price,
)


def cmd_multicv(args: argparse.Namespace) -> None:
    from metaleap.protocols.multicv.config import resolve_config
    from metaleap.protocols.multicv.study import MultiCVStudy

    fields = {"holdout": [h for h in args.holdout.split(",") if h]} if args.holdout else {}
    cfg = resolve_config(args.preset, args.overrides, **fields)
    processes, device = prepare(args)
    study = MultiCVStudy(cfg, device, args.allow_missing, processes)
    for name, why in study.left_out.items() if processes.main else ():
        print(f"metaleap: running without {name}: {why}", file=sys.stderr)
    run_or_price(study, args, "metaleap.protocols.multicv.dryrun:multicv_budget",
                 f"multicv {args.preset}: config checked, data sets "
                 f"{', '.join(study.cfg.datasets)}, on {study.device}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``metaleap multicv``."""
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
    run_arguments(mcv, "runs/multicv")
    dry_run_argument(mcv)
    mcv.set_defaults(func=cmd_multicv)
