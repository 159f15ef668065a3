"""The editor's commands: compose, render, preview, check.

Each command imports what it uses (the renderer, Rich...) when it runs, so that the others start
at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import CheckFailed, SubscriberError
from . import pass_app


def parse_topics(settings, value: str) -> list[str] | str:
    """`--topics`: 'all' or comma-separated topic slugs, each one known to the settings, read by
    the list's own parser; the slugs come back in the settings' order (the footer names them so)."""
    from ..store.subscribers import ALL
    from ..subscribers.fields import UnknownTopics
    from ..subscribers.fields import parse_topics as parse_topic_choice

    try:
        choice = parse_topic_choice(value or ALL, settings.topic_slugs)
    except UnknownTopics as exc:
        raise click.BadParameter(
            f"unknown topic {', '.join(exc.unknown)} "
            f"(known topics: {', '.join(exc.known)}, or 'all')",
            param_hint="--topics",
        ) from None
    except SubscriberError as exc:  # 'all' with other topics
        raise click.BadParameter(str(exc), param_hint="--topics") from None
    return ALL if choice == ALL else [t for t in settings.topic_slugs if t in choice]


@click.command()
@click.option(
    "--date", "on_date", type=click.DateTime(["%Y-%m-%d"]), help="Issue date (default: today)."
)
@click.option("--id", "issue_id", help="Issue id (default: YYYY-MM of the issue date).")
@click.option("--max", "max_summaries", type=click.IntRange(1, 50), help="At most N summaries.")
@click.option("--force", is_flag=True, help="Overwrite an existing issue file (never a sent one).")
@click.option("--pull", is_flag=True, help="First pull new summaries from the site's feed.")
@pass_app
def compose(app, on_date, issue_id, max_summaries, force, pull):
    """Pick the latest summaries and write issues/<id>.yaml."""
    from rich.console import Console
    from rich.table import Table

    from ..compose import compose_issue
    from ..config import display_path

    settings = app.settings
    if pull:
        from .summaries import run_pull

        run_pull(app)  # exits 1, composing nothing, if the pull failed

    def is_locked(candidate: str) -> bool:
        from ..store import exists, ledger

        if not exists(settings, app.environment):
            return False

        return ledger.has_rows(app.db, candidate)

    result = compose_issue(
        settings,
        on_date=on_date.date() if on_date else None,
        issue_id=issue_id,
        max_summaries=max_summaries,
        force=force,
        is_locked=is_locked,
    )
    console = Console()
    table = Table(
        title=f"Issue {result.issue.id}: {len(result.chosen)} summaries", title_justify="left"
    )
    table.add_column("#", justify="right")
    table.add_column("date")
    table.add_column("summary", no_wrap=True)
    table.add_column("topics")
    for n, summary in enumerate(result.chosen, 1):
        table.add_row(str(n), str(summary.date), summary.id, ", ".join(summary.topics))
    console.print(table)
    console.print(
        f"Wrote {display_path(result.path)}", highlight=False, markup=False, soft_wrap=True
    )
    if result.left_out:
        console.print(
            f"{result.left_out} more eligible summaries left for the next issue (--max).",
            highlight=False,
        )


@click.command()
@click.argument("issue")
@click.option(
    "--topics", default="all", show_default=True, help="Comma-separated topic slugs, or 'all'."
)
@click.option(
    "--format", "fmt", type=click.Choice(["html", "text"]), default="html", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
@click.option("--raw", is_flag=True, help="Keep the per-recipient placeholders unfilled.")
@pass_app
def render(app, issue, topics, fmt, output, raw):
    """Render the email one subscriber with these topics would get."""
    from ..content import load_issue, load_summaries, resolve_summaries
    from ..output import write_output
    from ..render import Renderer, fill, preview_values, summaries_for_topics

    settings = app.settings
    chosen_topics = parse_topics(settings, topics)
    issue_obj = load_issue(settings, issue)
    summaries = resolve_summaries(issue_obj, load_summaries(settings))
    selection = summaries_for_topics(issue_obj, summaries, chosen_topics)
    email = Renderer(settings).render(issue_obj, selection)
    body = email.html if fmt == "html" else email.text
    if not raw:
        body = fill(body, email.substitutions(preview_values(settings, chosen_topics)))
    if output:
        write_output(output, body, make_folders=True)
        click.echo(f"Wrote {output} ({len(body.encode('utf-8')) / 1024:.1f} KB)", err=True)
    else:
        click.echo(body, nl=False)


@click.command()
@click.argument("issue")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
@pass_app
def preview(app, issue, host, port):
    """Serve a local page to look at the issue per topic choice (desktop and phone)."""
    from ..web.preview import create_preview_app

    settings = app.settings
    web_app = create_preview_app(settings, issue)  # validates the issue before serving
    click.echo(f"Previewing issue {issue} at http://{host}:{port}/  (Ctrl+C to stop)")
    web_app.run(host=host, port=port, debug=False, use_reloader=False)


@click.command()
@click.argument("issue")
@pass_app
def check(app, issue):
    """Pre-send checks: content, size, disclaimer, links, placeholders."""
    from ..checks import check_issue

    report = check_issue(app.settings, issue)
    if not report.ok:
        raise CheckFailed(report.problems)
    click.echo(
        f"issue {report.issue_id}: {report.summaries} summaries, "
        f"HTML {report.html_bytes / 1024:.1f} KB, text {report.text_bytes / 1024:.1f} KB "
        "(all topics): all checks passed"
    )


COMMANDS = [compose, render, preview, check]
