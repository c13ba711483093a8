"""The CLI starts without its heavy dependencies: they load inside the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "scipy", "torch", "metaleap.protocols.transfer.study",
         "metaleap.protocols.transfer.budget", "metaleap.protocols.reporting")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_module():
    assert loaded_after("import metaleap.cli") == []


def test_building_the_parser_and_top_level_help_load_no_heavy_module():
    code = ("import contextlib, io, metaleap.cli as c\np = c.parser()\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    p.parse_args(['--help'])")
    assert loaded_after(code) == []


@pytest.mark.parametrize(("protocol", "preset", "setting", "shown"), [
    ("transfer", "demo", "leap.metric=energy", "leap.metric = 'energy'"),
    ("multicv", "multicv-small", "datasets=mnist,digits", "datasets = ['mnist', 'digits']"),
    ("rl", "minatar", "seeds=3", "seeds = [3]"),
])
def test_settings_resolves_and_describes_a_preset_without_torch(protocol: str, preset: str,
                                                                 setting: str, shown: str):
    """``metaleap settings`` is checked and described from torch-free modules: each
    protocol's config, its presets, the method registry and the names in ``choices``."""
    code = ("import contextlib, io, metaleap.cli as c\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    assert c.main(['settings', '--protocol', {protocol!r}, '--preset', {preset!r}, "
            f"'--set', {setting!r}]) == 0\n"
            f"assert {shown!r} in out.getvalue(), out.getvalue()")
    assert loaded_after(code) == []


def test_a_subcommand_help_lists_the_presets(capsys):
    from metaleap.cli import main

    try:
        main(["transfer", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "omniglot-paper" in out and "demo" in out
