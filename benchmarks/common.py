"""What every benchmark shares: its raw output as JSON, the device sync, the memory reading.

Every benchmark takes ``--json PATH``; the file holds the command, the machine, the code it
ran, every per-repeat measurement and the summary the script printed, so each figure quoted
in ``docs/benchmarks.md`` can be traced to a committed ``benchmarks/results/*.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from metaleap.devices import code_revision


def write(path: str | None, raw: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write ``raw`` measurements and their ``summary`` to ``path`` (nothing when ``None``)."""
    if path is None:
        return
    record = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()[0], "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "code": code_revision(), "raw": raw, "summary": summary}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of ``/proc/self/status``, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
