"""The admin's commands: `newsletter subscribers import/export/add/set-topics/unsubscribe/...`.

Each command calls one function of `newsletter.subscribers` and prints the result; refusals are
NewsletterError, which the group prints as `error: ...` with exit status 1.
"""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console
from rich.table import Table

from .. import subscribers as subs
from ..config import display_path
from ..store.subscribers import Subscriber, encode_topics
from . import pass_app

SOURCE = "cli"
TABLE_LIMIT = 1000


def _console(stderr: bool = False) -> Console:
    # No highlighting or markup: addresses and names are data, printed as they are.
    return Console(stderr=stderr, highlight=False)


def _say(text: str, err: bool = False) -> None:
    """One plain message line (never wrapped, so it can be grepped)."""
    click.echo(text, err=err)


def _topics_text(topics) -> str:
    return encode_topics(topics).replace(";", ", ")


@contextmanager
def _csv_stdout() -> Iterator[TextIO]:
    """Standard output as a text stream for CSV: UTF-8 and the format's own line ends whatever
    the locale (the text goes straight to the bytes)."""
    sys.stdout.flush()
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield stream
        stream.flush()
    finally:
        stream.detach()


def _say_status_change(before: Subscriber, changed: bool, done: str) -> None:
    """What an unsubscribe or resubscribe did: `done` when it changed the status, else that the
    address already had the status asked for (a refusal is an error, raised before this)."""
    _say(done if changed else f"{before.email} is already {before.status}: nothing changed")


@click.group()
def subscribers() -> None:
    """Manage subscribers: import, export, add, change, list, stats, history."""


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and count; write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows; list the others.")
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Let rows give any status: resubscribe leavers, clear bounces and complaints.",
)
@pass_app
def import_(app, file: Path, dry_run: bool, skip_invalid: bool, resubscribe: bool) -> None:
    """Add or update subscribers from a CSV file (email,name,topics,status).

    Every row is validated first; any invalid row means nothing is written (unless
    --skip-invalid). An import never weakens a status (never resubscribes anyone who left,
    never turns a complaint into an unsubscribe) unless --resubscribe.
    """
    result = subs.import_csv(
        app.db,
        app.settings,
        file,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        resubscribe=resubscribe,
    )
    for problem in result.problems:
        _say(f"skipped: {problem}", err=True)
    verb = "would be " if dry_run else ""
    _say(
        f"{result.path}: {result.rows} rows: {result.added} {verb}added, "
        f"{result.updated} {verb}updated, {result.unchanged} unchanged, {result.refused} refused"
    )
    if result.kept_status:
        _say(
            f"{result.kept_status} rows ask for a weaker status than the subscriber has (such as "
            "subscribed for someone who left): their status is kept (--resubscribe to override)"
        )
    if dry_run:
        _say("dry run: nothing was written")


@subscribers.command("export")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
@pass_app
def export(app, output: Path | None) -> None:
    """Write every subscriber (all statuses) as CSV, the format `import` reads."""
    report = subs.stats(app.db, app.settings)
    if output is not None:
        rows = subs.export_csv_file(app.db, output)
        _say(f"Exported {rows} subscribers to {display_path(output)}", err=True)
    else:
        with _csv_stdout() as stream:
            subs.export_csv(app.db, stream)
    if report.unknown_topics:
        names = ", ".join(report.unknown_topics)
        held = sum(report.unknown_topics.values())
        _say(
            f"warning: {held} subscribers hold topics the settings no longer name ({names}); "
            "an import of this file refuses those rows until the topics are removed or renamed",
            err=True,
        )


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option(
    "--topics", default="all", show_default=True, help="Topic slugs (comma-separated), or 'all'."
)
@pass_app
def add(app, email: str, name: str, topics: str) -> None:
    """Add one subscriber (refused when the address is already known)."""
    sub = subs.add(app.db, app.settings, email, name=name, topics=topics)
    _say(f"Added {sub.email} (topics: {_topics_text(sub.topics)})")


@subscribers.command("set-topics")
@click.argument("email")
@click.argument("topics")
@pass_app
def set_topics(app, email: str, topics: str) -> None:
    """Replace a subscriber's topics (comma-separated slugs, or 'all'). Never resubscribes."""
    changed = subs.set_topics(app.db, app.settings, email, topics, source=SOURCE)
    sub = subs.find(app.db, email)
    what = "topics now" if changed else "topics unchanged"
    _say(f"{sub.email}: {what}: {_topics_text(sub.topics)}")
    if sub.status != subs.SUBSCRIBED:
        _say(f"{sub.email} is {sub.status}: they get no email until resubscribed")


@subscribers.command()
@click.argument("email")
@click.option("--reason", help="Why (kept in the history).")
@pass_app
def unsubscribe(app, email: str, reason: str | None) -> None:
    """Unsubscribe one address."""
    before = subs.find(app.db, email)
    changed = subs.unsubscribe(app.db, before, reason=reason)
    _say_status_change(before, changed, f"Unsubscribed {before.email}")


