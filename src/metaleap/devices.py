"""Where work runs: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--threads``, checked up front.

A device that is not there is refused with one line before anything is written.
:func:`describe` is what a run folder records about the machine.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

import metaleap


class DeviceError(ValueError):
    """A requested device or thread count that this machine cannot give."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps"
                          ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {spec}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {spec}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device {spec}: MPS is not available on this machine")
        return device
    raise DeviceError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def set_threads(threads: int | None) -> None:
    """Torch's intra-op CPU threads (``None``: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise DeviceError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def describe(device: torch.device) -> dict[str, object]:
    """The software and hardware a run used: versions, device (and its name), CPU threads."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"metaleap": metaleap.__version__, "code": code_revision(), "torch": torch.__version__,
            "python": sys.version.split()[0], "device": str(device), "device_name": name,
            "threads": torch.get_num_threads()}


def code_revision() -> dict[str, object] | None:
    """The git commit metaleap runs from and whether its tree differs from it (changed or
    untracked files); ``None`` unless the package is tracked in a git checkout (an installed
    wheel, a copy)."""
    root = Path(metaleap.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        git("ls-files", "--error-unmatch", "__init__.py")
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
