"""One benchmark of two commits, side by side: each tree's own copy of the script, alternated.

Runs ``BENCHMARK ARGS`` (a script of ``benchmarks/`` and its arguments) ``--repeats`` times
from each tree, the old one first in even repeats and second in odd ones; each run imports
``metaleap`` from its own tree's ``src`` and writes its ``--json``. Each tree runs its own
copy of the script, or with ``--this-script`` both run this tree's (for a script whose use
of ``metaleap`` both trees support, newer than the old tree's copy). Every number of the
scripts' summaries is compared: the median over repeats from each tree and the median of the
per-repeat ratios new / old (above 1: the new tree takes longer, for a time). ``--json``
writes every run's summary and the comparison.

    git worktree add /tmp/old HEAD~1
    python benchmarks/compare.py --old /tmp/old --repeats 3 -- methods.py --steps 20 --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent.parent


def numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a nested summary, keyed by its dotted path."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out.update(numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.rstrip("."): float(tree)}
    return {}


def run(root: Path, script: list[str], scripts: Path) -> dict[str, Any]:
    """The summary of ``script`` (from the folder ``scripts``) run on the tree at ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        env = {**os.environ, "PYTHONPATH": f"{root / 'src'}:{scripts}"}
        subprocess.run([sys.executable, str(scripts / script[0]), *script[1:],
                        "--json", str(out)], check=True, env=env, cwd=root,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the other tree (a worktree's root)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--this-script", action="store_true",
                        help="run this tree's copy of the script on both trees")
    parser.add_argument("--json", help="write every summary and the comparison here")
    parser.add_argument("script", nargs=argparse.REMAINDER,
                        help="-- SCRIPT [ARGS]: a benchmark of benchmarks/ and its arguments")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    trees = {"old": Path(args.old).resolve(), "new": HERE}
    summaries: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for r in range(args.repeats):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            scripts = HERE / "benchmarks" if args.this_script else trees[name] / "benchmarks"
            summaries[name].append(run(trees[name], script, scripts))
            print(f"repeat {r} {name} done", flush=True)
    old = [numbers(s) for s in summaries["old"]]
    new = [numbers(s) for s in summaries["new"]]
    keys = [k for k in new[0] if all(k in o for o in old)]
    comparison = {}
    print(f"\n{' '.join(script)}: {args.repeats} alternated repeats per tree")
    print(f"{'figure':44s} {'old':>12s} {'new':>12s} {'new/old':>8s}")
    for key in keys:
        a, b = [o[key] for o in old], [n[key] for n in new]
        ratios = [y / x for x, y in zip(a, b, strict=True) if x]
        ratio = statistics.median(ratios) if ratios else float("nan")
        comparison[key] = {"old": statistics.median(a), "new": statistics.median(b),
                           "ratio": ratio}
        print(f"{key:44s} {statistics.median(a):12.4g} {statistics.median(b):12.4g} "
              f"{ratio:8.3f}")
    common.write(args.json, summaries, comparison)


if __name__ == "__main__":
    main()
