"""The command-line machinery every protocol's commands share (each protocol package adds
its own commands with it: ``metaleap.protocols.<name>.cli``).

Nothing heavy is imported at module level, so building the ``metaleap`` parser loads no
torch: ``--help`` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from metaleap.protocols.base import StudyProtocol
    from metaleap.shared import Processes


class Presets:
    """The preset names of registered protocols, read when argparse first needs them (to
    check a ``--preset`` or print a subcommand's help). Arguments that use it need a
    ``metavar``: argparse formats the metavar when the argument is added."""

    def __init__(self, *names: str) -> None:
        self.protocols = names

    def names(self) -> list[str]:
        from metaleap import protocols

        found = protocols.registered()
        return sorted({name for p in self.protocols or found for name in found[p].presets})

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def run_arguments(p: argparse.ArgumentParser, out: str) -> None:
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
    p.add_argument("--timeout", type=float, default=600.0,
                   help="under torchrun: seconds a collective waits for the other ranks "
                        "(default 600)")


def dry_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, print the budget (steps per method and seed, and "
                        "in all) and the wall time estimated from a few timed steps on the "
                        "device; write nothing")


def dry_run(study: StudyProtocol, budget: str, what: str) -> None:
    """Print ``what`` and ``study``'s priced budget, from the ``"module:function"`` named by
    ``budget`` (rank 0 under torchrun); nothing is written."""
    import torch

    from metaleap.protocols import lazy

    say(study.processes, f"{what}; {torch.get_num_threads()} CPU thread(s) per process")
    say(study.processes, str(lazy(budget)(study).render()))


def prepare(args: argparse.Namespace) -> tuple[Processes, torch.device]:
    """Check the run flags, set the CPU threads and resolve the device, writing nothing;
    under torchrun, join the process group."""
    from metaleap import distributed
    from metaleap.runs import RunError

    if args.resume and args.overwrite:
        raise RunError("choose one of --resume and --overwrite")
    cpu_settings(args)
    return distributed.from_environment(args.device, args.timeout)


def cpu_settings(args: argparse.Namespace) -> None:
    """CPU threads (``--threads``; under torchrun, each rank's share of the cores) and an
    allocator that reuses freed memory."""
    from metaleap.devices import reuse_freed_memory, set_threads

    set_threads(args.threads)
    reuse_freed_memory()


def flags(args: argparse.Namespace, out: Path, resume: bool) -> tuple[bool, bool]:
    """(resume, overwrite): a group that torchrun restarted resumes what it had written."""
    from metaleap import distributed

    if distributed.restarted() and (out / "config.json").is_file():
        return True, False
    return resume, args.overwrite


def run_study(study: StudyProtocol, out: Path, args: argparse.Namespace, resume: bool,
              overwrite: bool) -> Path | None:
    """Run ``study`` into the folder ``out``; rank 0 writes it and its report (returned)."""
    from metaleap.devices import describe
    from metaleap.protocols import trainer
    from metaleap.protocols.reporting import write_report
    from metaleap.runs import RunDir, RunReader, check_run_folder

    processes = study.processes
    for note in study.notes() if processes.main else []:
        print(f"metaleap: {note}", file=sys.stderr)
    config, identity, content = study.config_record(), study.data_identity(), study.data_digest()
    # every rank, before any write
    check_run_folder(out, config, identity, resume, overwrite, content)
    processes.barrier()
    store = RunDir(out, config, identity, describe(study.device), resume=resume,
                   overwrite=overwrite, tensorboard=args.tensorboard,
                   content=content) if processes.main else None
    processes.barrier()
    with store or RunReader(out) as run:
        trainer.run_study(study, run, progress=processes.main and not args.no_progress)
    processes.barrier()
    return write_report(out) if processes.main else None


def run_or_price(study: StudyProtocol, args: argparse.Namespace, budget: str,
                 what: str) -> None:
    """With ``--dry-run``, print ``what`` and the budget that ``budget`` (``"module:function"``
    of the study) prices; else run ``study`` into ``--out`` (resuming a group torchrun
    restarted) and print its report (rank 0)."""
    if args.dry_run:
        dry_run(study, budget, what)
        return
    out = Path(args.out)
    report = run_study(study, out, args, *flags(args, out, args.resume))
    if report is not None:
        print(report.read_text())
        print(f"report and plots in {report.parent}")


def say(processes: Processes, text: str) -> None:
    if processes.main:
        print(text, flush=True)
