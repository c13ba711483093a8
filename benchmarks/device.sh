#!/usr/bin/env bash
# One prepared run for a GPU window (under 8 minutes): the CUDA tests, the overhead and
# methods benchmarks on CUDA, the batched-against-sequential benchmark when it exists, and
# the dry run of omniglot-paper; one JSON of figures into $OUT (else benchmarks/results/).
# Needs only PyTorch (and pytest for the tests): no network, no pip, no apt.
#
#   bash benchmarks/device.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
PY=${PYTHON:-python}
DEST=${OUT:-benchmarks/results}
LOGS="$DEST/device-logs"
mkdir -p "$LOGS"
STEPS=()

# step NAME SECONDS COMMAND...: run COMMAND with a time limit, keep its output and status.
step() {
  local name=$1 limit=$2; shift 2
  local began=$SECONDS
  echo "== $name (at most ${limit}s): $*"
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc in $((SECONDS - began))s"; tail -n 15 "$LOGS/$name.log"
  STEPS+=("$name:$rc:$((SECONDS - began))")
}

if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "device.sh: CUDA is not available here; nothing to measure" >&2
  exit 1
fi

# 1. The tests that use CUDA when it is present (each is named *cuda*; they skip without it).
if $PY -c "import pytest" 2>/dev/null; then
  step cuda-tests 150 $PY -m pytest -q -p no:cacheprovider -k cuda tests
else
  echo "== cuda-tests: skipped (pytest is not installed)"; STEPS+=("cuda-tests:skipped:0")
fi

# 2. Leap's overhead on plain training, on CUDA (MLP and convnet).
step overhead 90 $PY benchmarks/overhead.py --device cuda --repeats 7

# 3. One meta-step of every method on CUDA (no CPU memory part).
step methods 100 $PY benchmarks/methods.py --device cuda --steps 50 --meta-batch 4 \
  --repeats 3 --no-memory

# 4. Batched against sequential tasks (tasks/s): benchmarks/batched.py, from the batched-tasks
#    work of the same issue; invoked here when that file exists (its JSON joins the figures).
run_batched() {
  if [ -f benchmarks/batched.py ]; then
    step batched 120 $PY benchmarks/batched.py --device cuda --repeats 3 \
      --json "$LOGS/batched.json"
  else
    echo "== batched: benchmarks/batched.py does not exist yet"; STEPS+=("batched:absent:0")
  fi
}
run_batched

# 5. The paper's Omniglot budget priced on this GPU (writes nothing but the glyph cache).
step dry-run 90 $PY -m metaleap transfer --preset omniglot-paper --dry-run --device cuda

# The figures: hardware, each step's status, and the numbers parsed from the logs.
$PY - "$LOGS" "$DEST/device.json" "${STEPS[@]}" <<'PYEOF'
import json, re, sys
from pathlib import Path

import torch

logs, dest, steps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
read = lambda name: (logs / f"{name}.log").read_text() if (logs / f"{name}.log").is_file() else ""
figures = {"overhead": {}, "methods": {}, "dry_run": {}}
if (logs / "batched.json").is_file():
    figures["batched"] = json.loads((logs / "batched.json").read_text())
for kind, ms_plain, ms_leap, ratio in re.findall(
        r"^(\w+)\s+[\d.]+M params\s+plain\s+([\d.]+) ms\s+leap\s+([\d.]+) ms\s+median ratio "
        r"([\d.]+)", read("overhead"), re.M):
    figures["overhead"][kind] = {"plain_ms": float(ms_plain), "leap_ms": float(ms_leap),
                                 "ratio": float(ratio)}
for method, k, s, ms, ratio in re.findall(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                                          read("methods"), re.M):
    figures["methods"][method] = {"K": int(k), "median_s": float(s), "ms_per_step": float(ms),
                                  "x_leap": float(ratio)}
for line in read("dry-run").splitlines():
    parts = line.split()
    if parts and parts[0] in ("leap", "reptile", "fomaml", "maml", "finetune", "scratch", "all"):
        figures["dry_run"][parts[0]] = " ".join(parts[1:])
report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
          "cuda": torch.version.cuda,
          "steps": {s.split(":")[0]: {"rc": s.split(":")[1], "seconds": s.split(":")[2]}
                    for s in steps},
          "figures": figures,
          "logs": {p.stem: p.read_text()[-4000:] for p in sorted(logs.glob("*.log"))}}
dest.write_text(json.dumps(report, indent=1) + "\n")
print(f"figures in {dest}")
PYEOF
