"""The editor's `newsletter summaries pull`: new summaries from the site's feed into `summaries/`.

The command calls `newsletter.pull.pull_summaries` and prints its report: one line per summary
written, updated, changed on the site, skipped or failed, and why. Failures are also printed as
`error: URL: reason` on stderr, and make the exit status 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from . import pass_app

if TYPE_CHECKING:
    from ..pull import PullReport

SHOWN_SKIPS = 20  # skipped entries listed one by one; the rest are counted
LABELS = {
    "new": ("new", "would write"),
    "updated": ("updated", "would update"),
    "recorded": ("recorded", "would record"),
    "changed": ("changed", "changed"),
    "unchanged": ("unchanged", "unchanged"),
    "skipped": ("skipped", "would skip"),
    "failed": ("failed", "would fail"),
}


def print_report(report: PullReport) -> None:
    """The report as plain lines (grep-able, never wrapped), errors also on stderr."""
    where = f"{report.feed_url}" + (f" ({report.feed_format})" if report.feed_format else "")
    click.echo(f"{'Dry run: nothing is written. ' if report.dry_run else ''}Feed {where}")
    if report.not_modified:
        click.echo("The feed has not changed since the last pull (HTTP 304): nothing to do.")
        return
    skipped = 0
    for item in report.items:
        if item.action == "skipped":
            skipped += 1
            if skipped > SHOWN_SKIPS:
                continue
        label = LABELS[item.action][1 if report.dry_run else 0]
        parts = [f"{label:<12}", item.summary_id or "-", item.url]
        click.echo("  ".join(parts) + (f"  ({item.reason})" if item.reason else ""))
    if skipped > SHOWN_SKIPS:
        click.echo(f"... and {skipped - SHOWN_SKIPS} more skipped")
    for note in report.notes:
        click.echo(f"note: {note}")
    counts = {action: len(report.of(action)) for action in LABELS}
    verb = "would be written" if report.dry_run else "written"
    summary = (
        f"{counts['new']} new {verb}, {counts['updated']} updated, "
        f"{counts['changed']} changed on the site, {counts['skipped']} skipped, "
        f"{report.unchanged + counts['unchanged']} unchanged, {counts['failed']} failed"
    )
    if report.left_over:
        summary += f"; {report.left_over} more left for the next pull (--max)"
    click.echo(summary)
    for item in report.failed:
        click.echo(f"error: {item.url}: {item.reason}", err=True)


def run_pull(app, feed_url=None, **options) -> PullReport:
    """Pull, print the report, and exit 1 when anything failed (for `compose --pull` too)."""
    from ..pull import pull_summaries  # feedparser, httpx, lxml: only for the commands that pull

    report = pull_summaries(app.settings, feed_url, **options)
    print_report(report)
    if report.failed:
        raise click.exceptions.Exit(1)
    return report


@click.group()
def summaries() -> None:
    """Summaries: pull the newly published ones from the site."""


@summaries.command()
@click.argument("feed_url", required=False)
@click.option("--dry-run", is_flag=True, help="List what would be written, changed and skipped.")
@click.option(
    "--max",
    "max_items",
    type=click.IntRange(1, 10_000),
    help="Fetch at most N entries in this pull (default 50); the rest wait for the next one.",
)
@click.option(
    "--default-topic",
    metavar="SLUG",
    help="Topic for entries whose categories map to none (default: report and skip them).",
)
@click.option(
    "--update",
    "update",
    multiple=True,
    metavar="ID",
    help="Take the site's current version of summary ID (repeatable).",
)
@click.option("--force", is_flag=True, help="With --update: overwrite a file edited locally.")
@pass_app
def pull(app, feed_url, dry_run, max_items, default_topic, update, force):
    """Pull new summaries from the site's feed (FEED_URL or source.feed_url) into summaries/.

    An entry is pulled once; a summary changed on the site since is reported, and taken only with
    --update ID. A local file edited since it was pulled is never overwritten without --force.
    """
    if force and not update:
        raise click.UsageError("--force only goes with --update ID")
    run_pull(
        app,
        feed_url,
        dry_run=dry_run,
        max_items=max_items,
        default_topic=default_topic,
        update=update,
        force=force,
    )


COMMANDS = [summaries]
