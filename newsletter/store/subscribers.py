"""SQL of subscribers and their append-only history.

These are plain storage operations; the rules about who may change what (an import never undoes an
unsubscribe, and so on) live in `newsletter.subscribers`. Every change of status, topics or name is
written to `history` in the same transaction as the change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from . import Database, now

ALL = "all"
TopicChoice = frozenset[str] | Literal["all"]
Source = Literal["import", "cli", "web", "sendgrid"]

_COLUMNS = (
    "id, email, name, topics, status, created_at, updated_at, "
    "status_changed_at, status_reason, status_source"
)


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    topics: TopicChoice  # "all" means every topic, present and future
    status: str
    created_at: str
    updated_at: str
    status_changed_at: str | None = None
    status_reason: str | None = None
    status_source: str | None = None

    @property
    def wants_all(self) -> bool:
        return self.topics == ALL

    def matching_topics(self, known: Iterable[str]) -> TopicChoice:
        """The topics that still exist in the settings ("all" stays "all")."""
        if self.topics == ALL:
            return ALL
        return frozenset(self.topics).intersection(known)


def normalise_email(email: str) -> str:
    """Addresses are compared case-insensitively and stored in lower case."""
    return email.strip().lower()


def encode_topics(topics: TopicChoice | Iterable[str]) -> str:
    if topics == ALL:
        return ALL
    slugs = sorted(set(topics))
    return ";".join(slugs) if slugs else ALL


def decode_topics(text: str) -> TopicChoice:
    if not text or text == ALL:
        return ALL
    return frozenset(t for t in text.split(";") if t)


def _row(row: sqlite3.Row | None) -> Subscriber | None:
    if row is None:
        return None
    data = dict(row)
    data["topics"] = decode_topics(data["topics"])
    return Subscriber(**data)


def get(db: Database, subscriber_id: int) -> Subscriber | None:
    row = db.conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,))
    return _row(row.fetchone())


def get_by_email(db: Database, email: str) -> Subscriber | None:
    row = db.conn.execute(
        f"SELECT {_COLUMNS} FROM subscribers WHERE email = ?", (normalise_email(email),)
    )
    return _row(row.fetchone())


def _history(db, subscriber_id, at, field, old, new, source, reason=None) -> None:
    db.conn.execute(
        "INSERT INTO history (subscriber_id, at, field, old_value, new_value, source, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (subscriber_id, at, field, old, new, source, reason),
    )


def insert(
    db: Database,
    email: str,
    name: str = "",
    topics: TopicChoice | Iterable[str] = ALL,
    status: str = "subscribed",
    source: Source = "cli",
    reason: str | None = None,
) -> Subscriber:
    """Add a subscriber (the caller has validated the address and topics)."""
    at = now()
    with db.transaction():
        cur = db.conn.execute(
            "INSERT INTO subscribers (email, name, topics, status, created_at, updated_at, "
            "status_changed_at, status_reason, status_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                normalise_email(email),
                name,
                encode_topics(topics),
                status,
                at,
                at,
                at,
                reason,
                source,
            ),
        )
        sid = cur.lastrowid
        _history(db, sid, at, "created", None, status, source, reason)
        encoded = encode_topics(topics)
        _history(db, sid, at, "topics", None, encoded, source)
    return get(db, sid)


def set_status(
    db: Database, subscriber_id: int, status: str, source: Source, reason: str | None = None
) -> bool:
    """Change the status; returns False (and records nothing) when it is unchanged."""
    with db.transaction():
        row = db.conn.execute("SELECT status FROM subscribers WHERE id = ?", (subscriber_id,))
        current = row.fetchone()
        if current is None:
            raise KeyError(subscriber_id)
        if current["status"] == status:
            return False
        at = now()
        db.conn.execute(
            "UPDATE subscribers SET status = ?, updated_at = ?, status_changed_at = ?, "
            "status_reason = ?, status_source = ? WHERE id = ?",
            (status, at, at, reason, source, subscriber_id),
        )
        _history(db, subscriber_id, at, "status", current["status"], status, source, reason)
    return True


def set_topics(
    db: Database, subscriber_id: int, topics: TopicChoice | Iterable[str], source: Source
) -> bool:
    """Replace the topic choice; returns False when it is unchanged."""
    encoded = encode_topics(topics)
    with db.transaction():
        row = db.conn.execute("SELECT topics FROM subscribers WHERE id = ?", (subscriber_id,))
        current = row.fetchone()
        if current is None:
            raise KeyError(subscriber_id)
        if current["topics"] == encoded:
            return False
        at = now()
        db.conn.execute(
            "UPDATE subscribers SET topics = ?, updated_at = ? WHERE id = ?",
            (encoded, at, subscriber_id),
        )
        _history(db, subscriber_id, at, "topics", current["topics"], encoded, source)
    return True


def set_name(db: Database, subscriber_id: int, name: str, source: Source) -> bool:
    with db.transaction():
        row = db.conn.execute("SELECT name FROM subscribers WHERE id = ?", (subscriber_id,))
        current = row.fetchone()
        if current is None:
            raise KeyError(subscriber_id)
        if current["name"] == name:
            return False
        at = now()
        db.conn.execute(
            "UPDATE subscribers SET name = ?, updated_at = ? WHERE id = ?",
            (name, at, subscriber_id),
        )
        _history(db, subscriber_id, at, "name", current["name"], name, source)
    return True


def iter_subscribers(
    db: Database, status: str | None = "subscribed", page_size: int = 1000
) -> Iterator[Subscriber]:
    """Stream subscribers (by id) without holding the list in memory: keyset pages of `page_size`."""
    last_id = 0
    while True:
        if status is None:
            rows = db.conn.execute(
                f"SELECT {_COLUMNS} FROM subscribers WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, page_size),
            ).fetchall()
        else:
            rows = db.conn.execute(
                f"SELECT {_COLUMNS} FROM subscribers WHERE status = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (status, last_id, page_size),
            ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _row(row)
        last_id = rows[-1]["id"]


def history(db: Database, subscriber_id: int) -> list[dict]:
    rows = db.conn.execute(
        "SELECT at, field, old_value, new_value, source, reason FROM history "
        "WHERE subscriber_id = ? ORDER BY id",
        (subscriber_id,),
    )
    return [dict(r) for r in rows]


def count_by_status(db: Database) -> dict[str, int]:
    rows = db.conn.execute("SELECT status, count(*) AS n FROM subscribers GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
