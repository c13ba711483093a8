"""Where work runs: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--threads``, checked up front.

A device that is not there is refused with one line before anything is written.
:func:`describe` is what a run folder records about the machine. On the CPU,
:func:`set_threads` gives each torchrun rank its share of the cores, :func:`thread_warning`
says when threads outnumber the free cores, and :func:`reuse_freed_memory` keeps the
allocator from returning every step's activations to the kernel.
"""

from __future__ import annotations

import ctypes
import os
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


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_world_size() -> int:
    """Processes that torchrun started on this machine (1 without torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def set_threads(threads: int | None) -> None:
    """Torch's intra-op CPU threads. ``None``: under torchrun each rank takes
    ``cores / LOCAL_WORLD_SIZE`` (at least 1) so that the ranks do not oversubscribe the
    cores; otherwise torch's default."""
    if threads is None:
        if local_world_size() == 1:
            return
        threads = max(1, cores() // local_world_size())
    if threads < 1:
        raise DeviceError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def thread_warning(threads: int | None = None, processes: int | None = None,
                   total: int | None = None, load: float | None = None) -> str | None:
    """One line when this process's threads exceed the cores left free for it, else None.

    Free cores are the cores (``total``) less the other work running on them: the 1-minute
    load average (``load``, this machine's run queue, which counts the other processes of
    a torchrun group as they start too) and the other local ranks' threads. Defaults: this
    process's torch threads, :func:`local_world_size`, :func:`cores` and ``os.getloadavg``.
    OpenMP threads that share cores spin-wait on each other, and a step can then take many
    times as long.
    """
    threads = torch.get_num_threads() if threads is None else threads
    processes = local_world_size() if processes is None else processes
    total = cores() if total is None else total
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    others = max(float(load), (processes - 1) * threads)
    free = max(1, total - round(others))
    if threads <= free:
        return None
    return (f"metaleap: warning: {threads} torch threads but {free} of {total} cores free "
            f"(load average {load:.1f}, {processes} local process(es)): steps may run many "
            f"times slower; pass --threads {free}")


def reuse_freed_memory() -> bool:
    """Keep freed memory in the process's heap (glibc only; True if set).

    glibc returns large blocks (each step's multi-megabyte activations) to the kernel when
    they are freed, and the next step faults every page back in: at 28 px that is about a
    third of a convnet step on the CPU. A fixed 32 MiB mmap threshold and a 1 GiB trim
    threshold keep those blocks for reuse; numbers are unchanged, the peak memory is the same
    and is simply not handed back between steps.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 2**30))


def describe(device: torch.device) -> dict[str, object]:
    """The software and hardware a run used: versions, device (and its name), CPU threads,
    processes (torchrun's world size) and, on the CPU, the instruction set its kernels use."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    cpu = {"cpu_capability": torch.backends.cpu.get_cpu_capability()} if (
        device.type == "cpu") else {}
    return {"metaleap": metaleap.__version__, "code": code_revision(), "torch": torch.__version__,
            "python": sys.version.split()[0], "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(),
            "processes": int(os.environ.get("WORLD_SIZE", "1")), **cpu}


#: What a session records that changes float results when it changes between the sessions
#: of one run (docs/experiments.md, "What makes two runs identical").
NUMERICS = ("device", "device_name", "cpu_capability", "threads", "processes", "torch")


def numerics_changes(first: dict[str, object], now: dict[str, object]) -> list[str]:
    """Each of :data:`NUMERICS` that differs between a run's first session and this one, as
    ``"threads 1 → 2"`` (a key the first session did not record is not compared)."""
    return [f"{k} {first[k]} → {now.get(k)}" for k in NUMERICS
            if k in first and first[k] != now.get(k)]


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
