"""CPU threads under torchrun, the oversubscription warning and the allocator setting."""

from __future__ import annotations

import platform

import pytest
import torch

from metaleap import devices
from metaleap.protocols import trainer


@pytest.fixture
def threads():
    """Restore torch's thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_each_torchrun_rank_defaults_to_its_share_of_the_cores(monkeypatch, threads):
    monkeypatch.setattr(devices, "cores", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    devices.set_threads(None)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # more ranks than cores: one thread each
    devices.set_threads(None)
    assert torch.get_num_threads() == 1
    devices.set_threads(3)  # --threads wins
    assert torch.get_num_threads() == 3


def test_without_torchrun_the_default_is_left_to_torch(monkeypatch, threads):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(1)
    devices.set_threads(None)
    assert torch.get_num_threads() == 1
    with pytest.raises(devices.DeviceError):
        devices.set_threads(0)


def test_the_warning_counts_the_load_and_the_other_ranks():
    quiet = dict(total=2, load=0.0)
    assert devices.thread_warning(2, 1, **quiet) is None
    assert devices.thread_warning(1, 2, **quiet) is None  # 2 ranks × 1 thread on 2 cores
    two_ranks = devices.thread_warning(2, 2, **quiet)  # 2 ranks × 2 threads
    assert two_ranks is not None and "\n" not in two_ranks and "--threads 1" in two_ranks
    busy = devices.thread_warning(2, 1, total=2, load=1.2)  # another job holds a core
    assert busy is not None and "1 of 2 cores free" in busy
    assert devices.thread_warning(1, 1, total=2, load=5.0) is None  # one thread always fits


class _NoRuns:
    device = torch.device("cpu")

    def runs(self):
        return iter(())


def test_the_trainer_prints_the_warning_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(trainer, "thread_warning", lambda: "metaleap: warning: too many")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert trainer.run_study(_NoRuns(), store=None) == {}  # type: ignore[arg-type]
    assert capsys.readouterr().err == "metaleap: warning: too many\n"
    monkeypatch.setattr(trainer, "thread_warning", lambda: None)
    trainer.run_study(_NoRuns(), store=None)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""


def test_reuse_freed_memory_applies_on_glibc():
    assert devices.reuse_freed_memory() == (platform.system() == "Linux"
                                            and platform.libc_ver()[0] == "glibc")
