"""The click report: per summary of an issue (`issue_clicks`), and per topic over issues
(`topic_clicks`), read from the click counts and the ledger, never from opens.

A summary's audience is the recipients whose email held it: the sum of its segments' emails
sent and not bounced or dropped. "Readers" are the distinct people who followed one of its
links; scanners and bots are counted apart (`automated`) and in no other figure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..config import Settings
from ..content import Summary, read_summaries
from ..errors import NewsletterError
from ..store import Database
from ..store import clicks as store_clicks
from ..store import ledger as ledger_rows
from .links import PAPER, SUMMARY


class ReportError(NewsletterError):
    """The click report cannot be made as asked (an unsent issue, a bad date)."""


@dataclass
class SummaryClicks:
    issue_id: str
    id: str
    title: str
    topics: list[str]
    audience: int = 0  # recipients whose email held the summary
    readers: int = 0  # distinct people who followed one of its links
    clicks: int = 0  # people's clicks on its links
    automated: int = 0  # scanners' and bots' clicks, left out of the rest
    by_kind: dict[str, int] = field(default_factory=dict)  # people's clicks per link kind

    @property
    def share(self) -> float:
        """Readers as a share of the summary's audience (0 with no audience)."""
        return self.readers / self.audience if self.audience else 0.0


@dataclass
class IssueClicks:
    issue_id: str
    recipients: int  # emails sent and not bounced or dropped
    summaries: list[SummaryClicks]  # in the issue's order
    other: dict[str, tuple[int, int]]  # links of no summary: kind → (people, automated)
    readers_closed: bool  # the issue's key is discarded: later clicks add no readers

    @property
    def automated(self) -> int:
        return sum(s.automated for s in self.summaries) + sum(a for _, a in self.other.values())

    @property
    def clicks(self) -> int:
        return sum(s.clicks for s in self.summaries) + sum(h for h, _ in self.other.values())


@dataclass
class TopicClicks:
    slug: str
    label: str
    summaries: list[SummaryClicks]  # most read first (share of audience)


@dataclass
class TopicsReport:
    since: dt.date | None
    issues: list[str]
    topics: list[TopicClicks]


def parse_since(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"--since {text!r}: not a date like 2026-06-01") from None


def issue_clicks(
    settings: Settings,
    db: Database,
    issue_id: str,
    summaries: dict[str, Summary] | None = None,
) -> IssueClicks:
    """The click figures of one sent issue. Raises ReportError for an issue never sent."""
    plan = ledger_rows.get_plan(db, issue_id)
    if plan is None:
        raise ReportError(f"issue {issue_id} has not been sent: it has no clicks to report")
    if summaries is None:
        summaries, _ = read_summaries(settings)  # a bad file elsewhere hides no figure
    audience_of = store_clicks.audience_by_segment(db, issue_id)
    rows: dict[str, SummaryClicks] = {}
    for summary_id in plan.summaries:
        known = summaries.get(summary_id)
        rows[summary_id] = SummaryClicks(
            issue_id,
            summary_id,
            known.title if known else summary_id,  # a summary file deleted since
            list(known.topics) if known else [],
        )
    for key, ids in plan.segments.items():
        for summary_id in ids:
            if summary_id in rows:
                rows[summary_id].audience += audience_of.get(key, 0)
    other: dict[str, tuple[int, int]] = {}
    for summary_id, kind, human, automated in store_clicks.counts(db, issue_id):
        row = rows.get(summary_id)
        if row is None:
            people, machines = other.get(kind, (0, 0))
            other[kind] = (people + human, machines + automated)
            continue
        row.clicks += human
        row.automated += automated
        if human:
            row.by_kind[kind] = row.by_kind.get(kind, 0) + human
    for summary_id, readers in store_clicks.readers(db, issue_id).items():
        if summary_id in rows:
            rows[summary_id].readers = readers
    return IssueClicks(
        issue_id,
        sum(audience_of.values()),
        list(rows.values()),
        other,
        store_clicks.key_discarded(db, issue_id),
    )


def topic_clicks(settings: Settings, db: Database, since: dt.date | None = None) -> TopicsReport:
    """Per topic, the summaries of the issues sent since `since` (all when None) with their
    readers, most read first."""
    sent = ledger_rows.sent_issues(db)  # issue → when its delivery began
    issues = [
        issue_id
        for issue_id in store_clicks.issues_with_clicks(db)
        if issue_id in sent and (since is None or sent[issue_id][:10] >= since.isoformat())
    ]
    summaries, _ = read_summaries(settings)
    by_topic: dict[str, list[SummaryClicks]] = {}
    for issue_id in issues:
        for row in issue_clicks(settings, db, issue_id, summaries).summaries:
            for topic in row.topics:
                by_topic.setdefault(topic, []).append(row)
    labels = settings.topic_labels
    # The settings' order, then topics retired since (their slug as label).
    order = [t for t in settings.topic_slugs if t in by_topic]
    order += sorted(t for t in by_topic if t not in labels)
    topics = [
        TopicClicks(
            slug,
            labels.get(slug, slug),
            sorted(by_topic[slug], key=lambda r: (-r.share, -r.readers, r.issue_id, r.id)),
        )
        for slug in order
    ]
    return TopicsReport(since, issues, topics)


KIND_LABELS = {SUMMARY: "summary page", PAPER: "original paper"}
