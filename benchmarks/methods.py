"""Cost of one meta-step for every method, and how its peak memory grows with K.

Time: one meta-step of each method (the docs/experiments.md convnet, batch 20, K inner steps, a
small meta-batch), the methods interleaved in a rotating order within each repeat; prints the median
seconds and the median of the per-repeat ratios to Leap's time.

Memory: one fresh child process per (method, K) runs a warm-up meta-step at K = 1, resets
the kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``), runs one
meta-step at K and reads ``VmHWM`` from ``/proc/self/status``: the peak resident memory of
the whole process (torch included) during the K run, and its growth over the resident size
just before it. (``getrusage().ru_maxrss`` cannot be reset and, after fork + exec, can carry
the parent's peak; where clear_refs is refused the peak includes the warm-up.) Leap, Reptile
and FOMAML keep O(1) state per task, so their peak stays flat up to K = 1000; MAML keeps the
unrolled graph of all K steps, so its peak grows linearly (run with short horizons only).

Data are random images drawn lazily from a seeded generator (no batch is kept), so neither
measurement includes a dataset. ``--threads`` sets torch's intra-op threads (default 1: the
small per-step kernels gain little from more and suffer badly on a shared machine).

    python benchmarks/methods.py [--steps 100] [--meta-batch 4] [--repeats 5]
        [--maml-time-steps 100] [--no-memory] [--no-time]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import common
import torch

from metaleap import methods as registry
from metaleap.metalearners import Context, SupervisedMetaStep, TaskStream, make_metalearner
from metaleap.models import make_convnet
from metaleap.seeding import generator

BATCH, CLASSES = 20, 20
#: Where the timing runs (``--device``); the memory measurement is the CPU's.
DEVICE = torch.device("cpu")
MEMORY_STEPS = {"maml": (1, 5, 10, 20), "leap": (1, 10, 100, 1000),
                "reptile": (1, 10, 100, 1000), "fomaml": (1, 10, 100, 1000)}


def batches(seed: int, task: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps + 1`` random batches, drawn one at a time."""
    g = generator(seed, "bench-data", task)
    for _ in range(steps + 1):
        x, y = torch.rand(BATCH, 1, 28, 28, generator=g), torch.randint(0, CLASSES, (BATCH,),
                                                                        generator=g)
        yield x.to(DEVICE), y.to(DEVICE)


def tasks(seed: int, n: int, steps: int) -> list[TaskStream]:
    return [TaskStream(t, batches(seed, t, steps)) for t in range(n)]


def learner(method: str, meta_batch: int) -> SupervisedMetaStep:
    """The supervised meta-step of ``method`` (inner and meta lr 0.1) on the docs/experiments.md
    convnet."""
    model = make_convnet(CLASSES, seed=0).to(DEVICE)
    ml = make_metalearner(method, model, Context(num_tasks=meta_batch, inner_lr=0.1))
    return SupervisedMetaStep(ml, model, inner_lr=0.1)


def time_methods(methods: list[str], steps: dict[str, int], meta_batch: int,
                 repeats: int) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    learners = {m: learner(m, meta_batch) for m in methods}
    for step in learners.values():  # warm-up: first-call allocations and kernel selection
        step(tasks(99, meta_batch, 1))
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for m in order:
            data = tasks(r, meta_batch, steps[m])
            common.sync(DEVICE)
            start = time.perf_counter()
            learners[m](data)
            common.sync(DEVICE)
            seconds[m].append(time.perf_counter() - start)
            print(f"  repeat {r} {m:9s} K={steps[m]:4d} {seconds[m][-1]:8.2f} s", flush=True)
    print(f"\nmeta-step time, batch {BATCH}, meta-batch {meta_batch}, {repeats} repeats, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'method':10s} {'K':>5s} {'median s':>9s} {'ms/step':>8s} {'× leap':>8s}")
    summary = {}
    for m in methods:
        ratio = statistics.median(s / base for s, base in zip(seconds[m], seconds["leap"],
                                                             strict=True))
        median = statistics.median(seconds[m])
        per_step = 1000 * median / (meta_batch * steps[m])
        print(f"{m:10s} {steps[m]:5d} {median:9.2f} {per_step:8.1f} {ratio:8.2f}")
        summary[m] = {"steps": steps[m], "median_s": median, "ms_per_step": per_step,
                      "ratio_to_leap": ratio}
    return seconds, summary


def measure(method: str, steps: int) -> None:
    """Child process: resident KiB before, and peak during, one meta-step at K (after K = 1)."""
    step = learner(method, 1)
    step(tasks(0, 1, 1))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
    except OSError:
        pass
    before = common.status_kib("VmRSS")
    step(tasks(1, 1, steps))
    print(json.dumps({"before_kib": before, "peak_kib": common.status_kib("VmHWM")}))


def memory_methods(methods: list[str], threads: int) -> dict[str, dict[int, dict[str, int]]]:
    print(f"\npeak resident memory of one meta-step (1 task, batch {BATCH}), "
          "one process per row")
    print(f"{'method':10s} {'K':>5s} {'peak MiB':>9s} {'growth MiB':>11s}")
    peaks: dict[str, dict[int, dict[str, int]]] = {}
    for m in methods:
        for k in MEMORY_STEPS.get(m, ()):
            out = subprocess.run([sys.executable, __file__, "--measure", m, str(k),
                                  "--threads", str(threads)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{m:10s} {k:5d} {r['peak_kib'] / 1024:9.0f} "
                  f"{(r['peak_kib'] - r['before_kib']) / 1024:11.0f}", flush=True)
            peaks.setdefault(m, {})[k] = r
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="inner steps K for the timing")
    parser.add_argument("--maml-time-steps", type=int, default=None,
                        help="K for MAML's timing (default: --steps)")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the timing runs (cpu, cuda)")
    learners = sorted(m.name for m in registry.METHODS.values() if m.kind == registry.META_BATCH)
    parser.add_argument("--methods", nargs="+", default=learners,
                        help="methods to time (leap is always included)")
    parser.add_argument("--no-time", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the raw measurements and the summary here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.measure:
        measure(args.measure[0], int(args.measure[1]))
        return
    methods = ["leap"] + [m for m in args.methods if m != "leap"]
    raw: dict[str, object] = {}
    summary: dict[str, object] = {}
    if not args.no_time:
        steps = {m: args.steps for m in methods}
        steps["maml"] = args.maml_time_steps or args.steps
        raw["seconds"], summary["time"] = time_methods(methods, steps, args.meta_batch,
                                                       args.repeats)
    if not args.no_memory:
        summary["peak_kib"] = memory_methods([m for m in methods if m in MEMORY_STEPS],
                                             args.threads)
    common.write(args.json, raw, summary)


if __name__ == "__main__":
    main()
