"""The plan: which of the issue's summaries each subscriber gets, grouped into segments.

A segment is the tuple of summary ids (in issue order) a subscriber's topics select; everyone in a
segment gets the same rendered email. Planning streams the subscribers and writes one ledger row
each (`pending`, or `skipped` when no summary matches), in batched transactions; it can be run
again at any time (after a crash half-way, or to add people who subscribed since) and only adds
the rows that are missing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import Settings
from ..content import Issue, Summary
from ..errors import DeliveryError
from ..render import select_summaries
from ..store import Database
from ..store import events as store_events
from ..store import ledger as ledger_rows
from ..store.subscribers import TopicChoice, decode_topics

SKIP_NO_TOPICS = "no matching topics"
PLAN_PAGE = 2000  # subscribers per planning transaction


def segment_key(summary_ids: Iterable[str]) -> str:
    """A short, stable key for a selection of summaries (the ledger stores it on every row)."""
    return hashlib.sha1("\n".join(summary_ids).encode("utf-8")).hexdigest()[:12]


class Selector:
    """Maps a topic choice to its segment (summary ids), computed once per distinct choice."""

    def __init__(self, settings: Settings, summaries: list[Summary]):
        self.known = settings.topic_slugs
        self.summaries = summaries
        self._cache: dict[TopicChoice, tuple[str, ...]] = {}
        self._by_text: dict[str, tuple[str, ...]] = {}

    def select(self, topics: TopicChoice) -> tuple[str, ...]:
        """Summary ids for this choice, in issue order; () when none matches."""
        ids = self._cache.get(topics)
        if ids is None:
            chosen = topics if topics == "all" else frozenset(topics).intersection(self.known)
            ids = tuple(s.id for s in select_summaries(self.summaries, chosen))
            self._cache[topics] = ids
        return ids

    def select_encoded(self, text: str) -> tuple[str, ...]:
        """The same for topics as stored ('all' or 'a;b'), cached by that text."""
        ids = self._by_text.get(text)
        if ids is None:
            ids = self._by_text[text] = self.select(decode_topics(text))
        return ids


@dataclass
class SegmentPlan:
    key: str
    summary_ids: tuple[str, ...]
    recipients: int = 0  # still to send

    def batches(self, batch_size: int) -> int:
        return math.ceil(self.recipients / batch_size)


@dataclass
class PlanPreview:
    """What a send would do now; computed without writing anything (`send --dry-run`)."""

    issue_id: str
    backend: str
    batch_size: int
    segments: list[SegmentPlan] = field(default_factory=list)
    skipped: int = 0  # subscribed, but no summary matches their topics
    not_subscribed: dict[str, int] = field(default_factory=dict)  # unsubscribed, bounced...
    existing: dict[str, int] = field(default_factory=dict)  # ledger rows of earlier runs, by state
    # With --retry-unknown: unknown rows submitted within delivery.unknown_grace stay unknown.
    unknown_held: int = 0

    @property
    def recipients(self) -> int:
        return sum(s.recipients for s in self.segments)

    @property
    def requests(self) -> int:
        """Batches (SendGrid requests) needed for everyone still to send."""
        return sum(s.batches(self.batch_size) for s in self.segments)

    @property
    def suppressed(self) -> int:
        return sum(self.not_subscribed.values())


def check_record(record: ledger_rows.PlanRecord | None, issue: Issue) -> None:
    """A send in progress keeps the summary list it began with: refuse if the file changed."""
    if record is not None and list(record.summaries) != list(issue.summaries):
        raise DeliveryError(
            f"issue {issue.id} was edited after its send began: its summaries were "
            f"{', '.join(record.summaries)}; restore that list to continue the send"
        )


def write_plan(db: Database, settings: Settings, issue: Issue, summaries: list[Summary]) -> int:
    """Add a ledger row for every subscribed subscriber who has none yet; returns how many.

    Streams the subscribers; each page is one transaction, so a crash half-way keeps what was
    written and the next run completes it.
    """
    record = ledger_rows.get_plan(db, issue.id)
    check_record(record, issue)
    saved_keys: set[str] | None = None  # None: the record is not in the database yet
    if record is None:
        record = ledger_rows.PlanRecord(summaries=list(issue.summaries), segments={})
    else:
        saved_keys = set(record.segments)
    selector = Selector(settings, summaries)
    keys: dict[tuple[str, ...], str] = {}
    added = 0
    rows: list[tuple[int, str, str, str | None]] = []

    def flush() -> None:
        nonlocal added, saved_keys
        if not rows:
            return
        with db.transaction():
            # The record of what each key means is written with the first rows that use it.
            if saved_keys is None or saved_keys != set(record.segments):
                ledger_rows.save_plan(db, issue.id, record)
                saved_keys = set(record.segments)
            # In key order: the ledger is clustered by (issue, segment, subscriber), so sorted
            # inserts land on adjacent pages instead of one page per row.
            rows.sort(key=lambda row: row[1])
            added += ledger_rows.add_rows(db, issue.id, rows)
        rows.clear()

    resuming = saved_keys is not None
    for page in ledger_rows.iter_subscribed(db, PLAN_PAGE):
        # On a resumed send most rows exist: skip them rather than re-insert and ignore.
        done = ledger_rows.planned_ids(db, issue.id, page[0][0], page[-1][0]) if resuming else ()
        for subscriber_id, topics in page:
            if subscriber_id in done:
                continue
            ids = selector.select_encoded(topics)
            key = keys.get(ids)
            if key is None:
                key = keys[ids] = segment_key(ids) if ids else ""
                if ids:
                    record.segments.setdefault(key, list(ids))
            if ids:
                rows.append((subscriber_id, key, ledger_rows.PENDING, None))
            else:
                rows.append((subscriber_id, key, ledger_rows.SKIPPED, SKIP_NO_TOPICS))
        flush()
    if added:
        ledger_rows.refresh_statistics(db)
    return added


def preview_plan(
    db: Database,
    settings: Settings,
    issue: Issue,
    summaries: list[Summary],
    backend: str,
    batch_size: int,
    retry_unknown: bool = False,
    unknown_submitted_by: str | None = None,
) -> PlanPreview:
    """The plan as a send would carry it out now, without writing anything.

    Rows already in the ledger count as they stand (pending and failed ones will be sent; with
    `retry_unknown`, so will the unknown ones submitted at or before `unknown_submitted_by`
    (UTC text; None: all of them, `--now`), the rest are `unknown_held`); subscribers without a
    row are planned in memory.
    """
    record = ledger_rows.get_plan(db, issue.id)
    check_record(record, issue)
    preview = PlanPreview(issue.id, backend, batch_size)
    statuses = ledger_rows.subscriber_counts(db)
    preview.not_subscribed = {k: v for k, v in statuses.items() if k != "subscribed" and v}
    preview.existing = ledger_rows.counts(db, issue.id)
    by_key: dict[str, SegmentPlan] = {}

    def segment(key: str, ids: tuple[str, ...]) -> SegmentPlan:
        plan = by_key.get(key)
        if plan is None:
            plan = by_key[key] = SegmentPlan(key, ids)
        return plan

    resend = {ledger_rows.PENDING, ledger_rows.FAILED}
    if record is not None:
        put_back = (
            store_events.unknown_by_segment(db, issue.id, unknown_submitted_by)
            if retry_unknown and preview.existing.get(ledger_rows.UNKNOWN)
            else {}
        )
        if retry_unknown:
            preview.unknown_held = preview.existing.get(ledger_rows.UNKNOWN, 0) - sum(
                put_back.values()
            )
        for key, states in ledger_rows.segment_counts(db, issue.id).items():
            n = sum(count for state, count in states.items() if state in resend)
            n += put_back.get(key, 0)
            if n and key in record.segments:
                segment(key, tuple(record.segments[key])).recipients += n

    selector = Selector(settings, summaries)
    keys: dict[tuple[str, ...], str] = {}
    for page in ledger_rows.iter_subscribed(db, PLAN_PAGE):
        done = ledger_rows.planned_ids(db, issue.id, page[0][0], page[-1][0]) if record else set()
        for subscriber_id, topics in page:
            if subscriber_id in done:
                continue
            ids = selector.select_encoded(topics)
            if ids:
                key = keys.get(ids) or keys.setdefault(ids, segment_key(ids))
                segment(key, ids).recipients += 1
            else:
                preview.skipped += 1
    preview.skipped += preview.existing.get(ledger_rows.SKIPPED, 0)
    preview.segments = sorted(
        (s for s in by_key.values() if s.recipients),
        key=lambda s: (-s.recipients, s.summary_ids),
    )
    return preview
