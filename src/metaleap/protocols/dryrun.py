"""``--dry-run``: a study's budget, priced on this machine before it runs; writes nothing.

The budget counts, per method and seed, the work a study does in its own units: inner SGD
steps for the supervised protocols (meta-training, validation and held-out training; one
step is a forward, backward and update on one batch), environment steps for RL. A few real
steps of every method on the chosen device give seconds per unit, and the two make the
estimate. Under torchrun every rank times its steps at once (so the estimate sees the ranks
compete for the cores) and the work a protocol shares among processes is divided by their
number. Multi-CV tasks stop early, so its budget and estimate are upper bounds. Each protocol
prices its own study (its package's ``dryrun`` module) with the pieces here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Phase:
    """One kind of work of a method, per seed: ``units`` (this process's share) at
    ``seconds`` per unit."""

    name: str
    units: int
    seconds: float


@dataclass
class Budget:
    """What a study will run: per method, its phases per seed, and how many seeds (or
    (held-out set, seed) pairs) each method runs."""

    unit: str
    runs: int
    methods: dict[str, list[Phase]]
    processes: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)

    def units(self, method: str) -> int:
        return sum(p.units for p in self.methods[method])

    def seconds(self, method: str) -> float:
        return self.runs * sum(p.units * p.seconds for p in self.methods[method])

    def render(self) -> str:
        """The budget and the estimate as a table."""
        lines = [f"dry run: {self.runs} run(s) per method"
                 + (f", {self.processes} processes (per-process share)"
                    if self.processes > 1 else ""),
                 f"{'method':10s} {self.unit + ' per run':>26s} {'in all':>16s} "
                 f"{'ms each':>10s} {'estimated wall':>16s}"]
        total_units, total_seconds = 0, 0.0
        for method, phases in self.methods.items():
            units = self.units(method)
            per = self.seconds(method) / max(1, units * self.runs)
            total_units += units * self.runs
            total_seconds += self.seconds(method)
            lines.append(f"{method:10s} {units:26,d} {units * self.runs:16,d} "
                         f"{1000 * per:10.2f} {duration(self.seconds(method)):>16s}")
            for p in phases:
                lines.append(f"  {p.name:8s} {p.units:26,d} {p.units * self.runs:16,d} "
                             f"{1000 * p.seconds:10.2f}")
        lines.append(f"{'all':10s} {'':26s} {total_units:16,d} {'':10s} "
                     f"{duration(total_seconds):>16s}")
        return "\n".join(lines + self.notes)


def duration(seconds: float) -> str:
    """``seconds`` as s, min, h, days or years."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.1f} years"


def timed(fn: Callable[[], Any], sync: torch.device) -> float:
    """Seconds of one call of ``fn`` (after its device finished)."""
    if sync.type == "cuda":
        torch.cuda.synchronize(sync)
    start = time.perf_counter()
    fn()
    if sync.type == "cuda":
        torch.cuda.synchronize(sync)
    return time.perf_counter() - start


def share(n: int, processes: int) -> int:
    """The largest share of ``n`` items that one of ``processes`` processes takes."""
    return math.ceil(n / processes)
