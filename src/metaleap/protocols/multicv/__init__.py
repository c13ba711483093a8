"""The Multi-CV protocol (docs/multicv.md): leave one data set out, every method.

``config`` (settings and presets), ``training`` (how every task trains), ``study`` (the
study and its runs), ``summary`` (``results.json``), ``report`` (Table 1, plot, sentences),
``dryrun`` and ``cli`` (``metaleap multicv``). Importing this package registers the protocol
and loads no torch; the names below load their module on first use.
"""

from __future__ import annotations

from metaleap import protocols
from metaleap.protocols.multicv import cli
from metaleap.protocols.multicv.config import PRESETS, MultiCVConfig, resolve_config

#: Public names and the module that defines each.
_LAZY = {"MultiCVStudy": "study", "MetaRun": "study", "SequentialRun": "study",
         "InnerTraining": "training", "Patience": "training", "summarize": "summary",
         "METRICS": "summary", "SCHEMA_VERSION": "summary"}

__all__ = ["PRESETS", "MultiCVConfig", "resolve_config", *_LAZY]

__getattr__ = protocols.lazy_names(__name__, _LAZY)

protocols.register(protocols.Descriptor(
    name="multicv", config=MultiCVConfig, presets=PRESETS, default_preset="multicv-small",
    add_commands=cli.add_commands,
    summarize=protocols.lazy("metaleap.protocols.multicv.summary:summarize"),
    report=protocols.lazy("metaleap.protocols.multicv.report:multicv_report")))
