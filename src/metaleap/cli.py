"""The ``metaleap`` command: the protocols' commands (each protocol package adds its own),
and ``settings``, ``report`` and ``data``, which loop over the registered protocols."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from metaleap import protocols
from metaleap.protocols.commands import Presets


def expected_errors() -> tuple[type[Exception], ...]:
    """The errors a command reports in one line (bad config, data, device, run folder)."""
    from metaleap.devices import DeviceError
    from metaleap.protocols.base import CheckpointError, DivergedError
    from metaleap.protocols.config import ConfigError
    from metaleap.runs import RunError
    from metaleap.tasks import DataError

    return (CheckpointError, ConfigError, DataError, DeviceError, DivergedError, RunError)



def cmd_settings(args: argparse.Namespace) -> None:
    from metaleap.protocols.config import describe_settings

    print(describe_settings(protocols.get(args.protocol).resolve_settings(args)))


def cmd_report(args: argparse.Namespace) -> None:
    """A run folder's report, or that of a folder of runs (the first protocol whose kind of
    folder it is: a sweep, a budget study, an ablation grid)."""
    from metaleap.protocols.reporting import write_report
    from metaleap.runs import RunError

    path = Path(args.dir)
    if (path / "config.json").is_file():
        report = write_report(path)
    else:
        found = (write(path) for p in protocols.registered().values()
                 for write in p.folder_reports)
        report = next((r for r in found if r is not None), None)
        if report is None:
            raise RunError(f"{path} holds no run folder (config.json) and no folder of runs "
                           "that a protocol reports on")
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


def cmd_data_check(args: argparse.Namespace) -> None:
    """One line: whether this machine's data for a run are the bytes it trained on."""
    from metaleap.protocols.datacheck import check_run

    print(check_run(args.run, args.against))


def cmd_data_omniglot(args: argparse.Namespace) -> None:
    from metaleap.tasks import omniglot_download as od

    if args.download:
        od.download_omniglot(args.to)
    else:
        root = od.require_downloaded(args.to)
        print(f"Omniglot is in {root}: use --data omniglot"
              + ("" if args.to is None else f":{root}"))



def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaleap", description="Leap: meta-learning "
                                "initializations that shorten learning processes.")
    sub = p.add_subparsers(dest="command", required=True)
    found = protocols.registered()
    for protocol in found.values():
        protocol.add_commands(sub)

    settings = sub.add_parser("settings", help="every setting of a preset with its meaning "
                              "(global, and METHOD.key per method)")
    settings.add_argument("--protocol", choices=list(found), default="transfer",
                          help="whose settings: %(choices)s (default transfer)")
    settings.add_argument("--preset", choices=Presets(), metavar="NAME",
                          help="%(choices)s; default: the protocol's ("
                               + ", ".join(f"{p.default_preset} for {name}"
                                           for name, p in found.items()) + ")")
    settings.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="as for transfer")
    for protocol in found.values():
        protocol.settings_arguments(settings)
    settings.set_defaults(func=cmd_settings)

    report = sub.add_parser("report", help="rebuild tables and plots of a run or of a folder "
                            "of runs (a sweep, a budget study, an ablation grid)")
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
    check = data_sub.add_parser("check", help="whether this machine's data for a run are "
                                "byte-identical to the run's, how much they differ, and which "
                                "recorded software or fonts differ (one line)")
    check.add_argument("run", metavar="RUN_DIR", help="a run folder (config.json, "
                       "provenance.json)")
    check.add_argument("--against", metavar="FILE",
                       help="the run's own glyph cache file, compared image by image (default: "
                            "the file its provenance names, when it is in this machine's cache)")
    check.set_defaults(func=cmd_data_check)
    omniglot = data_sub.add_parser("omniglot", help="the Omniglot alphabets: download them "
                                   "once, or say where they are")
    omniglot.add_argument("--download", action="store_true",
                          help="fetch and unpack the two archives Omniglot's authors publish "
                               "(checked by MD5; resumes; a zip already in DIR is used; "
                               "$METALEAP_OMNIGLOT_URL replaces their address)")
    omniglot.add_argument("--to", metavar="DIR",
                          help="the folder (default: <cache>/omniglot, the folder that "
                               "--data omniglot reads)")
    omniglot.set_defaults(func=cmd_data_omniglot)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a torchrun worker leaves its process group and then the process
    itself, without the interpreter's teardown (:func:`metaleap.distributed.exit`)."""
    args = parser().parse_args(argv)
    where = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 \
        else ""
    code = 0
    try:
        args.func(args)
    except expected_errors() as e:
        print(f"metaleap: error{where}: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("metaleap: interrupted; the last checkpoint is kept: rerun with --resume",
              file=sys.stderr)
        code = 130
    except Exception:
        traceback.print_exc()
        print(f"metaleap: unexpected error{where} (above); every file written so far is "
              "complete, and the run folder resumes from its last checkpoint: rerun with "
              "--resume", file=sys.stderr)
        code = 1
    finally:
        if "torch.distributed" in sys.modules:
            from metaleap import distributed

            distributed.shutdown()
    if "torch.distributed" in sys.modules and distributed.launched():
        distributed.exit(code)
    return code



if __name__ == "__main__":
    sys.exit(main())
