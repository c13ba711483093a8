"""What Leap costs on top of ordinary training, and that its memory does not grow with K.

Runs 100 SGD steps at batch 20, plain and with Leap observing every step, interleaved, and
prints the median of the paired time ratios (Leap / plain) in two regimes:

- compute-bound: the convnet of docs/experiments.md (4 × conv64, 28×28 inputs, 20 classes);
- parameter-bound: an MLP 784-1024-1024-20 (1.9M parameters, tiny batch), where Leap's
  per-step vector work is a real share of the step.

Then the peak resident memory of a child process that trains K = 10, 100, 1000 steps with
Leap (it must stay flat: Leap keeps three flat buffers, not the trajectory).

``--old SRC`` also times another tree's ``metaleap/leap.py`` (loaded from ``SRC`` by path, as
module ``old_leap``) in the same process, interleaved with this tree's in a rotating order,
each paired with the same repeat's plain run; ``--json`` writes every raw time.

    python benchmarks/overhead.py [--repeats 15] [--device cpu] [--threads 1]
    git -C . archive 83673a5 src | tar -x -C /tmp/old-mlp
    python benchmarks/overhead.py --old /tmp/old-mlp/src --json benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from metaleap import Leap
from metaleap.models import ConvNet


def leap_class(src: str | None) -> type[Leap]:
    """This tree's :class:`Leap`, or the one in ``src/metaleap/leap.py`` (loaded by path)."""
    if src is None:
        return Leap
    spec = importlib.util.spec_from_file_location("old_leap", f"{src}/metaleap/leap.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_leap"] = module
    spec.loader.exec_module(module)
    return module.Leap


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


def overhead(kind: str, repeats: int, device: str, leaps: dict[str, type[Leap]]) -> dict:
    """Time plain and each Leap variant, interleaved (rotating order); print and return."""
    model = make_model(kind, device)
    learners = {name: cls(model).to(device) for name, cls in leaps.items()}
    data = batches(100, device)
    names = ["plain", *learners]
    for _ in range(2):  # warm-up
        for name in names:
            train(model, data, learners.get(name))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(train(model, data, learners.get(name)))
    params = sum(p.numel() for p in model.parameters())
    plain = times["plain"]
    summary = {}
    for name in learners:
        ratios = [b / a for a, b in zip(plain, times[name], strict=True)]
        summary[name] = {"plain_ms": statistics.median(plain) * 1e3,
                         "leap_ms": statistics.median(times[name]) * 1e3,
                         "median_ratio": statistics.median(ratios),
                         "min_ratio": min(ratios), "max_ratio": max(ratios)}
        label = kind if len(learners) == 1 else f"{kind} {name}"
        print(f"{label:12s} {params / 1e6:5.2f}M params  plain "
              f"{statistics.median(plain) * 1e3:7.1f} ms  leap "
              f"{statistics.median(times[name]) * 1e3:7.1f} ms"
              f"  median ratio {statistics.median(ratios):.3f}"
              f"  (min {min(ratios):.3f}, max {max(ratios):.3f})", flush=True)
    return {"params": params, "seconds": times, "summary": summary}


def peak_memory_child(steps: int, device: str, src: str | None) -> None:
    """In a fresh process: one Leap task of ``steps`` MLP steps; print peak memory in MiB."""
    model = make_model("mlp", device)
    leap = leap_class(src)(model).to(device)
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
    parser.add_argument("--old", help="another tree's src folder: time its leap.py as well")
    parser.add_argument("--json", help="write every raw time and the summary here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--leap-src", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(args.memory_child, args.device, args.leap_src)
        return
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    label = "peak CUDA memory" if args.device.startswith("cuda") else "peak RSS"
    trees = {"new": None, **({"old": args.old} if args.old else {})}
    report: dict = {"command": " ".join(sys.argv), "torch": torch.__version__,
                    "device": args.device, "threads": torch.get_num_threads(),
                    "repeats": args.repeats, "steps": 100, "batch": 20, "old": args.old,
                    "peak_memory_mib": {}, "overhead": {}}
    for name, src in trees.items():
        report["peak_memory_mib"][name] = {}
        for k in (10, 100, 1000):
            cmd = [sys.executable, __file__, "--memory-child", str(k), "--device", args.device,
                   "--threads", str(args.threads), *(["--leap-src", src] if src else [])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            report["peak_memory_mib"][name][k] = float(out)
            who = "" if len(trees) == 1 else f" ({name})"
            print(f"{label} with Leap{who}, MLP, K = {k:4d}: {float(out):8.1f} MiB", flush=True)
    leaps = {name: leap_class(src) for name, src in trees.items()}
    for kind in ("mlp", "convnet"):
        report["overhead"][kind] = overhead(kind, args.repeats, args.device, leaps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
