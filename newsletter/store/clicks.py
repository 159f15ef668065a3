"""SQL of the click counts (`newsletter.sendgrid.clicks` writes them, `newsletter.engagement`
reads them): counts per (issue, summary, link kind, day), distinct readers under a per-issue key,
a short window of recent clicks for spotting scanners, and (opt-in) who clicked what."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from . import Database

KEY_BYTES = 32
RECENT_SECONDS = 3600  # how long recent clicks are kept for the scanner check (event time)


# The link map ------------------------------------------------------------------------------


def link_map(db: Database, issue_id: str) -> list[tuple[str, int, str, str]]:
    """(url, position, summary_id, kind) of the issue's recorded links; [] when none yet."""
    rows = db.conn.execute(
        "SELECT url, position, summary_id, kind FROM click_links WHERE issue_id = ? "
        "ORDER BY position, kind",
        (issue_id,),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def save_link_map(db: Database, issue_id: str, rows: list[tuple[str, int, str, str]]) -> None:
    db.conn.executemany(
        "INSERT OR IGNORE INTO click_links (issue_id, url, position, summary_id, kind) "
        "VALUES (?, ?, ?, ?, ?)",
        ((issue_id, *row) for row in rows),
    )


# The recipient of a clicked email -----------------------------------------------------------


@dataclass(frozen=True)
class SentEmail:
    """What the ledger knows of one recipient's email: its segment and when it arrived."""

    segment: str
    delivered_at: str | None  # from SendGrid's `delivered` event
    accepted_at: str  # when SendGrid accepted the request (the ledger row's last change)
    send_at: str | None  # the send's scheduled time, if it was scheduled


def sent_email(db: Database, issue_id: str, subscriber_id: int) -> SentEmail | None:
    """The ledger's record of an email sent to this subscriber; None when none was sent."""
    row = db.conn.execute(
        "SELECT l.segment, l.delivery, l.delivery_at, l.updated_at, s.send_at FROM ledger AS l "
        "LEFT JOIN sends AS s ON s.issue_id = l.issue_id "
        "WHERE l.issue_id = ? AND l.subscriber_id = ? AND l.state = 'sent'",
        (issue_id, subscriber_id),
    ).fetchone()
    if row is None:
        return None
    delivered = row["delivery_at"] if row["delivery"] == "delivered" else None
    return SentEmail(row["segment"], delivered, row["updated_at"], row["send_at"])


# The per-issue key ----------------------------------------------------------------------------


def issue_key(db: Database, issue_id: str, now: str, discard_after: str) -> bytes | None:
    """The issue's key for counting readers, made on first use; None once it was discarded."""
    db.conn.execute(
        "INSERT OR IGNORE INTO click_keys (issue_id, key, created_at, discard_after) "
        "VALUES (?, ?, ?, ?)",
        (issue_id, secrets.token_bytes(KEY_BYTES), now, discard_after),
    )
    row = db.conn.execute("SELECT key FROM click_keys WHERE issue_id = ?", (issue_id,)).fetchone()
    return row["key"]


def discard_expired_keys(db: Database, now: str) -> int:
    """Forget every key whose time is up: its hashes can no longer be linked to anyone."""
    cur = db.conn.execute(
        "UPDATE click_keys SET key = NULL WHERE key IS NOT NULL AND discard_after <= ?", (now,)
    )
    if cur.rowcount:  # the scanner check needs the key too: its window goes with it
        db.conn.execute(
            "DELETE FROM click_recent WHERE issue_id IN "
            "(SELECT issue_id FROM click_keys WHERE key IS NULL)"
        )
    return cur.rowcount


def key_discarded(db: Database, issue_id: str) -> bool:
    row = db.conn.execute(
        "SELECT key IS NULL AS gone FROM click_keys WHERE issue_id = ?", (issue_id,)
    ).fetchone()
    return bool(row and row["gone"])


# Counting -------------------------------------------------------------------------------------


def add_count(
    db: Database, issue_id: str, summary_id: str, kind: str, day: str, human: int, automated: int
) -> None:
    """Add a click to one count."""
    db.conn.execute(
        "INSERT INTO click_counts (issue_id, summary_id, kind, day, human, automated) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issue_id, summary_id, kind, day) DO UPDATE "
        "SET human = click_counts.human + excluded.human, "
        "automated = click_counts.automated + excluded.automated",
        (issue_id, summary_id, kind, day, human, automated),
    )


def move_to_automated(db: Database, issue_id: str, summary_id: str, kind: str, day: str) -> None:
    """A click counted as a person's turned out to be a scanner's."""
    db.conn.execute(
        "UPDATE click_counts SET human = human - 1, automated = automated + 1 "
        "WHERE issue_id = ? AND summary_id = ? AND kind = ? AND day = ?",
        (issue_id, summary_id, kind, day),
    )


def add_clicker(db: Database, issue_id: str, summary_id: str, clicker: str) -> None:
    """One more of this reader's clicks on the summary's links."""
    db.conn.execute(
        "INSERT INTO click_clickers (issue_id, summary_id, clicker, human) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (issue_id, summary_id, clicker) DO UPDATE SET human = click_clickers.human + 1",
        (issue_id, summary_id, clicker),
    )


def remove_clicker_click(db: Database, issue_id: str, summary_id: str, clicker: str) -> None:
    """One of this reader's clicks was a scanner's: at none left, they are no reader."""
    db.conn.execute(
        "UPDATE click_clickers SET human = human - 1 "
        "WHERE issue_id = ? AND summary_id = ? AND clicker = ? AND human > 0",
        (issue_id, summary_id, clicker),
    )


@dataclass(frozen=True)
class RecentClick:
    id: int
    link: str
    summary_id: str
    kind: str
    day: str
    at: float
    automated: bool


def add_recent(
    db: Database,
    issue_id: str,
    clicker: str,
    link: str,
    summary_id: str,
    kind: str,
    day: str,
    at: float,
    automated: bool,
) -> None:
    db.conn.execute(
        "INSERT INTO click_recent (issue_id, clicker, link, summary_id, kind, day, at, automated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (issue_id, clicker, link, summary_id, kind, day, at, int(automated)),
    )


def recent_clicks(
    db: Database, issue_id: str, clicker: str, low: float, high: float
) -> list[RecentClick]:
    rows = db.conn.execute(
        "SELECT id, link, summary_id, kind, day, at, automated FROM click_recent "
        "WHERE issue_id = ? AND clicker = ? AND at BETWEEN ? AND ? ORDER BY at, id",
        (issue_id, clicker, low, high),
    )
    return [
        RecentClick(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows
    ]  # fmt: skip


def mark_recent_automated(db: Database, ids: list[int]) -> None:
    db.conn.executemany("UPDATE click_recent SET automated = 1 WHERE id = ?", ((i,) for i in ids))


def forget_recent(db: Database, before: float) -> None:
    db.conn.execute("DELETE FROM click_recent WHERE at < ?", (before,))


def add_subscriber_click(
    db: Database,
    issue_id: str,
    subscriber_id: int,
    summary_id: str,
    kind: str,
    at: str,
    automated: bool,
) -> None:
    """Only with `tracking.per_subscriber: true`."""
    db.conn.execute(
        "INSERT INTO click_subscribers (issue_id, subscriber_id, summary_id, kind, at, automated) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (issue_id, subscriber_id, summary_id, kind, at, int(automated)),
    )


def mark_subscriber_clicks_automated(
    db: Database, issue_id: str, subscriber_id: int, low: str, high: str
) -> None:
    db.conn.execute(
        "UPDATE click_subscribers SET automated = 1 "
        "WHERE issue_id = ? AND subscriber_id = ? AND at BETWEEN ? AND ?",
        (issue_id, subscriber_id, low, high),
    )


# Reading --------------------------------------------------------------------------------------


def counts(db: Database, issue_id: str) -> list[tuple[str, str, int, int]]:
    """(summary_id, kind, human, automated) of an issue, summed over days."""
    rows = db.conn.execute(
        "SELECT summary_id, kind, sum(human), sum(automated) FROM click_counts "
        "WHERE issue_id = ? GROUP BY summary_id, kind ORDER BY summary_id, kind",
        (issue_id,),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def readers(db: Database, issue_id: str) -> dict[str, int]:
    """summary_id → distinct readers who clicked one of its links (people, not scanners)."""
    rows = db.conn.execute(
        "SELECT summary_id, count(*) FROM click_clickers WHERE issue_id = ? AND human > 0 "
        "GROUP BY summary_id",
        (issue_id,),
    )
    return {r[0]: r[1] for r in rows}


def issues_with_clicks(db: Database) -> list[str]:
    rows = db.conn.execute("SELECT DISTINCT issue_id FROM click_counts ORDER BY issue_id")
    return [r[0] for r in rows]


def audience_by_segment(db: Database, issue_id: str) -> dict[str, int]:
    """segment key → emails sent and not bounced or dropped (what readers could click)."""
    rows = db.conn.execute(
        "SELECT segment, count(*) FROM ledger WHERE issue_id = ? AND state = 'sent' "
        "AND (delivery IS NULL OR delivery = 'delivered') GROUP BY segment",
        (issue_id,),
    )
    return {r[0]: r[1] for r in rows}
