"""What makes two runs identical: one transfer study run under settings that should not change
its results, and under settings that may, each compared number by number with a baseline run.

Every variant runs ``metaleap transfer --preset PRESET`` in a fresh process with one setting
changed, and every float of its ``results.json`` (the provenance and the meta-training tally
left out) is compared with the baseline's. Printed per variant: how many numbers differ, and
the largest per-task difference of train-error AUC and of test error, in points.

    python benchmarks/identical.py [--preset tiny] [--old SRC] [--json FILE]

``--old SRC`` adds the two-process comparison for another tree's ``src`` (for example the
commit before the meta-batch sums went to float64: ``git archive f6c0ea9 src | tar -x -C
/tmp/old``). Variants: the same command again; 2 torch threads; torch's AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, an older CPU) and its portable ones
(``ATEN_CPU_CAPABILITY=default``); 2 processes under torchrun, two tasks of a 4-task
meta-batch each. docs/experiments.md, "What makes two runs identical", quotes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FOUR_TASKS = ["--set", "num_pretrain=4", "--set", "meta_batch=4"]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def numbers(value: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a results.json by its path, less the provenance and the tally."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key not in ("provenance", "meta_training")
                for k, v in numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}[{i}]")
                .items()}
    return {path: value}


def run(out: Path, args: list[str], env: dict[str, str], src: str | None = None,
        processes: int = 1) -> dict[str, Any]:
    """One study in a fresh process; its results.json's numbers."""
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable])
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    if src is not None:
        environ["PYTHONPATH"] = src
    subprocess.run([*launch, "-m", "metaleap", "transfer", *args, "--no-progress",
                    "--out", str(out)], check=True, env=environ, capture_output=True)
    return numbers(json.loads((out / "results.json").read_text()))


def compare(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """How many numbers differ and the largest per-task differences (points)."""
    differ = [k for k, v in base.items() if other.get(k) != v]

    def largest(metric: str) -> float:
        keys = [k for k in differ if f"/{metric}/per_seed/" in k]
        return round(100 * max((abs(base[k] - other[k]) for k in keys), default=0.0), 2)

    return {"numbers": len(base), "differ": len(differ), "error_auc_points": largest("error_auc"),
            "test_error_points": largest("test_error")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--old", metavar="SRC", help="another tree's src, for its 2-process check")
    p.add_argument("--json", metavar="FILE", help="write the comparisons")
    args = p.parse_args()
    common = ["--preset", args.preset, "--threads", "1"]
    variants: list[tuple[str, list[str], dict[str, str], str | None, int, str]] = [
        ("the same command again", common, {}, None, 1, "baseline"),
        ("2 torch threads", [*common[:-1], "2"], {}, None, 1, "baseline"),
        ("AVX2 kernels", common, AVX2, None, 1, "baseline"),
        ("portable kernels", common, {"ATEN_CPU_CAPABILITY": "default"}, None, 1, "baseline"),
        ("2 processes × 2 tasks", [*common, *FOUR_TASKS], {}, None, 2, "four"),
    ]
    if args.old:
        variants.append(("2 processes × 2 tasks, float32 sums (--old)", [*common, *FOUR_TASKS],
                         {}, args.old, 2, "old-four"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bases = {"baseline": run(Path(tmp) / "baseline", common, {}),
                 "four": run(Path(tmp) / "four", [*common, *FOUR_TASKS], {})}
        if args.old:
            bases["old-four"] = run(Path(tmp) / "old-four", [*common, *FOUR_TASKS], {},
                                    args.old)
        for i, (name, argv, env, src, processes, base) in enumerate(variants):
            row = {"variant": name, **compare(bases[base], run(
                Path(tmp) / f"v{i}", argv, env, src, processes))}
            rows.append(row)
            print(f"{name:45s} {row['differ']:4d} of {row['numbers']} numbers differ; per task "
                  f"up to {row['error_auc_points']:.2f} points of train-error AUC, "
                  f"{row['test_error_points']:.2f} of test error", flush=True)
    if args.json:
        import torch

        machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                   "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        Path(args.json).write_text(json.dumps({"preset": args.preset, "machine": machine,
                                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
