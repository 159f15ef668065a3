"""The command starts at once: importing it, `--help` and the small commands import none of the
heavy libraries that only some commands need (each is imported where it is used).

Each check runs in a fresh Python process, so nothing another test imported counts. Speed itself
is measured in bench/, not here: these tests check what is imported, which is what makes it slow.
"""
# Not both_engines: imports and --help, no database.

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from newsletter.cli import COMMANDS, cli
from tests.conftest import REPO

# Rendering (premailer brings cssutils and lxml), the web server, the SendGrid client, the
# progress bar of a send, the feed reader: none is needed to list commands or read the ledger.
HEAVY = ("premailer", "cssutils", "mjml", "flask", "sendgrid", "rich.progress", "feedparser")
# To print help the command needs neither its settings (pydantic) nor a table (Rich) nor Jinja2.
FOR_HELP_ALSO_NOT = ("pydantic", "jinja2", "email_validator", "rich", "yaml")

RUN_AND_REPORT = """
import json, sys
from newsletter.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="newsletter")
except SystemExit as exc:
    status = exc.code
sys.stdout.flush()
print("\\n" + json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_fresh(*args: str, cwd=REPO) -> tuple[int, str, set[str]]:
    """`newsletter ARGS` in a new interpreter: exit status, stdout, and every module imported."""
    code = (
        RUN_AND_REPORT
        if args
        else "import json, sys, newsletter.cli\n"
        + ("print(json.dumps({'status': 0, 'modules': sorted(sys.modules)}), file=sys.stderr)")
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["status"], result.stdout, set(report["modules"])


def imported(modules: set[str], names) -> list[str]:
    return [name for name in names if name in modules]


def test_importing_the_cli_imports_no_heavy_library():
    status, _, modules = run_fresh()
    assert status == 0
    assert imported(modules, HEAVY + FOR_HELP_ALSO_NOT) == []


def test_help_lists_every_command_and_imports_no_heavy_library():
    status, out, modules = run_fresh("--help")
    assert status == 0
    assert "Usage: newsletter [OPTIONS] COMMAND [ARGS]..." in out
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(COMMANDS)
    assert imported(modules, HEAVY + FOR_HELP_ALSO_NOT) == []
    # No command module is even imported to list them.
    assert [m for m in modules if m.startswith("newsletter.cli.")] == []


@pytest.mark.parametrize(
    "args",
    [("report", "2026-12"), ("subscribers", "list"), ("subscribers", "--help")],
    ids=" ".join,
)
def test_small_commands_import_no_heavy_library(workspace, args):
    status, _, modules = run_fresh(*args, cwd=workspace)
    assert status == 0
    assert imported(modules, HEAVY) == []


def test_help_shows_each_commands_own_help():
    """`COMMANDS` holds the first paragraph of each command's help, for `--help` to list them
    without importing them: it must say what the command itself says."""
    ctx = click.Context(cli)
    for name, (module, text) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.callback.__module__ == f"newsletter.cli.{module}"
        first_paragraph = " ".join(command.help.split("\n\n")[0].split())
        assert text == first_paragraph, name


def test_every_command_module_is_listed():
    """A command added to a module's COMMANDS but not to the list would never be reachable."""
    import importlib

    defined = set()
    for module in {module for module, _ in COMMANDS.values()}:
        for command in importlib.import_module(f"newsletter.cli.{module}").COMMANDS:
            defined.add(command.name)
    assert defined == set(COMMANDS)


def test_a_mistyped_command_is_still_suggested(run):
    result = run("sendd")
    assert result.exit_code == 2
    assert "Did you mean 'send'?" in result.stderr
