"""Meta-training throughput across processes: 1 process × 1 thread, 2 × 1 (and 1 × 2).

``--protocol transfer`` (the default; also 1 × 2) runs Leap's supervised meta-step on the
docs/experiments.md convnet (batch 20, K inner steps, a meta-batch of tasks split across the
processes as `metaleap transfer` splits it) on random data drawn lazily from seeded
generators, and reports meta-training tasks per second. ``--protocol rl`` runs the RL
protocol's Leap meta-step (:class:`~metaleap.protocols.rl.study.RLRun`) on four MinAtar games
of ``--env-steps`` environment steps each and reports environment steps per second;
``--protocol multicv`` runs the Multi-CV protocol's Leap meta-step
(:class:`~metaleap.protocols.multicv.study.MetaRun`) on four installed data sets (digits
held out) and reports data sets per second. Each configuration runs in a fresh process group
started with torchrun (a loopback rendezvous) or a plain process. Rank 0 times
``--meta-steps`` meta-steps after one warm-up step and reports the rate, the share of the
time spent in the all-reduce of the contributions, the share spent waiting for the slowest
rank before it (measured with a barrier, benchmark only) and the peak resident memory. The
configurations are interleaved in a rotating order over ``--repeats``; the script prints
medians and the median of the per-repeat speedups over 1 × 1.

    python benchmarks/distributed.py [--protocol transfer|rl|multicv] [--repeats 3]
        [--meta-batch 8] [--steps 20] [--env-steps 4000] [--meta-steps 3]
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
from collections.abc import Callable, Iterator

import common
import torch

from metaleap import distributed
from metaleap.metalearners import Context, SupervisedMetaStep, TaskStream, make_metalearner
from metaleap.models import make_convnet
from metaleap.seeding import generator
from metaleap.shared import Contribution, Processes

BATCH, CLASSES = 20, 20
CONFIGS = {"1 x 1": (1, 1), "2 x 1": (2, 1), "1 x 2": (1, 2)}
#: What each protocol's rate counts, and the configurations it runs.
RATES = {"transfer": "tasks_per_s", "rl": "env_steps_per_s", "multicv": "datasets_per_s"}
PROTOCOL_CONFIGS = {"transfer": list(CONFIGS), "rl": ["1 x 1", "2 x 1"],
                    "multicv": ["1 x 1", "2 x 1"]}
RL_GAMES = ["asterix", "freeway", "seaquest", "space_invaders"]
MULTICV_DATA = ["fashion_mnist", "hiragana", "mnist", "animal_mnist", "digits"]


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
    meta_step, units = {"transfer": transfer_step, "rl": rl_step,
                        "multicv": multicv_step}[args.protocol](args, timed)
    meta_step(0)  # warm-up
    processes.barrier()
    wait[0] = comm[0] = 0.0
    start = time.perf_counter()
    for step in range(1, args.meta_steps + 1):
        meta_step(step)
    seconds = time.perf_counter() - start
    if processes.main:
        print(json.dumps({RATES[args.protocol]: units * args.meta_steps / seconds,
                          "comm_share": comm[0] / seconds, "wait_share": wait[0] / seconds,
                          "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    distributed.shutdown()
    if distributed.launched():
        distributed.exit(0)


MetaStep = tuple[Callable[[int], object], float]


def transfer_step(args: argparse.Namespace, processes: Processes) -> MetaStep:
    """Leap's supervised meta-step on random data; its tasks per meta-step."""
    model = make_convnet(CLASSES, seed=0)
    learner = make_metalearner("leap", model, Context(num_tasks=args.meta_batch))
    step_fn = SupervisedMetaStep(learner, model, inner_lr=0.1)

    def meta_step(step: int) -> None:
        tasks = [TaskStream(t, batches(step, t, args.steps)) for t in range(args.meta_batch)]
        step_fn(tasks, processes)

    return meta_step, args.meta_batch


