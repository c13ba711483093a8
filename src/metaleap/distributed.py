"""Distributed meta-training on ``torch.distributed``: one process per rank, launched by torchrun.

``torchrun --nproc-per-node N -m metaleap transfer ...`` (or ``torchrun --no-python metaleap
...``) starts N processes; :func:`from_environment` joins them into one group, gloo on the CPU
and NCCL on GPUs (each rank on ``cuda:LOCAL_RANK``), and gives the protocols their
:class:`~metaleap.protocols.base.Processes`: rank, world size and an all-reduce. Each rank then
trains its share of every meta-batch and of the evaluation; one flattened all-reduce per
meta-step sums the meta-learners' contributions and task counts, so every rank takes the same
meta-step and θ⁰ stays identical everywhere. The inner model is never wrapped in
DistributedDataParallel: that would average the gradients of different tasks. Collectives
time out (``--timeout``), so a failed rank never leaves the others waiting for ever.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist

from metaleap.devices import DeviceError, resolve_device
from metaleap.shared import ONE_PROCESS, Processes


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarted() -> bool:
    """Whether torchrun restarted this process's group after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def from_environment(device: str = "auto", timeout: float = 600.0
                     ) -> tuple[Processes, torch.device]:
    """This process's place and device; joins the process group when torchrun launched it.

    ``device`` as for ``--device``; under torchrun CUDA means ``cuda:LOCAL_RANK`` and NCCL,
    the CPU means gloo. ``timeout``: seconds a collective waits for the other ranks.
    """
    resolved = resolve_device(device)
    if not launched():
        return ONE_PROCESS, resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
        backend = "nccl"
    elif resolved.type == "cpu":
        backend = "gloo"
    else:
        raise DeviceError(f"distributed runs use the CPU (gloo) or CUDA (NCCL), not {resolved}")
    if timeout <= 0:
        raise DeviceError(f"--timeout must be positive, got {timeout}")
    if not dist.is_initialized():
        wait = datetime.timedelta(seconds=timeout)
        store, rank, world = next(dist.rendezvous("env://", timeout=wait))
        # A group that torchrun restarted meets in the same store as the one before it: its
        # own key prefix keeps it from reading the dead workers' addresses (and hanging).
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"metaleap/{attempt}", store),
                                rank=rank, world_size=world, timeout=wait,
                                device_id=resolved if backend == "nccl" else None)
    wire = resolved if backend == "nccl" else torch.device("cpu")

    def all_sum(tensor: torch.Tensor) -> torch.Tensor:
        buffer = tensor.to(wire, copy=True)
        dist.all_reduce(buffer)
        return buffer.to(tensor.device)

    return Processes(rank=dist.get_rank(), world=dist.get_world_size(), all_sum=all_sum), resolved


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def exit(code: int) -> NoReturn:
    """End a torchrun worker with ``code`` once its output is flushed, skipping the
    interpreter's teardown: there, gloo's threads may still free tensors and abort the
    process ("terminate called without an active exception", now and then, after every
    result is written), which torchrun reports as a failure of the whole group."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
