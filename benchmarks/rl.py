"""What Leap costs in the A2C loop of the RL protocol, and that its memory stays flat.

Speed: Breakout (MinAtar, or with ``--env atari`` the ALE game with the DQN-2013 encoder:
84×84 grey, stack 4, frame skip 4), 32 environments, unroll 5 (the protocol's defaults),
``--updates`` A2C updates per measurement, plain and with Leap observing every RMSProp step,
interleaved; prints the environment steps per second of each (one rank's throughput at one
thread) and the median of the paired time ratios (Leap / plain), whose excess over 1 is
Leap's overhead (target ≤ 5 %).

Memory: one game trained for 10⁴ and then 10⁵ updates (1 environment, unroll 1, so that 10⁵
updates take minutes), plain and with Leap, each in a child process; prints the peak resident
memory after each. Leap's must not grow with the number of updates: it keeps three flat
buffers, not the trajectory.

    python benchmarks/rl.py [--env minatar|atari] [--updates 300] [--repeats 7]
                            [--memory-updates 10000,100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import common
import torch

from metaleap import seeding
from metaleap.metalearners import LeapLearner
from metaleap.metalearners.base import Context
from metaleap.methods import LeapOptions
from metaleap.protocols import rl

GAME = "breakout"
#: The preset each ``--env`` starts from (its games replaced by ``GAME``).
PRESET = {"minatar": "minatar", "atari": "atari-paper"}


def study(env: str, **fields: object) -> rl.RLStudy:
    cfg = dataclasses.replace(rl.resolve_config(PRESET[env]), pretrain=[GAME], heldout=[GAME],
                              **fields)
    return rl.RLStudy(cfg)


def encoder_leap(agent: torch.nn.Module) -> LeapLearner:
    return LeapLearner(agent, LeapOptions(metric="energy"),
                       Context(exclude=lambda n: not n.startswith("encoder.")))


def timed(s: rl.RLStudy, updates: int, with_leap: bool) -> float:
    """Seconds for ``updates`` A2C updates of one game (environment set-up excluded)."""
    agent = s.agent(GAME, 0, "bench")
    optimizer = s.optimizer(agent)
    rl.a2c_segment(agent, optimizer, s.cfg, s.games[GAME], 2, 0,  # warm-up
                   seeding.generator(0, "bench"), rl.Episodes(), 0)
    g = seeding.generator(0, "bench", updates)
    if not with_leap:
        start = time.perf_counter()
        rl.a2c_segment(agent, optimizer, s.cfg, s.games[GAME], updates, 1, g, rl.Episodes(), 0)
        return time.perf_counter() - start
    learner = encoder_leap(agent)
    start = time.perf_counter()
    with learner.task(agent, optimizer) as t:
        final = rl.a2c_segment(agent, optimizer, s.cfg, s.games[GAME], updates, 1, g,
                               rl.Episodes(), 0, t.report, closing=True)
        t.finish(final)
    learner.meta_update()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(env: str, with_leap: bool, marks: list[int]) -> None:
    """Train one game up to each mark of updates; print the peak RSS at each (JSON)."""
    s = study(env, num_envs=1, unroll=1, segment_steps=1)
    agent = s.agent(GAME, 0, "bench")
    optimizer = s.optimizer(agent)
    task = encoder_leap(agent).task(agent, optimizer) if with_leap else nullcontext()
    peaks, done, final = [], 0, None
    with task as t:
        for i, mark in enumerate(marks):
            final = rl.a2c_segment(agent, optimizer, s.cfg, s.games[GAME], mark - done, i,
                                   seeding.generator(0, "bench", i), rl.Episodes(), 0,
                                   t.report if t else lambda loss: None,
                                   closing=with_leap and i + 1 == len(marks))
            done = mark
            peaks.append(peak_rss_mb())
        if t is not None:
            t.finish(final)
    print(json.dumps(peaks))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", choices=sorted(PRESET), default="minatar")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--memory-updates", default="10000,100000")
    p.add_argument("--child", choices=("plain", "leap"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the raw measurements and the summary here")
    args = p.parse_args()
    torch.set_num_threads(1)
    marks = [int(m) for m in args.memory_updates.split(",")]
    if args.child:
        memory_child(args.env, args.child == "leap", marks)
        return

    s = study(args.env)
    steps = args.updates * s.cfg.num_envs * s.cfg.unroll
    plain, leap = [], []
    for _ in range(args.repeats):
        plain.append(timed(s, args.updates, False))
        leap.append(timed(s, args.updates, True))
    ratios = [b / a for a, b in zip(plain, leap, strict=True)]
    print(f"A2C on {args.env} {GAME}, {s.cfg.num_envs} envs × unroll {s.cfg.unroll}, "
          f"{args.updates} updates, {args.repeats} interleaved repeats, 1 thread:")
    print(f"  plain: {steps / statistics.median(plain):,.0f} env steps/s (median)")
    print(f"  Leap:  {steps / statistics.median(leap):,.0f} env steps/s (median)")
    print(f"  time ratio Leap / plain: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"Peak resident memory (MiB) after {', '.join(f'{m:,}' for m in marks)} updates "
          "(1 env, unroll 1; a child process each):")
    peak_mib = {}
    for kind in ("plain", "leap"):
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--env", args.env,
                              "--memory-updates", args.memory_updates],
                             capture_output=True, text=True, check=True)
        peak_mib[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {kind:5s}: " + ", ".join(f"{p:.1f}" for p in peak_mib[kind]))
    common.write(args.json, {"plain_seconds": plain, "leap_seconds": leap, "env_steps": steps},
                 {"plain_steps_per_s": steps / statistics.median(plain),
                  "leap_steps_per_s": steps / statistics.median(leap),
                  "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                  "max_ratio": max(ratios), "peak_mib_after_updates": {
                      "updates": marks, **peak_mib}})


if __name__ == "__main__":
    main()
