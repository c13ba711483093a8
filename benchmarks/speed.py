"""The transfer meta-step of this tree against another tree's (an older commit), side by side.

Each measurement is a fresh child process that imports ``metaleap`` from one tree's ``src``,
builds the real :class:`~metaleap.protocols.transfer.TransferStudy` of a preset (glyph data,
augmentation, batch assembly, Leap), takes one warm-up meta-step and times ``--steps`` more at
``--threads`` threads, with the allocator setting the CLI makes
(:func:`metaleap.devices.reuse_freed_memory`, where the tree has it). The variants (the old
tree; this tree; this tree with glibc's default allocator settings; this tree with the
authors' 2019 block order) run interleaved, in a rotating order, ``--repeats`` times; the
summary gives median seconds per meta-step and the median of the per-repeat ratios.
``--json`` writes every raw time and the summary.

    git worktree add /tmp/old 02c0fb4
    python benchmarks/speed.py --old /tmp/old/src --repeats 5 --json benchmarks/results/x.json
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

HERE = Path(__file__).resolve().parent.parent / "src"
#: (preset, overrides): the demo preset as it is (16 px, meta-batch 4, K = 20) and the paper's
#: 28-px Omniglot setting with a smaller meta-batch and K (the same per-step work, minutes
#: instead of hours).
WORKLOADS = {"demo": ("demo", ["methods=leap"]),
             "omniglot-paper": ("omniglot-paper", ["methods=leap", "seeds=0", "meta_batch=2",
                                                   "inner_steps=20"])}


def child(src: str, preset: str, overrides: list[str], steps: int, threads: int,
          reuse: bool) -> None:
    """In a fresh process: time ``steps`` meta-steps of Leap after one warm-up; print JSON."""
    sys.path.insert(0, src)
    import torch

    from metaleap import devices
    from metaleap.protocols.transfer import TransferStudy, resolve_config

    torch.set_num_threads(threads)
    if reuse and hasattr(devices, "reuse_freed_memory"):
        devices.reuse_freed_memory()
    study = TransferStudy(resolve_config(preset, overrides))
    run = next(study.runs())
    try:  # since the typed run contract a meta-step takes the trainer's context
        from metaleap.protocols.base import RunContext

        context: tuple[object, ...] = (RunContext(),)
    except ImportError:
        context = ()
    run.meta_step(0, *context)
    seconds = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        run.meta_step(step, *context)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds}))


def measure(src: str, workload: str, extra: list[str], reuse: bool, steps: int,
            threads: int) -> float:
    """Median seconds per meta-step of one child process."""
    preset, overrides = WORKLOADS[workload]
    cmd = [sys.executable, __file__, "--child", src, preset, json.dumps(overrides + extra),
           str(int(reuse)), "--steps", str(steps), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return statistics.median(json.loads(out.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=False, help="the other tree's src folder")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed meta-steps per process")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write raw times and the summary here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], json.loads(args.child[2]), args.steps, args.threads,
              args.child[3] == "1")
        return
    variants = {"new": (str(HERE), [], True),
                "new, default allocator": (str(HERE), [], False),
                "new, 2019 block order": (str(HERE), ["block_order=pool-bn-relu"], True)}
    if args.old:
        variants = {"old": (args.old, [], True), **variants}
    names = list(variants)
    report: dict[str, object] = {"command": " ".join(sys.argv), "threads": args.threads,
                                 "steps": args.steps, "repeats": args.repeats,
                                 "workloads": {k: WORKLOADS[k] for k in args.workloads},
                                 "variants": variants, "seconds": {}, "summary": {}}
    for workload in args.workloads:
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                src, extra, reuse = variants[name]
                times[name].append(measure(src, workload, extra, reuse, args.steps,
                                           args.threads))
                print(f"{workload:15s} repeat {r} {name:22s} {times[name][-1]:7.3f} s",
                      flush=True)
        base = "old" if args.old else "new"
        summary = {name: {"median_s": statistics.median(t),
                          f"speedup_vs_{base}": statistics.median(
                              b / s for b, s in zip(times[base], t, strict=True)),
                          "min_speedup": min(b / s for b, s in zip(times[base], t, strict=True)),
                          "max_speedup": max(b / s for b, s in zip(times[base], t, strict=True))}
                   for name, t in times.items()}
        report["seconds"][workload] = times  # type: ignore[index]
        report["summary"][workload] = summary  # type: ignore[index]
        print(f"\n{workload}: median s / meta-step, median (min-max) of per-repeat speed-ups "
              f"over {base}")
        for name, s in summary.items():
            print(f"  {name:22s} {s['median_s']:7.3f} s  {s[f'speedup_vs_{base}']:.2f}x "
                  f"({s['min_speedup']:.2f}-{s['max_speedup']:.2f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
