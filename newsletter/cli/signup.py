"""The signup's commands: `newsletter signup-form` (the form to paste into another site's page),
`newsletter subscribers consent` (the consent record) and `newsletter subscribers purge-pending`.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import display_path
from ..errors import NewsletterError
from . import pass_app


@click.command("signup-form")
@click.option(
    "--form-id",
    default="embed",
    show_default=True,
    help="Names this copy of the form in the consent record (lower-case letters, digits, -).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
@pass_app
def signup_form(app, form_id: str, output: Path | None) -> None:
    """Print the signup form as HTML to paste into another site's page.

    It posts to `<preferences_url>/subscribe`, which takes it only from the sites listed in
    `signup.allowed_origins`, through the same checks as its own page.
    """
    from ..signup.embed import form_snippet

    snippet = form_snippet(app.settings, form_id)
    if output is None:
        click.echo(snippet.html, nl=False)
    else:
        try:
            output.write_text(snippet.html, encoding="utf-8")
        except OSError as exc:
            raise NewsletterError(f"{display_path(output)}: cannot write: {exc.strerror}") from None
        click.echo(f"Wrote the signup form to {display_path(output)}", err=True)
    for warning in snippet.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command("purge-pending")
@pass_app
def purge_pending(app) -> None:
    """Delete signups whose confirmation link has expired (and the signup limits' old rows)."""
    from ..signup import system_clock
    from ..signup.pending import purge_pending as purge

    purged = purge(app.db, system_clock())
    click.echo(
        f"Deleted {purged.signups} expired signups, {purged.mailed} addresses' daily email marks "
        f"and {purged.attempts} old signup counts"
    )


@click.command()
@click.argument("email", required=False)
@click.option("--export", is_flag=True, help="Write the whole record as CSV.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --export: write to FILE (default: standard output).",
)
@pass_app
def consent(app, email: str | None, export: bool, output: Path | None) -> None:
    """Show the consent record of EMAIL, or --export all of it as CSV.

    Each row says how the address came (the signup form, or "import: FILE"), when the form was
    sent and the link confirmed, the client's address as recorded, the user agent, the form,
    the consent sentence (version and SHA-256), the privacy notice and the topics.
    """
    from ..signup import consent as record

    if export == (email is not None):
        raise click.UsageError("give either EMAIL or --export")
    if output is not None and not export:
        raise click.UsageError("-o/--output goes with --export")
    if export:
        if output is not None:
            rows = record.export_csv_file(app.db, output)
            click.echo(f"Exported {rows} consent records to {display_path(output)}", err=True)
            return
        sys.stdout.flush()
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            record.export_csv(app.db, stream)
            stream.flush()
        finally:
            stream.detach()
        return
    found = record.for_address(app.db, email)
    console = Console(highlight=False)
    for row in found.rows:
        table = Table(title=f"{found.email}: {row.source}", title_justify="left", show_header=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for label, value in (
            ("form sent", row.requested_at),
            ("confirmed", row.confirmed_at),
            ("IP address", row.ip),
            ("user agent", row.user_agent),
            ("form", row.form_id),
            ("consent version", row.consent_version),
            ("consent SHA-256", row.consent_sha256),
            ("consent text", found.texts.get(row.consent_sha256 or "")),
            ("privacy notice", row.privacy_url),
            ("topics", row.topics.replace(";", ", ")),
        ):
            table.add_row(label, value if value else "—")
        console.print(table)


COMMANDS = [signup_form]
SUBSCRIBERS_COMMANDS = [consent, purge_pending]  # under `newsletter subscribers`
