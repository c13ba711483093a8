"""Batched tasks against sequential tasks: tasks per second and peak memory, side by side.

Three comparisons, each variant interleaved with the others in a rotating order within every
repeat, on the transfer protocol's convnet and data path (a task of random images on the
device, batches drawn by ``tasks.base.batches`` with the random affine augmentation):

- ``step``: one inner SGD step of T tasks: T separate networks (sequential), the stacked
  network of grouped convolutions (``grouped``, what ``task_batching`` uses) and
  ``torch.func.vmap`` over ``functional_call`` with stacked parameters and buffers (``vmap``,
  the alternative it was chosen over);
- ``meta-METHOD``: one meta-step of T tasks × K inner steps, ``SupervisedMetaStep`` against
  ``BatchedMetaStep``;
- ``eval``: T held-out tasks × K steps from one initialization, ``train_task`` per task
  against ``train_tasks``.

Each reports the median seconds, tasks per second (task-steps per second for ``step``), the
median of the per-repeat speed-ups over the sequential variant, and the peak memory of one
call: on CUDA ``torch.cuda.max_memory_allocated`` (reset before the call), on the CPU the
growth of the resident set's high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``; where that is refused the peak of the whole process so far).

    python benchmarks/batched.py [--device cpu|cuda] [--tasks 20] [--steps 10] [--image-size 28]
        [--repeats 5] [--threads 1] [--methods leap reptile fomaml] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import common
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from metaleap.metalearners import Context, SupervisedMetaStep, TaskStream, make_metalearner
from metaleap.models import make_convnet
from metaleap.protocols.batched import BatchedMetaStep, task_losses, train_tasks
from metaleap.protocols.evaluation import train_task
from metaleap.seeding import generator
from metaleap.stacked import StackedNet
from metaleap.tasks.augment import RandomAffine
from metaleap.tasks.base import Task, batches

CLASSES, BATCH, LR = 20, 20, 0.1


def make_tasks(count: int, size: int, device: torch.device) -> list[Task]:
    """``count`` tasks of 15 random images per class (20 classes), on ``device``."""
    out = []
    for t in range(count):
        g = generator(0, "bench-batched-task", t)
        y = torch.arange(CLASSES).repeat_interleave(15)
        x = torch.rand(len(y), 1, size, size, generator=g)
        out.append(Task(f"t{t}", CLASSES, x, y, x[:100], y[:100]).to(device))
    return out


def peak_mib(fn: Callable[[], None], device: torch.device) -> float:
    """Peak memory of one call of ``fn`` (see the module doc)."""
    if device.type == "cuda":
        common.sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        common.sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = common.status_kib("VmRSS")
    fn()
    return (common.status_kib("VmHWM") - before) / 1024


# ---------------------------------------------------------------- the variants
def step_variants(tasks: list[Task], size: int, device: torch.device
                  ) -> dict[str, Callable[[int], None]]:
    """One inner step of every task: sequential networks, grouped convolutions, vmap."""
    count = len(tasks)
    model = make_convnet(CLASSES, 0, image_size=size).to(device)
    state = model.state_dict()
    augment = RandomAffine()

    def data(r: int) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = [next(batches(t, BATCH, 1, generator(r, "bench-step", i), augment))
                 for i, t in enumerate(tasks)]
        return torch.stack([x for x, _ in drawn]), torch.stack([y for _, y in drawn])

    nets = [make_convnet(CLASSES, 0, image_size=size).to(device) for _ in range(count)]
    opts = [torch.optim.SGD(n.parameters(), lr=LR) for n in nets]

    def sequential(r: int) -> None:
        x, y = data(r)
        for t, (net, opt) in enumerate(zip(nets, opts, strict=True)):
            F.cross_entropy(net(x[t]), y[t]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    stacked = StackedNet(model, count, state)

    def grouped(r: int) -> None:
        x, y = data(r)
        task_losses(stacked(x), y).sum().backward()
        with torch.no_grad():
            for p in stacked.params.values():
                p.sub_(LR * p.grad)
                p.grad = None

    params = {n: p.detach().unsqueeze(0).repeat(count, *[1] * p.dim())
              for n, p in model.named_parameters()}
    buffers = {n: b.unsqueeze(0).repeat(count, *[1] * b.dim()) for n, b in model.named_buffers()}

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, b), (x,)), y)

    per_task_grad = vmap(grad(loss))

    def vmapped(r: int) -> None:
        x, y = data(r)
        grads = per_task_grad(params, buffers, x, y)
        torch._foreach_add_(list(params.values()), list(grads.values()), alpha=-LR)

    return {"sequential": sequential, "grouped": grouped, "vmap": vmapped}


def meta_variants(method: str, tasks: list[Task], steps: int, size: int,
                  device: torch.device) -> dict[str, Callable[[int], None]]:
    """One meta-step of ``method``, task by task and batched."""
    augment = RandomAffine()

    def streams(r: int) -> list[TaskStream]:
        return [TaskStream(i, batches(t, BATCH, steps + 1, generator(r, "bench-meta", i),
                                      augment)) for i, t in enumerate(tasks)]

    def learner() -> tuple[Any, torch.nn.Module]:
        model = make_convnet(CLASSES, 0, image_size=size).to(device)
        return make_metalearner(method, model, Context(num_tasks=len(tasks))), model

    one_by_one = SupervisedMetaStep(*learner(), inner_lr=LR)
    together = BatchedMetaStep(*learner(), inner_lr=LR)

    def sequential(r: int) -> None:
        one_by_one(streams(r))

    def batched(r: int) -> None:
        together(streams(r))

    return {"sequential": sequential, "batched": batched}


def eval_variants(tasks: list[Task], steps: int, size: int, device: torch.device
                  ) -> dict[str, Callable[[int], None]]:
    """Held-out training of every task from one initialization."""
    augment = RandomAffine()

    def make() -> torch.nn.Module:
        return make_convnet(CLASSES, 0, image_size=size).to(device)

    init = make().state_dict()

    def gens(r: int) -> list[torch.Generator]:
        return [generator(r, "bench-eval", i) for i in range(len(tasks))]

    def sequential(r: int) -> None:
        for task, g in zip(tasks, gens(r), strict=True):
            train_task(make, init, task, steps, LR, BATCH, g, augment)

    def together(r: int) -> None:
        train_tasks(make, init, tasks, steps, LR, BATCH, gens(r), augment)

    return {"sequential": sequential, "batched": together}


# ---------------------------------------------------------------- timing
def compare(name: str, variants: dict[str, Callable[[int], None]], work: int, repeats: int,
            device: torch.device) -> dict[str, Any]:
    """Time the variants interleaved (rotating order); ``work`` tasks (or task-steps) each."""
    for fn in variants.values():  # warm-up: allocations, kernel selection
        fn(-1)
    common.sync(device)
    names = list(variants)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            common.sync(device)
            start = time.perf_counter()
            variants[n](r)
            common.sync(device)
            seconds[n].append(time.perf_counter() - start)
    base = seconds["sequential"]
    out: dict[str, Any] = {"work": work}
    for n in names:
        median = statistics.median(seconds[n])
        out[n] = {"seconds": seconds[n], "median_s": median, "per_s": work / median,
                  "speedup": statistics.median(b / s for b, s in zip(base, seconds[n],
                                                                      strict=True)),
                  "peak_mib": peak_mib(lambda n=n: variants[n](repeats), device)}
        print(f"{name:14s} {n:10s} {median:8.3f} s  {work / median:8.1f}/s  "
              f"×{out[n]['speedup']:5.2f}  peak {out[n]['peak_mib']:8.1f} MiB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--tasks", type=int, default=20, help="T, tasks trained together")
    parser.add_argument("--steps", type=int, default=10, help="K, inner steps per task")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--methods", nargs="*", default=["leap", "reptile", "fomaml"])
    parser.add_argument("--no-step", action="store_true", help="skip the one-step comparison")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out comparison")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tasks = make_tasks(args.tasks, args.image_size, device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    print(f"{args.tasks} tasks × {args.steps} steps, {args.image_size} px, batch {BATCH}, "
          f"{device} ({name}), {torch.get_num_threads()} thread(s), {args.repeats} repeats")
    results: dict[str, Any] = {}
    if not args.no_step:
        results["step"] = compare("step", step_variants(tasks, args.image_size, device),
                                  args.tasks, args.repeats, device)
    for method in args.methods:
        results[f"meta-{method}"] = compare(
            f"meta-{method}", meta_variants(method, tasks, args.steps, args.image_size, device),
            args.tasks, args.repeats, device)
    if not args.no_eval:
        results["eval"] = compare("eval", eval_variants(tasks, args.steps, args.image_size,
                                                        device),
                                  args.tasks, args.repeats, device)
    if args.json:
        record = {"command": " ".join(["python", *sys.argv]), "device": str(device),
                  "device_name": name, "torch": torch.__version__,
                  "threads": torch.get_num_threads(),
                  "config": {"tasks": args.tasks, "steps": args.steps,
                             "image_size": args.image_size, "batch": BATCH,
                             "repeats": args.repeats},
                  "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