@subscribers.command()
@click.argument("email")
@click.option("--reason", help="Why (kept in the history); required with --force.")
@click.option(
    "--force", is_flag=True, help="Also clear a bounce, a spam complaint or an invalid address."
)
@pass_app
def resubscribe(app, email: str, reason: str | None, force: bool) -> None:
    """Make an unsubscribed address subscribed again (bounced, complained, invalid: --force)."""
    before = subs.find(app.db, email)
    changed = subs.resubscribe(app.db, before, reason=reason, force=force)
    _say_status_change(before, changed, f"Resubscribed {before.email} (was {before.status})")


@subscribers.command("list")
@click.option("--topic", metavar="T", help="Only those who get topic T (chose it, or 'all').")
@click.option("--status", type=click.Choice(subs.STATUSES), help="Only this status.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (every match) instead of a table.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help=f"At most N rows (default for the table: {TABLE_LIMIT}; --csv: all).",
)
@pass_app
def list_(app, topic: str | None, status: str | None, as_csv: bool, limit: int | None) -> None:
    """List subscribers, optionally by topic and status."""
    settings = app.settings
    if topic is not None and topic.strip().lower() not in settings.topic_slugs:
        _say(
            f"note: {topic!r} is not a topic in the settings; listing who still holds it",
            err=True,
        )
    found = subs.list_subscribers(app.db, settings, topic=topic, status=status)
    if as_csv:
        with _csv_stdout() as stream:
            subs.write_csv(stream, itertools.islice(found, limit))
        return
    limit = limit or TABLE_LIMIT
    table = Table(title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("email", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("topics", overflow="fold")
    table.add_column("status", no_wrap=True)
    shown = 0
    for sub in itertools.islice(found, limit):
        table.add_row(str(sub.id), sub.email, sub.name, _topics_text(sub.topics), sub.status)
        shown += 1
    total = subs.count_subscribers(app.db, settings, topic=topic, status=status)
    table.title = f"{total} subscribers" + (f" (showing {shown})" if shown < total else "")
    _console().print(table)
    if shown < total:
        _say(f"{total - shown} more not shown: use --limit N, or --csv for all")


@subscribers.command()
@click.option(
    "--issue",
    metavar="ISSUE",
    help="Also count who would get an email for this issue (an id or a file).",
)
@pass_app
def stats(app, issue: str | None) -> None:
    """Subscribers per status and per topic; with --issue, how many an issue would reach."""
    settings = app.settings
    reach = subs.issue_reach(app.db, settings, issue) if issue else None  # errors before output
    report = subs.stats(app.db, settings)
    console = _console()

    by_status = Table(title="Subscribers by status", title_justify="left")
    by_status.add_column("status")
    by_status.add_column("count", justify="right")
    for status, n in report.by_status.items():
        by_status.add_row(status, str(n))
    by_status.add_row("total", str(report.total), style="bold")
    console.print(by_status)

    by_topic = Table(title="Subscribed, by topic", title_justify="left")
    by_topic.add_column("topic")
    by_topic.add_column("chose it", justify="right")
    by_topic.add_column("via all", justify="right")
    by_topic.add_column("get it", justify="right")
    for t in report.by_topic:
        by_topic.add_row(t.slug, str(t.chosen), str(t.via_all), str(t.total))
    by_topic.add_row("all topics", str(report.all_topics), "", "", style="bold")
    console.print(by_topic)

    if report.unknown_topics:
        held = ", ".join(f"{slug} ({n})" for slug, n in report.unknown_topics.items())
        _say(f"Topics no longer in the settings (ignored for matching): {held}")
    if report.no_known_topic:
        _say(
            f"{report.no_known_topic} subscribed subscribers chose only topics no longer in the "
            "settings: they get no email"
        )
    if reach is not None:
        _say(
            f"Issue {reach.issue_id} ({reach.summaries} summaries): {reach.reached} of "
            f"{reach.subscribed} subscribed subscribers would get an email "
            f"({reach.segments} different selections of summaries)"
        )


@subscribers.command()
@click.argument("email")
@pass_app
def history(app, email: str) -> None:
    """Every change of one subscriber's status, topics and name: when, what, from where, why."""
    sub, changes = subs.history(app.db, email)
    table = Table(
        title=f"{sub.email}: {sub.status}, topics {_topics_text(sub.topics)}",
        title_justify="left",
    )
    table.add_column("when", no_wrap=True)
    table.add_column("field", no_wrap=True)
    table.add_column("change", overflow="fold", min_width=12)
    table.add_column("source", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for change in changes:
        old, new = change["old_value"], change["new_value"] or ""
        if change["field"] == "topics":
            old, new = old and old.replace(";", ", "), new.replace(";", ", ")
        table.add_row(
            change["at"],
            change["field"],
            new if old is None else f"{old} → {new}",
            change["source"],
            change["reason"] or "",
        )
    _console().print(table)


COMMANDS = [subscribers]


def _add_signup_commands() -> None:
    """`subscribers consent` and `subscribers purge-pending` live with the signup commands."""
    from .signup import SUBSCRIBERS_COMMANDS

    for command in SUBSCRIBERS_COMMANDS:
        subscribers.add_command(command)


_add_signup_commands()
