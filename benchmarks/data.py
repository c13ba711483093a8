"""Is data the bottleneck? Images/s of augmented task sampling vs the convnet's training.

Data: ``base.batches`` with ``RandomAffine`` (the ranges of docs/experiments.md), batch 20, from
a synthetic 20-way 28×28 task (15 images per class). Training: the docs/experiments.md convnet
(4 × [conv 3×3, 64 ch → BatchNorm → ReLU → max-pool 2] → linear 64 → 20), SGD lr 0.1, batch 20,
forward + backward + step. Repeats are interleaved (data, train, data, train, ...) so both see
the same machine state; the medians and their ratio are printed. Data must be at least 10×
faster.

    python benchmarks/data.py [--repeats 7] [--data-steps 500] [--train-steps 50] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import common
import torch
import torch.nn.functional as F
from torch import nn

from metaleap import seeding
from metaleap.tasks import base
from metaleap.tasks.augment import RandomAffine


def synthetic_task(ways: int = 20, shots: int = 15, size: int = 28, seed: int = 0) -> base.Task:
    """A ``ways``-class task of random bar-and-blob 28×28 images (ink high)."""
    g = seeding.generator(seed, "benchmark", "task")
    n = ways * shots
    x = torch.zeros(n, 1, size, size)
    corners = torch.randint(4, size - 12, (n, 2, 2), generator=g)
    for i in range(n):
        for (r, c) in corners[i].tolist():
            x[i, 0, r:r + 8, c:c + 3] = 1.0
    x = x.clamp_(0, 1)
    y = torch.arange(ways).repeat_interleave(shots)
    return base.Task("synthetic", ways, x, y, x[:ways], y[:ways])


def convnet(num_classes: int = 20) -> nn.Module:
    """The docs/experiments.md network: ``metaleap.models.make_convnet`` if present, else a local
    copy."""
    try:
        from metaleap.models import make_convnet
        return make_convnet(num_classes, seed=0)
    except ImportError:
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1), nn.BatchNorm2d(64),
                       nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, num_classes))


def time_data(task: base.Task, steps: int, seed: int, batch: int = 20) -> float:
    """Images/s of ``base.batches`` with augmentation."""
    aug = RandomAffine()
    g = seeding.generator(seed, "benchmark", "data")
    t = time.perf_counter()
    n = 0
    for x, _ in base.batches(task, batch, steps, g, augment=aug):
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def time_train(model: nn.Module, opt: torch.optim.Optimizer,
               data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Images/s of SGD steps (forward, backward, update) on prepared batches."""
    model.train()
    t = time.perf_counter()
    n = 0
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--data-steps", type=int, default=500)
    p.add_argument("--train-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    p.add_argument("--json", help="write the raw measurements and the summary here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = synthetic_task()
    model = convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = seeding.generator(0, "benchmark", "train")
    train_batches = list(base.batches(task, 20, args.train_steps, g, augment=RandomAffine()))

    time_data(task, 50, seed=-1)  # warm-up
    time_train(model, opt, train_batches[:5])
    data_ips, train_ips = [], []
    for r in range(args.repeats):
        data_ips.append(time_data(task, args.data_steps, seed=r))
        train_ips.append(time_train(model, opt, train_batches))

    d, t = statistics.median(data_ips), statistics.median(train_ips)
    ratios = [a / b for a, b in zip(data_ips, train_ips, strict=True)]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"repeats {args.repeats} (interleaved), batch 20, data steps {args.data_steps}, "
          f"train steps {args.train_steps}")
    print(f"data  (batches + RandomAffine): median {d:10.0f} images/s  "
          f"[{min(data_ips):.0f} .. {max(data_ips):.0f}]")
    print(f"train (convnet SGD lr 0.1)    : median {t:10.0f} images/s  "
          f"[{min(train_ips):.0f} .. {max(train_ips):.0f}]")
    print(f"ratio data/train: {d / t:.1f}x (median of per-repeat ratios "
          f"{statistics.median(ratios):.1f}x)  -> {'OK' if d >= 10 * t else 'FAIL'} (need >= 10x)")
    common.write(args.json, {"data_images_per_s": data_ips, "train_images_per_s": train_ips},
                 {"data_images_per_s": d, "train_images_per_s": t, "ratio": d / t,
                  "median_ratio": statistics.median(ratios)})


if __name__ == "__main__":
    main()
