"""The RL protocol's command: ``metaleap rl``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaleap.protocols.commands import (
    Presets,
    dry_run_argument,
    prepare,
    run_arguments,
    run_or_price,
)

if TYPE_CHECKING:
    from metaleap.protocols.rl.config import RLConfig


#: The preset ``metaleap rl --env ENV`` starts from.
RL_DEFAULT_PRESET = {"minatar": "minatar", "atari": "atari-quick"}


def settings_config(args: argparse.Namespace) -> RLConfig:
    """The config of ``--env``, ``--preset`` and ``--set`` (for ``rl`` and ``settings``)."""
    from metaleap.protocols.config import ConfigError
    from metaleap.protocols.rl.config import resolve_config

    preset = args.preset or RL_DEFAULT_PRESET[args.env or "minatar"]
    cfg = resolve_config(preset, args.overrides)
    if args.env and cfg.env != args.env:
        raise ConfigError(f"--env {args.env} contradicts --preset {preset} (env {cfg.env})")
    return cfg


def cmd_rl(args: argparse.Namespace) -> None:
    from metaleap.protocols.rl.study import RLStudy

    cfg = settings_config(args)
    processes, device = prepare(args)
    study = RLStudy(cfg, device, progress=processes.main and not args.no_progress,
                    processes=processes)
    run_or_price(study, args, "metaleap.protocols.rl.dryrun:rl_budget",
                 f"rl {args.preset or cfg.env}: config checked, {len(study.games)} {cfg.env} "
                 f"games, on {study.device}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``metaleap rl``."""
    rl_cmd = sub.add_parser("rl", help="Leap across games with an actor-critic (docs/rl.md)")
    rl_cmd.add_argument("--env", choices=sorted(RL_DEFAULT_PRESET),
                        help="minatar (default; preset minatar) or atari (preset atari-quick)")
    rl_cmd.add_argument("--preset", choices=Presets("rl"), metavar="NAME",
                        help="starting configuration: %(choices)s (minatar-quick: minutes; "
                             "atari-paper: the paper's budget)")
    rl_cmd.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, e.g. seeds=0,1,2, "
                        "heldout=breakout, leap.meta_lr=0.5 (repeatable; see settings)")
    run_arguments(rl_cmd, "runs/rl")
    dry_run_argument(rl_cmd)
    rl_cmd.set_defaults(func=cmd_rl)


def settings_arguments(p: argparse.ArgumentParser) -> None:
    """``metaleap settings --env``."""
    p.add_argument("--env", choices=sorted(RL_DEFAULT_PRESET), help="as for rl")
