"""The CLI starts without its heavy dependencies: they load inside the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("matplotlib", "scipy", "torch", "metaleap.protocols.transfer", "metaleap.budget",
         "metaleap.report")


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


def test_a_subcommand_help_lists_the_presets(capsys):
    from metaleap.cli import main

    try:
        main(["transfer", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "omniglot-paper" in out and "demo" in out
