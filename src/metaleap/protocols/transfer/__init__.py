"""The transfer protocol (docs/experiments.md): Omniglot-style alphabets, every method.

``config`` (settings and presets), ``study`` (the study and its runs), ``summary``
(``results.json``), ``report`` (tables, plots, sentences; the sweep over N), ``budget`` and
``ablation`` (reports of folders of runs), ``paths`` (held-out paths to fixed losses),
``dryrun`` (the priced budget) and ``cli`` (the ``demo``, ``transfer``, ``sweep`` and
``transfer-paths`` commands). Importing this package registers the
protocol and loads no torch; the names below load their module on first use.
"""

from __future__ import annotations

from metaleap import protocols
from metaleap.protocols.transfer import cli
from metaleap.protocols.transfer.config import PRESETS, TransferConfig, resolve_config

#: Public names and the module that defines each.
_LAZY = {"TransferStudy": "study", "TransferRun": "study", "Split": "study",
         "make_split": "study", "summarize": "summary", "METRICS": "summary",
         "SCHEMA_VERSION": "summary", "sweep_configs": "config"}

__all__ = ["PRESETS", "TransferConfig", "resolve_config", *_LAZY]

__getattr__ = protocols.lazy_names(__name__, _LAZY)

protocols.register(protocols.Descriptor(
    name="transfer", config=TransferConfig, presets=PRESETS, default_preset="omniglot-paper",
    add_commands=cli.add_commands,
    summarize=protocols.lazy("metaleap.protocols.transfer.summary:summarize"),
    report=protocols.lazy("metaleap.protocols.transfer.report:transfer_report"),
    settings_arguments=cli.settings_arguments, settings_config=cli.settings_config,
    folder_reports=(cli.sweep_report, cli.budget_report, cli.ablation_report,
                    cli.paths_report)))
