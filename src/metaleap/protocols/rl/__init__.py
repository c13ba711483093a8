"""The reinforcement-learning protocol (docs/rl.md): Leap across games with A2C.

``config`` (settings and presets), ``a2c`` (the agent's learning process), ``study`` (the
study, its runs and their resumable progress), ``summary`` (``results.json``), ``report``
(tables, Fig. 3, sentences), ``dryrun`` and ``cli`` (``metaleap rl``). Importing this
package registers the protocol and loads no torch; the names below load their module on
first use.
"""

from __future__ import annotations

from metaleap import protocols
from metaleap.protocols.rl import cli
from metaleap.protocols.rl.config import PRESETS, RLConfig, resolve_config

#: Public names and the module that defines each.
_LAZY = {"RLStudy": "study", "RLRun": "study", "Episodes": "a2c", "a2c_segment": "a2c",
         "random_return": "a2c", "summarize": "summary", "moving_average": "summary",
         "SCHEMA_VERSION": "summary"}

__all__ = ["PRESETS", "RLConfig", "resolve_config", *_LAZY]

__getattr__ = protocols.lazy_names(__name__, _LAZY)

protocols.register(protocols.Descriptor(
    name="rl", config=RLConfig, presets=PRESETS, default_preset="minatar",
    add_commands=cli.add_commands,
    summarize=protocols.lazy("metaleap.protocols.rl.summary:summarize"),
    report=protocols.lazy("metaleap.protocols.rl.report:rl_report"),
    settings_arguments=cli.settings_arguments, settings_config=cli.settings_config))
