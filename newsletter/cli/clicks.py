"""How `newsletter report` prints the click report (`--clicks`, `--topics`) and writes its page
(`--html`); the figures are `newsletter.engagement.report`'s."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engagement import page
from ..engagement.report import (
    KIND_LABELS,
    IssueClicks,
    ReportError,
    TopicsReport,
    issue_clicks,
    parse_since,
    topic_clicks,
)


def check_options(issue: str | None, clicks: bool, topics: bool, since, html) -> None:
    """The report's options that go together (ReportError, one line, when they do not)."""
    if topics and (issue or clicks):
        raise ReportError("--topics reports over every issue: give no ISSUE and no --clicks")
    if not topics and issue is None:
        raise ReportError("give an ISSUE to report on, or --topics")
    if since is not None and not topics:
        raise ReportError("--since goes with --topics")
    if html is not None and not (clicks or topics):
        raise ReportError("--html writes the click report: add --clicks or --topics")


def _summary_table(title: str, rows, show_issue: bool, labels: dict[str, str]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("summary")
    table.add_column("issue" if show_issue else "topics")
    for name in ("readers", "share", "clicks", "automated"):
        table.add_column(name, justify="right")
    for r in rows:
        kinds = ", ".join(f"{KIND_LABELS.get(k, k)} {n}" for k, n in sorted(r.by_kind.items()))
        kinds = f"clicks: {kinds}" if kinds else ""
        detail = r.issue_id if show_issue else ", ".join(labels.get(t, t) for t in r.topics)
        table.add_row(
            Text(r.title + (f"\n{kinds}" if kinds else "")),
            Text(detail),
            f"{r.readers} of {r.audience}",
            f"{r.share:.1%}",
            str(r.clicks),
            str(r.automated),
        )
    return table


def print_issue_clicks(console: Console, settings, report: IssueClicks) -> None:
    console.print(
        f"issue {report.issue_id}: {report.clicks} clicks by people on {report.recipients} "
        f"emails; {report.automated} automated (scanners, bots) left out",
        markup=False,
    )
    console.print(_summary_table("summaries", report.summaries, False, settings.topic_labels))
    if report.other:
        parts = ", ".join(f"{kind} {h}" for kind, (h, _) in sorted(report.other.items()))
        console.print(f"other links: {parts}", markup=False)
    if report.readers_closed:
        console.print(
            "the issue's reader key is discarded: clicks since then add no readers", markup=False
        )


def print_topic_clicks(console: Console, settings, report: TopicsReport) -> None:
    since = f" sent since {report.since}" if report.since else ""
    if not report.issues:
        console.print(f"no clicks recorded for issues{since}", markup=False)
        return
    count = f"{len(report.issues)} issue" + ("" if len(report.issues) == 1 else "s")
    console.print(f"{count}{since}: {', '.join(report.issues)}", markup=False)
    for topic in report.topics:
        console.print(_summary_table(topic.label, topic.summaries, True, settings.topic_labels))


def run_report(app, console: Console, issue_id: str | None, since, html) -> None:
    """`report ISSUE --clicks` or `report --topics`, printed, and the page when asked."""
    settings = app.settings
    if issue_id is not None:
        data = issue_clicks(settings, app.db, issue_id)
        print_issue_clicks(console, settings, data)
        title, charts = f"Clicks: issue {issue_id}", [page.issue_chart(settings, data)]
    else:
        topics = topic_clicks(settings, app.db, parse_since(since) if since else None)
        print_topic_clicks(console, settings, topics)
        title, charts = "Clicks by topic", page.topic_charts(topics)
    if html is not None:
        page.write_page(settings, html, title, charts)
        console.print(f"wrote {html}", markup=False)
