"""The click report as a small self-contained HTML page (`report --clicks --html FILE`): a bar
chart per issue or topic, one bar per summary, its length the summary's share of readers.

No script, font or stylesheet from anywhere: the CSS is in the page, and its Content-Security-
Policy forbids loading anything. Every text is escaped (the template autoescapes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..clock import now
from ..config import Settings
from ..output import open_output
from ..templating import make_environment, render_template
from .report import IssueClicks, SummaryClicks, TopicsReport

TEMPLATE = "reports/clicks.html.j2"


@dataclass(frozen=True)
class Bar:
    summary_id: str
    label: str
    detail: str  # topics, or the issue
    figures: str  # "12 of 340 readers (3.5%), 15 clicks"
    share: float
    width: float  # percent of the chart's width: the share against the chart's largest


@dataclass(frozen=True)
class Chart:
    title: str
    note: str
    bars: list[Bar]


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def figures(row: SummaryClicks) -> str:
    text = (
        f"{row.readers} of {plural(row.audience, 'recipient')} clicked ({row.share:.1%}), "
        f"{plural(row.clicks, 'click')}"
    )
    return text + (f"; {row.automated} automated, not counted" if row.automated else "")


def _bars(rows: list[SummaryClicks], detail) -> list[Bar]:
    top = max((r.share for r in rows), default=0.0)
    return [
        Bar(r.id, r.title, detail(r), figures(r), r.share, 100 * r.share / top if top else 0.0)
        for r in rows
    ]


def issue_chart(settings: Settings, report: IssueClicks) -> Chart:
    labels = settings.topic_labels
    note = (
        f"{plural(report.recipients, 'recipient')}; {plural(report.automated, 'automated click')}"
        f" left out. {_scale(report.summaries)}"
    )
    return Chart(
        f"Issue {report.issue_id}",
        note,
        _bars(report.summaries, lambda r: ", ".join(labels.get(t, t) for t in r.topics)),
    )


def topic_charts(report: TopicsReport) -> list[Chart]:
    return [
        Chart(
            topic.label,
            f"{plural(len(topic.summaries), 'summary', 'summaries')}. {_scale(topic.summaries)}",
            _bars(topic.summaries, _issue),
        )
        for topic in report.topics
    ]


def _scale(rows: list[SummaryClicks]) -> str:
    top = max((r.share for r in rows), default=0.0)
    return f"A full bar is {top:.1%} of recipients." if top else "No reader clicked yet."


def _issue(row: SummaryClicks) -> str:
    return f"issue {row.issue_id}"


def write_page(
    settings: Settings, path: str | os.PathLike, title: str, charts: list[Chart]
) -> None:
    """Write the page to `path` (atomically; NewsletterError naming the path if it cannot be)."""
    env = make_environment(settings.paths.templates)
    page = render_template(
        env, TEMPLATE, settings=settings, title=title, charts=charts, made_at=now()
    )
    with open_output(path) as out:
        out.write(page)