def rl_step(args: argparse.Namespace, processes: Processes) -> MetaStep:
    """The RL protocol's Leap meta-step on four MinAtar games; its environment steps."""
    from metaleap.protocols.base import RunContext
    from metaleap.protocols.rl.config import resolve_config
    from metaleap.protocols.rl.study import RLRun, RLStudy

    cfg = resolve_config("tiny", [f"pretrain={','.join(RL_GAMES)}", "heldout=breakout",
                                  f"meta_batch={len(RL_GAMES)}", "num_envs=16",
                                  f"train_steps={args.env_steps}",
                                  f"segment_steps={args.env_steps}"])
    run = RLRun(RLStudy(cfg, "cpu", processes=processes), "leap", 0)
    return (lambda step: run.meta_step(step, RunContext())), len(RL_GAMES) * args.env_steps


def multicv_step(args: argparse.Namespace, processes: Processes) -> MetaStep:
    """The Multi-CV protocol's Leap meta-step on four data sets (digits held out), each
    trained for 2 epochs of 20 batches; its data sets."""
    from metaleap.protocols.base import RunContext
    from metaleap.protocols.multicv.config import resolve_config
    from metaleap.protocols.multicv.study import MetaRun, MultiCVStudy

    cfg = resolve_config("tiny", [f"datasets={','.join(MULTICV_DATA)}", "holdout=digits",
                                  "max_train=400", "max_val=50", "max_test=50", "channels=16",
                                  "batch_size=20", "max_epochs=2", "val_every=10",
                                  "patience=100"])
    run = MetaRun(MultiCVStudy(cfg, "cpu", processes=processes), "leap", 0, "digits")
    return (lambda step: run.meta_step(step, RunContext())), len(run.pretrain)


def launch(name: str, args: argparse.Namespace) -> dict[str, float]:
    procs, threads = CONFIGS[name]
    work = [__file__, "--worker", "--protocol", args.protocol, "--threads", str(threads),
            "--meta-batch", str(args.meta_batch), "--steps", str(args.steps),
            "--env-steps", str(args.env_steps), "--meta-steps", str(args.meta_steps)]
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable])
    done = subprocess.run(prefix + work, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        errors = [line.strip() for line in done.stderr.splitlines() if ("rror" in line or
                  "terminate" in line) and "elastic" not in line and "ChildFailed" not in line
                  ] or done.stderr.splitlines() or ["?"]
        raise SystemExit(f"{name} failed: {errors[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(RATES), default="transfer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="inner steps K per task")
    parser.add_argument("--env-steps", type=int, default=4000,
                        help="rl: environment steps per game")
    parser.add_argument("--meta-steps", type=int, default=3, help="timed meta-steps per run")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the raw measurements and the summary here")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    names, rate = PROTOCOL_CONFIGS[args.protocol], RATES[args.protocol]
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(launch(name, args))
            last = runs[name][-1]
            print(f"  repeat {r} {name}: {last[rate]:.2f} {rate}, all-reduce "
                  f"{100 * last['comm_share']:.2f} %, waiting {100 * last['wait_share']:.1f} %",
                  flush=True)
    what = {"transfer": f"convnet, meta-batch {args.meta_batch}, K = {args.steps}",
            "rl": f"RL, {len(RL_GAMES)} MinAtar games x {args.env_steps} env steps",
            "multicv": f"Multi-CV, {len(MULTICV_DATA) - 1} data sets"}[args.protocol]
    print(f"\nLeap meta-training, {what}, {args.meta_steps} timed meta-steps, "
          f"{args.repeats} repeats, torch {torch.__version__}")
    print(f"{'processes x threads':20s} {rate:>16s} {'speedup':>8s} {'all-reduce':>11s} "
          f"{'waiting':>8s} {'peak MiB':>9s}")
    summary = {}
    for name in names:
        speedup = statistics.median(m[rate] / b[rate] for m, b in
                                    zip(runs[name], runs["1 x 1"], strict=True))

        def median(key: str, name: str = name) -> float:
            return statistics.median(m[key] for m in runs[name])

        print(f"{name:20s} {median(rate):16.2f} {speedup:8.2f} "
              f"{100 * median('comm_share'):10.2f}% {100 * median('wait_share'):7.1f}% "
              f"{median('peak_mib'):9.0f}")
        summary[name] = {"speedup": speedup, **{k: median(k) for k in runs[name][0]}}
    common.write(args.json, runs, summary)


if __name__ == "__main__":
    main()
