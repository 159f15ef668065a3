"""The `report` data: who got an issue, who did not and why, what failed or is unknown.

Everything here is read from the ledger, the only truth about who got what.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..store import Database
from ..store import events as store_events
from ..store import ledger as ledger_rows
from ..store.events import DELIVERY_STATES  # written by the webhook handler
from ..store.migrations import LEDGER_STATES

LISTABLE = LEDGER_STATES + DELIVERY_STATES


@dataclass
class SegmentReport:
    key: str
    summary_ids: tuple[str, ...]
    counts: dict[str, int]


@dataclass
class SendReport:
    issue_id: str
    state: str | None = None  # the issue's send: sending, sent, stopped (None: never started)
    backend: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # ledger state → rows
    delivery: dict[str, int] = field(default_factory=dict)  # webhook outcome → rows
    # `unknown` rows that the provider's webhook showed were accepted: now `sent`, not resent.
    unknown_resolved: int = 0
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # state → reason → rows
    segments: list[SegmentReport] = field(default_factory=list)
    # Subscribers with no row, by status now: not on the list when it was planned (or since).
    not_planned: dict[str, int] = field(default_factory=dict)
    created_at: str | None = None
    finished_at: str | None = None
    send_at: str | None = None
    schedule_id: str | None = None
    last_error: str | None = None
    locked_by: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)

    @property
    def open(self) -> int:
        """Rows that still need something done (pending, submitting, unknown, failed)."""
        return sum(self.count(s) for s in ledger_rows.OPEN_STATES)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.open == 0


def build_report(db: Database, issue_id: str) -> SendReport:
    report = SendReport(issue_id)
    send = ledger_rows.get_send(db, issue_id)
    if send:
        report.state = send["state"]
        report.backend = send["backend"]
        report.created_at = send["created_at"]
        report.finished_at = send["finished_at"]
        report.send_at = send["send_at"]
        report.schedule_id = send["batch_id"]
        report.last_error = send["last_error"]
        report.locked_by = send["lock_owner"]
    report.counts = ledger_rows.counts(db, issue_id)
    report.delivery = ledger_rows.delivery_counts(db, issue_id)
    report.unknown_resolved = store_events.count_accepted_unknown(db, issue_id)
    for state in (
        ledger_rows.SKIPPED,
        ledger_rows.FAILED,
        ledger_rows.UNKNOWN,
        ledger_rows.PENDING,
    ):
        if report.count(state):
            report.reasons[state] = ledger_rows.reasons(db, issue_id, state)
    plan = ledger_rows.get_plan(db, issue_id)
    meaning = plan.segments if plan else {}
    for key, counts in sorted(ledger_rows.segment_counts(db, issue_id).items()):
        if key:  # the empty key holds those with no matching topics
            report.segments.append(SegmentReport(key, tuple(meaning.get(key, ())), counts))
    report.segments.sort(key=lambda s: -sum(s.counts.values()))
    if report.total:
        report.not_planned = ledger_rows.unplanned_counts(db, issue_id)
    return report


def list_entries(db: Database, issue_id: str, state: str) -> Iterator[ledger_rows.LedgerEntry]:
    """Rows in a ledger state, or with a webhook delivery outcome (`delivered`, `bounced`...)."""
    if state in DELIVERY_STATES:
        return ledger_rows.iter_entries(db, issue_id, delivery=state)
    if state not in LEDGER_STATES:
        raise ValueError(f"unknown state {state!r}")
    return ledger_rows.iter_entries(db, issue_id, state=state)
