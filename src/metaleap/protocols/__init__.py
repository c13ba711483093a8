"""The experiments: one package per protocol, each registering a :class:`Descriptor`.

``transfer`` (the Omniglot protocol, docs/experiments.md), ``multicv`` (leave one data set
out, docs/multicv.md) and ``rl`` (Leap across games, docs/rl.md) each hold their config and
presets, study, summary, report and plots, and CLI commands. The CLI and the report
dispatcher loop over :func:`registered`; adding a protocol is one package that calls
:func:`register` (docs/architecture.md). What every protocol shares: ``config`` (configs,
presets, overrides; free of torch), ``base`` (the run contract), ``trainer`` (the generic
meta-trainer), ``evaluation``, ``batched``, ``dryrun``, ``reporting`` and ``commands``.

This module and each protocol package's ``__init__`` import no torch, so ``metaleap --help``
and ``metaleap settings`` start fast; a descriptor names the heavy parts by import path.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The protocols of this package, registered on first use of :func:`registered`.
BUILTIN = ("transfer", "rl", "multicv")


def lazy(target: str) -> Callable[..., Any]:
    """A function calling ``"module:attribute"``, imported on the first call."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A protocol package's module ``__getattr__``: each public name of ``names`` (name →
    submodule) is imported from its submodule on first use, so the package stays torch-free."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


@dataclass(frozen=True)
class Descriptor:
    """What the CLI and the report dispatcher know of a protocol."""

    name: str
    """as written to ``config.json`` (``"protocol"``) and used by ``--protocol``"""
    config: type
    """its config dataclass (a :class:`~metaleap.protocols.config.MethodConfig`)"""
    presets: dict[str, dict[str, Any]]
    """its presets: name → config fields"""
    default_preset: str
    """the preset ``metaleap settings --protocol NAME`` describes by default"""
    add_commands: Callable[[argparse._SubParsersAction], None]
    """adds its commands to the ``metaleap`` parser"""
    summarize: Callable[[dict[str, Any], dict[str, dict[str, Any]]], dict[str, Any]]
    """``results.json`` from ``config.json`` and the (seed, method) results"""
    report: Callable[[Path, dict[str, Any]], list[str]]
    """writes the run's plots and returns the lines of its ``report.md``"""
    settings_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    """its extra flags of ``metaleap settings`` (such as ``--data``)"""
    settings_config: Callable[[argparse.Namespace], Any] | None = None
    """the config ``metaleap settings`` describes (default: preset and ``--set``)"""
    folder_reports: tuple[Callable[[Path], Path | None], ...] = field(default=())
    """reports of folders of its runs (a sweep, a budget study); each returns ``report.md``
    or ``None`` when the folder is not of its kind"""

    def resolve_settings(self, args: argparse.Namespace) -> Any:
        """The config ``metaleap settings`` describes."""
        if self.settings_config is not None:
            return self.settings_config(args)
        from metaleap.protocols.config import resolve_preset

        return resolve_preset(self.config, self.presets, args.preset or self.default_preset,
                              args.overrides)


_REGISTRY: dict[str, Descriptor] = {}


def register(descriptor: Descriptor) -> Descriptor:
    """Add ``descriptor`` (``ValueError`` if its name is taken); returns it."""
    if descriptor.name in _REGISTRY:
        raise ValueError(f"a protocol named {descriptor.name!r} is already registered")
    _REGISTRY[descriptor.name] = descriptor
    return descriptor


def unregister(name: str) -> None:
    """Remove protocol ``name`` (for tests and plugins that register temporarily)."""
    del _REGISTRY[name]


def registered() -> dict[str, Descriptor]:
    """Every registered protocol (the built-in ones imported first), by name."""
    for name in BUILTIN:
        importlib.import_module(f"metaleap.protocols.{name}")
    return dict(_REGISTRY)


def get(name: str) -> Descriptor:
    """Protocol ``name``; ``KeyError`` naming the registered ones otherwise."""
    found = registered()
    if name not in found:
        raise KeyError(f"unknown protocol {name!r}; registered: {', '.join(found)}")
    return found[name]
