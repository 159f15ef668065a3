"""SQL of what the provider tells us: webhook events already applied, delivery outcomes on the
ledger, `unknown` rows that its word resolves (and those still waiting for it), and small key/value
state (suppression sync watermarks) in `meta`."""

from __future__ import annotations

from . import Database, now

DELIVERY_STATES = ("delivered", "bounced", "dropped")


def remember_event(db: Database, event_id: str) -> bool:
    """Record a webhook event id; False when it was applied before (a replay)."""
    cur = db.conn.execute(
        "INSERT INTO webhook_events (event_id, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (event_id, now()),
    )
    return cur.rowcount == 1


def record_delivery(
    db: Database, issue_id: str, subscriber_id: int, delivery: str, at: str
) -> bool:
    """Set the delivery outcome of one ledger row; False when there is no such row or no change.

    A bounce or a drop is final: a late or out-of-order `delivered` never overwrites it.
    """
    if delivery not in DELIVERY_STATES:
        raise ValueError(f"unknown delivery state {delivery!r}")
    cur = db.conn.execute(
        "UPDATE ledger SET delivery = ?, delivery_at = ? "
        "WHERE issue_id = ? AND subscriber_id = ? "
        "AND (delivery IS NULL OR (? != 'delivered' AND delivery != ?))",
        (delivery, at, issue_id, subscriber_id, delivery, delivery),
    )
    return cur.rowcount == 1


# Unknown rows and the provider's word ---------------------------------------------------------

# The reason of a row that was `unknown` until the provider said it had the message; a row sent
# in the ordinary way has no reason, so the report can count these apart.
ACCEPTED_PREFIX = "accepted: "


def accepted_reason(provider: str, event: str, at: str) -> str:
    """`accepted: SendGrid reported 'delivered' at 2026-12-01T09:00:00Z`."""
    return f"{ACCEPTED_PREFIX}{provider} reported {event!r} at {at}"


def accept_unknown(db: Database, issue_id: str, subscriber_id: int, reason: str) -> str | None:
    """The provider reported the message to this row (`reason`: one of `accepted_reason`'s),
    inside the caller's transaction. An `unknown` row becomes `sent` ('resolved'); a row still
    `submitting` keeps its state and the word is noted, applied if the row turns out `unknown`
    ('noted'); any other row, or none, changes nothing (None). A replay finds it done."""
    if not reason.startswith(ACCEPTED_PREFIX):
        raise ValueError(f"an acceptance reason starts with {ACCEPTED_PREFIX!r}")
    cur = db.conn.execute(
        "UPDATE ledger SET state = 'sent', reason = ?, updated_at = ? "
        "WHERE issue_id = ? AND subscriber_id = ? AND state = 'unknown'",
        (reason, now(), issue_id, subscriber_id),
    )
    if cur.rowcount:
        return "resolved"
    cur = db.conn.execute(
        "UPDATE ledger SET accepted_note = ? WHERE issue_id = ? AND subscriber_id = ? "
        "AND state = 'submitting' AND accepted_note IS NULL",
        (reason, issue_id, subscriber_id),
    )
    return "noted" if cur.rowcount else None


def count_accepted_unknown(db: Database, issue_id: str) -> int:
    """Rows that were `unknown` until the provider's word made them `sent`."""
    row = db.conn.execute(
        "SELECT count(*) FROM ledger WHERE issue_id = ? AND state = 'sent' "
        "AND substr(reason, 1, ?) = ?",
        (issue_id, len(ACCEPTED_PREFIX), ACCEPTED_PREFIX),
    ).fetchone()
    return row[0]


# When a row was last submitted; rows from before migration 4 have only `updated_at`, which is
# the time they became unknown: later than their submission, so they wait no less than others.
_SUBMITTED = "coalesce(submitted_at, updated_at)"


def put_back_unknown(db: Database, issue_id: str, submitted_by: str) -> int:
    """`unknown` rows submitted at or before `submitted_by` (UTC text) → `pending`; how many."""
    with db.transaction():
        cur = db.conn.execute(
            "UPDATE ledger SET state = 'pending', reason = NULL, updated_at = ? "
            f"WHERE issue_id = ? AND state = 'unknown' AND {_SUBMITTED} <= ?",
            (now(), issue_id, submitted_by),
        )
    return cur.rowcount


def unknown_by_segment(db: Database, issue_id: str, submitted_by: str | None) -> dict[str, int]:
    """Segment → `unknown` rows submitted at or before `submitted_by` (UTC text; None: all):
    what `--retry-unknown` would put back now."""
    where, args = "", [issue_id]
    if submitted_by is not None:
        where, args = f" AND {_SUBMITTED} <= ?", [issue_id, submitted_by]
    rows = db.conn.execute(
        "SELECT segment, count(*) AS n FROM ledger WHERE issue_id = ? AND state = 'unknown'"
        f"{where} GROUP BY segment",
        args,
    )
    return {r["segment"]: r["n"] for r in rows}


def unknown_submitted_after(
    db: Database, issue_id: str, submitted_by: str
) -> tuple[int, str | None, str | None]:
    """(rows, earliest, latest submission) of the `unknown` rows submitted after `submitted_by`."""
    row = db.conn.execute(
        f"SELECT count(*), min({_SUBMITTED}), max({_SUBMITTED}) FROM ledger "
        f"WHERE issue_id = ? AND state = 'unknown' AND {_SUBMITTED} > ?",
        (issue_id, submitted_by),
    ).fetchone()
    return row[0], row[1], row[2]


def get_meta(db: Database, key: str) -> str | None:
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row["value"]


def set_meta(db: Database, key: str, value: str) -> None:
    with db.transaction():
        db.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
