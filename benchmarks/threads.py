"""Oversubscription: several processes whose torch threads outnumber the cores, and the fix.

Starts ``k`` processes at once, as torchrun would (``LOCAL_WORLD_SIZE=k``), each timing Leap
meta-steps of the demo preset (as ``benchmarks/speed.py`` does) at ``t`` threads, where ``t``
is a number or ``default``: what :func:`metaleap.devices.set_threads` gives a rank when
``--threads`` is not passed (``cores / k``). Prints, per configuration, the median meta-step
time over the processes and whether :func:`metaleap.devices.thread_warning` fired;
``--json`` writes the raw times.

    python benchmarks/threads.py --configs 1x1 2xdefault 2x2 3x2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def child(threads: str, steps: int) -> None:
    """One rank: set the threads as the CLI does, time ``steps`` meta-steps; print JSON."""
    import torch

    from metaleap import devices
    from metaleap.protocols.base import RunContext
    from metaleap.protocols.transfer import TransferStudy, resolve_config

    devices.set_threads(None if threads == "default" else int(threads))
    devices.reuse_freed_memory()
    run = next(TransferStudy(resolve_config("demo", ["methods=leap"])).runs())
    run.meta_step(0, RunContext())
    warning = devices.thread_warning()
    seconds = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        run.meta_step(step, RunContext())
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"threads": torch.get_num_threads(), "warning": warning,
                      "seconds": seconds}))


def run_config(processes: int, threads: str, steps: int) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "LOCAL_WORLD_SIZE": str(processes)}
    env.pop("OMP_NUM_THREADS", None)
    procs = [subprocess.Popen([sys.executable, __file__, "--child", threads, "--steps",
                               str(steps)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["1x1", "2xdefault", "2x2", "3x2"],
                        help="PROCESSESxTHREADS, THREADS a number or 'default'")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    report: dict[str, object] = {"command": " ".join(sys.argv), "cores": os.cpu_count(),
                                 "configs": {}}
    for config in args.configs:
        processes, threads = config.split("x")
        results = run_config(int(processes), threads, args.steps)
        median = statistics.median(s for r in results for s in r["seconds"])  # type: ignore
        report["configs"][config] = {"median_s": median, "ranks": results}  # type: ignore
        warned = sum(r["warning"] is not None for r in results)
        print(f"{config:10s} threads/process {results[0]['threads']}  median meta-step "
              f"{median:7.3f} s  warned in {warned}/{len(results)} processes", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
