"""The public archive's command: `newsletter archive build`."""

from __future__ import annotations

from pathlib import Path

import click

from . import pass_app


@click.group()
def archive():
    """The public archive of sent issues: pages, topic pages, feed, sitemap, search."""


@archive.command("build")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the site to (default: site/ beside the settings file).",
)
@pass_app
def build(app, output):
    """Build the static archive from the sent issues (only changed files are rewritten)."""
    from ..archive.build import build_archive
    from ..config import display_path

    settings = app.settings
    from ..store import exists

    db = app.db if exists(settings, app.environment) else None
    result = build_archive(settings, db, output)
    left_out = (
        f"; left out (archive: false): {', '.join(result.left_out)}" if result.left_out else ""
    )
    issues = len(result.issues)
    click.echo(
        f"Archive of {issues} issue{'' if issues == 1 else 's'} in {display_path(result.output)}: "
        f"{len(result.files)} files, {len(result.written)} written, {result.unchanged} unchanged, "
        f"{len(result.removed)} removed{left_out}"
    )


COMMANDS = [archive]
