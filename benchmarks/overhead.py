"""What Leap costs on top of ordinary training, and that its memory does not grow with K.

Runs 100 SGD steps at batch 20, plain and with Leap observing every step, interleaved, and
prints the median of the paired time ratios (Leap / plain) in two regimes:

- compute-bound: the convnet of docs/experiments.md (4 × conv64, 28×28 inputs, 20 classes);
- parameter-bound: an MLP 784-1024-1024-20 (1.9M parameters, tiny batch), where Leap's
  per-step vector work is a real share of the step.

Then the peak resident memory of a child process that trains K = 10, 100, 1000 steps with
Leap (it must stay flat: Leap keeps three flat buffers, not the trajectory).

    python benchmarks/overhead.py [--repeats 15] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from metaleap import Leap
from metaleap.models import ConvNet


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                         nn.ReLU(), nn.Linear(1024, 20))


def make_model(kind: str, device: str) -> nn.Module:
    torch.manual_seed(0)  # benchmark set-up only
    return (ConvNet(num_classes=20) if kind == "convnet" else mlp()).to(device)


def train(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]],
          leap: Leap | None) -> float:
    """Seconds for one task of len(data) − 1 SGD steps (+ the final loss when Leap runs)."""
    sync = torch.cuda.synchronize if data[0][0].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if leap is not None:
        leap.begin_task(model)
    for x, y in data[:-1]:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if leap is not None:
            leap.observe(model, loss)
        opt.step()
        opt.zero_grad()
    if leap is not None:
        x, y = data[-1]
        with torch.no_grad():
            leap.end_task(model, nn.functional.cross_entropy(model(x), y))
    sync()
    return time.perf_counter() - start


def batches(steps: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(20, 1, 28, 28, generator=g).to(device),
             torch.randint(0, 20, (20,), generator=g).to(device)) for _ in range(steps + 1)]


def overhead(kind: str, repeats: int, device: str) -> None:
    model = make_model(kind, device)
    leap = Leap(model).to(device)
    data = batches(100, device)
    for _ in range(2):  # warm-up
        train(model, data, None)
        train(model, data, leap)
    plain, with_leap = [], []
    for _ in range(repeats):
        plain.append(train(model, data, None))
        with_leap.append(train(model, data, leap))
    ratios = [b / a for a, b in zip(plain, with_leap, strict=True)]
    params = sum(p.numel() for p in model.parameters())
    print(f"{kind:8s} {params / 1e6:5.2f}M params  plain {statistics.median(plain) * 1e3:7.1f} ms"
          f"  leap {statistics.median(with_leap) * 1e3:7.1f} ms"
          f"  median ratio {statistics.median(ratios):.3f}"
          f"  (min {min(ratios):.3f}, max {max(ratios):.3f})")


def peak_memory_child(steps: int, device: str) -> None:
    """In a fresh process: one Leap task of ``steps`` MLP steps; print peak memory in MiB."""
    model = make_model("mlp", device)
    leap = Leap(model).to(device)
    data = batches(1, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    leap.begin_task(model)
    x, y = data[0]
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        leap.observe(model, loss)
        opt.step()
        opt.zero_grad()
    leap.end_task(model, loss.detach())
    if device.startswith("cuda"):
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(args.memory_child, args.device)
        return
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    label = "peak CUDA memory" if args.device.startswith("cuda") else "peak RSS"
    for k in (10, 100, 1000):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(k),
                              "--device", args.device], capture_output=True, text=True,
                             check=True).stdout
        print(f"{label} with Leap, MLP, K = {k:4d}: {float(out):8.1f} MiB")
    overhead("mlp", args.repeats, args.device)
    overhead("convnet", args.repeats, args.device)


if __name__ == "__main__":
    main()
