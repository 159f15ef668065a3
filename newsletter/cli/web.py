"""The subscribers' side: `serve` (preference centre, unsubscribe, webhook) and `suppressions`."""

from __future__ import annotations

import click

from ..errors import ConfigError
from . import pass_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@pass_app
def serve(app, host, port):
    """Serve the preference centre, one-click unsubscribe, the SendGrid webhook and (when
    signup.enabled) the signup form."""
    from ..web import create_app, run_server

    try:
        # It must also be the secret that signed the emails' links.
        app.environment.signing_key(required=True)
    except ConfigError as err:
        raise ConfigError(f"newsletter serve refuses to start: {err}") from None
    web_app = create_app(app.settings, environment=app.environment)
    click.echo(f"Serving the preference centre on http://{host}:{port}/  (Ctrl+C to stop)")
    run_server(web_app, host, port)


@click.group()
def suppressions():
    """SendGrid's suppression lists: unsubscribes, bounces, spam reports, invalid addresses."""


@suppressions.command("sync")
@click.option(
    "--page-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 500),
    help="Entries asked for in each request.",
)
@pass_app
def sync(app, page_size):
    """Pull what is new on SendGrid's suppression lists into the subscribers' status."""
    from rich.console import Console
    from rich.table import Table

    from ..sendgrid.suppressions import sync_suppressions

    report = sync_suppressions(
        app.settings, app.db, page_size=page_size, environment=app.environment
    )
    table = Table(title="SendGrid suppressions", title_justify="left")
    for column in ("list", "new entries", "status set", "already so", "not subscribers"):
        table.add_column(column, justify="left" if column == "list" else "right")
    for item in report.lists:
        table.add_row(
            item.name, str(item.fetched), str(item.changed), str(item.unchanged), str(item.unknown)
        )
    console = Console()
    console.print(table)
    console.print(
        f"{report.changed} subscribers' status changed; {report.unknown} addresses were not "
        "subscribers and were ignored.",
        highlight=False,
    )


COMMANDS = [serve, suppressions]
