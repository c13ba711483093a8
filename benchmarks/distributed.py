"""Meta-training throughput across processes: 1 process × 1 thread, 2 × 1 and 1 × 2.

Each configuration runs Leap's supervised meta-step on the docs/experiments.md convnet (batch 20,
K inner steps, a meta-batch of tasks split across the processes as `metaleap transfer` splits
it) on random data drawn lazily from seeded generators, in a fresh process group started with
torchrun (a loopback rendezvous) or a plain process. Rank 0 times ``--meta-steps`` meta-steps
after one warm-up step and reports meta-training tasks per second, the share of the time spent
in the all-reduce of the contributions, the share spent waiting for the slowest rank before it
(measured with a barrier, benchmark only) and the peak resident memory. The configurations
are interleaved in a rotating order over ``--repeats``; the script prints medians and the
median of the per-repeat speedups over 1 × 1.

    python benchmarks/distributed.py [--repeats 3] [--meta-batch 8] [--steps 20]
        [--meta-steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import common
import torch

from metaleap import distributed
from metaleap.leap import Contribution
from metaleap.metalearners import (
    Context,
    Processes,
    SupervisedMetaStep,
    TaskStream,
    make_metalearner,
)
from metaleap.models import make_convnet
from metaleap.seeding import generator

BATCH, CLASSES = 20, 20
CONFIGS = {"1 x 1": (1, 1), "2 x 1": (2, 1), "1 x 2": (1, 2)}


def batches(step: int, task: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = generator(0, "bench-distributed", step, task)
    for _ in range(steps + 1):
        yield (torch.rand(BATCH, 1, 28, 28, generator=g),
               torch.randint(0, CLASSES, (BATCH,), generator=g))


def worker(args: argparse.Namespace) -> None:
    """One process of a configuration; rank 0 prints its measurement as JSON."""
    torch.set_num_threads(args.threads)
    processes, _ = distributed.from_environment("cpu")
    wait, comm = [0.0], [0.0]

    class Timed(Processes):
        """The group, its all-reduce timed apart from the wait for the slowest rank."""

        def reduce(self, contribution: Contribution) -> Contribution:
            start = time.perf_counter()
            self.barrier()
            ready = time.perf_counter()
            out = super().reduce(contribution)
            wait[0] += ready - start
            comm[0] += time.perf_counter() - ready
            return out

    timed = Timed(processes.rank, processes.world, processes.all_sum)

    model = make_convnet(CLASSES, seed=0)
    learner = make_metalearner("leap", model, Context(num_tasks=args.meta_batch))
    step_fn = SupervisedMetaStep(learner, model, inner_lr=0.1)

    def meta_step(step: int) -> None:
        tasks = [TaskStream(t, batches(step, t, args.steps)) for t in range(args.meta_batch)]
        step_fn(tasks, timed)

    meta_step(-1)  # warm-up
    processes.barrier()
    wait[0] = comm[0] = 0.0
    start = time.perf_counter()
    for step in range(args.meta_steps):
        meta_step(step)
    seconds = time.perf_counter() - start
    if processes.main:
        print(json.dumps({"tasks_per_s": args.meta_batch * args.meta_steps / seconds,
                          "comm_share": comm[0] / seconds, "wait_share": wait[0] / seconds,
                          "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    distributed.shutdown()


def launch(name: str, args: argparse.Namespace) -> dict[str, float]:
    procs, threads = CONFIGS[name]
    work = [__file__, "--worker", "--threads", str(threads), "--meta-batch",
            str(args.meta_batch), "--steps", str(args.steps), "--meta-steps",
            str(args.meta_steps)]
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable])
    out = subprocess.run(prefix + work, check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="inner steps K per task")
    parser.add_argument("--meta-steps", type=int, default=3, help="timed meta-steps per run")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the raw measurements and the summary here")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    names = list(CONFIGS)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(launch(name, args))
            last = runs[name][-1]
            print(f"  repeat {r} {name}: {last['tasks_per_s']:.2f} tasks/s, all-reduce "
                  f"{100 * last['comm_share']:.2f} %, waiting {100 * last['wait_share']:.1f} %",
                  flush=True)
    print(f"\nLeap meta-training, convnet, meta-batch {args.meta_batch}, K = {args.steps}, "
          f"{args.meta_steps} timed meta-steps, {args.repeats} repeats, torch "
          f"{torch.__version__}")
    print(f"{'processes x threads':20s} {'tasks/s':>8s} {'speedup':>8s} {'all-reduce':>11s} "
          f"{'waiting':>8s} {'peak MiB':>9s}")
    summary = {}
    for name in names:
        speedup = statistics.median(m["tasks_per_s"] / b["tasks_per_s"] for m, b in
                                    zip(runs[name], runs["1 x 1"], strict=True))

        def median(key: str, name: str = name) -> float:
            return statistics.median(m[key] for m in runs[name])

        print(f"{name:20s} {median('tasks_per_s'):8.2f} {speedup:8.2f} "
              f"{100 * median('comm_share'):10.2f}% {100 * median('wait_share'):7.1f}% "
              f"{median('peak_mib'):9.0f}")
        summary[name] = {"speedup": speedup, **{k: median(k) for k in runs[name][0]}}
    common.write(args.json, runs, summary)


if __name__ == "__main__":
    main()
