"""The database's commands: `newsletter db status|upgrade|copy`.

Each calls one function of `newsletter.store.maintenance` or `newsletter.store.copy`; a database
is named in every message by its path or its URL without the password.
"""

from __future__ import annotations

import click

from . import pass_app

# The word that stands for the variable's value, so that a password stays off the command line
# (and out of the shell's history and the process list).
FROM_ENVIRONMENT = "NEWSLETTER_DATABASE_URL"


@click.group()
def db():
    """The database: where its schema stands, upgrading it, copying it to another engine."""


@db.command("status")
@pass_app
def status_command(app):
    """Say the schema version of the workspace's database and whether it needs an upgrade.

    Exit status 1 when it does (or when it is newer than this tool).
    """
    from ..store import location
    from ..store.maintenance import status

    state = status(location(app.settings, app.environment))
    click.echo(state.sentence())
    if state.exists and (state.behind or state.too_new):
        raise click.exceptions.Exit(1)


@db.command("upgrade")
@pass_app
def upgrade_command(app):
    """Apply the migrations the workspace's database lacks (SQLite also does it on opening;
    a PostgreSQL database is upgraded only by this command)."""
    from ..store import describe, location
    from ..store.maintenance import upgrade

    where = location(app.settings, app.environment)
    before, after = upgrade(where)
    if before == after:
        click.echo(f"{describe(where)}: already at schema version {after}")
    else:
        click.echo(f"{describe(where)}: upgraded from schema version {before} to {after}")


def _resolve(app, argument: str) -> str:
    if argument == FROM_ENVIRONMENT:
        url = app.environment.database_url
        if not url:
            raise click.UsageError(f"{FROM_ENVIRONMENT} is not set")
        return url
    return argument


@db.command("copy")
@click.argument("source")
@click.argument("target")
@click.option("--force", is_flag=True, help="Replace the rows a non-empty target holds.")
@pass_app
def copy_command(app, source, target, force):
    """Copy every row (subscribers, history, ledger, sends, consent, signups, webhook events,
    meta) from SOURCE to TARGET, then compare counts and checksums of every table.

    Each is a SQLite file's path or a postgresql:// URL; the word NEWSLETTER_DATABASE_URL
    stands for that variable's value (keep a password off the command line). A target that
    holds data is refused unless --force.
    """
    from ..store.copy import copy

    report = copy(_resolve(app, source), _resolve(app, target), force=force)
    for table in report.tables:
        click.echo(f"{table.table}: {table.rows} rows, checksum {table.checksum[:16]}… matches")
    click.echo(
        f"Copied {report.rows} rows in {len(report.tables)} tables from {report.source} "
        f"to {report.target}; counts and checksums match"
    )


COMMANDS = [db]
