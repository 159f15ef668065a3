"""SQL of what the provider tells us: webhook events already applied, delivery outcomes on the
ledger, and small key/value state (suppression sync watermarks) in `meta`."""

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
