"""SQL of subscribers and their append-only history: rows in, rows out, no rules.

A lookup returns None when there is no such row (`get_row`, `get_row_by_email`); a `write_*`
changes a column as asked. The rules live in the package `newsletter.subscribers`: addresses and
topics in `subscribers.fields`, statuses in `subscribers.rules` (the only caller of the functions
here that write a status). Every change of status, topics or name is written to `history` in the
same transaction as the change.

A CSV import is staged in a TEMP table (`ImportStage`: on the connection, never in the database
file), joined with `subscribers` in pages, and written back with `write_import_batch` inside the
caller's one transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from . import Database, now
from .postgres import copy_rows, staged

ALL = "all"
TopicChoice = frozenset[str] | Literal["all"]
HistorySource = Literal["import", "cli", "web", "sendgrid", "signup"]

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


@functools.lru_cache(maxsize=1024)
def decode_topics(text: str) -> TopicChoice:
    """'all' or the frozenset of slugs. Cached: a send decodes it for every recipient, and a
    list holds few distinct choices (the result is immutable, so sharing it is safe)."""
    if not text or text == ALL:
        return ALL
    return frozenset(t for t in text.split(";") if t)


def _row(row: sqlite3.Row | None) -> Subscriber | None:
    if row is None:
        return None
    data = dict(row)
    data["topics"] = decode_topics(data["topics"])
    return Subscriber(**data)


def get_row(db: Database, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, or None."""
    row = db.conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,))
    return _row(row.fetchone())


def get_row_by_email(db: Database, email: str) -> Subscriber | None:
    """The subscriber with this address (any case), or None."""
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
    source: HistorySource = "cli",
    reason: str | None = None,
) -> Subscriber:
    """Add a subscriber (the caller has validated the address and topics)."""
    at = now()
    with db.transaction():
        cur = db.conn.execute(
            "INSERT INTO subscribers (email, name, topics, status, created_at, updated_at, "
            "status_changed_at, status_reason, status_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
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
        sid = cur.fetchone()[0]
        _history(db, sid, at, "created", None, status, source, reason)
        encoded = encode_topics(topics)
        _history(db, sid, at, "topics", None, encoded, source)
    return get_row(db, sid)


def _change(
    db: Database,
    subscriber_id: int,
    field: str,
    value: str,
    source: HistorySource,
    reason: str | None = None,
) -> bool:
    """Set one of status/topics/name and append its history row, in one transaction.

    Returns False (and records nothing) when the value is unchanged; KeyError for an unknown id.
    A status change also records when, why and from where it last changed.
    """
    assert field in ("status", "topics", "name")  # a column name goes into the SQL text
    with db.transaction():
        row = db.conn.execute(f"SELECT {field} FROM subscribers WHERE id = ?", (subscriber_id,))
        current = row.fetchone()
        if current is None:
            raise KeyError(subscriber_id)
        if current[field] == value:
            return False
        at = now()
        if field == "status":
            db.conn.execute(
                "UPDATE subscribers SET status = ?, updated_at = ?, status_changed_at = ?, "
                "status_reason = ?, status_source = ? WHERE id = ?",
                (value, at, at, reason, source, subscriber_id),
            )
        else:
            db.conn.execute(
                f"UPDATE subscribers SET {field} = ?, updated_at = ? WHERE id = ?",
                (value, at, subscriber_id),
            )
        _history(db, subscriber_id, at, field, current[field], value, source, reason)
    return True


def write_status(
    db: Database, subscriber_id: int, status: str, source: HistorySource, reason: str | None = None
) -> bool:
    """Change the status; returns False (and records nothing) when it is unchanged."""
    return _change(db, subscriber_id, "status", status, source, reason)


def write_topics(
    db: Database, subscriber_id: int, topics: TopicChoice | Iterable[str], source: HistorySource
) -> bool:
    """Replace the topic choice; returns False when it is unchanged."""
    return _change(db, subscriber_id, "topics", encode_topics(topics), source)


def write_name(db: Database, subscriber_id: int, name: str, source: HistorySource) -> bool:
    """Replace the name; returns False when it is unchanged."""
    return _change(db, subscriber_id, "name", name, source)


def _filters(
    status: str | None, topic: str | None, topic_includes_all: bool
) -> tuple[list[str], list]:
    clauses, params = [], []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if topic is not None:
        # Wrapped in ';' so that 'genetics' never matches inside 'epigenetics'.
        match = "instr(';' || topics || ';', ';' || ? || ';') > 0"
        if topic_includes_all:
            match = f"(topics = '{ALL}' OR {match})"
        clauses.append(match)
        params.append(topic)
    return clauses, params


def iter_subscribers(
    db: Database,
    status: str | None = "subscribed",
    page_size: int = 1000,
    *,
    topic: str | None = None,
    topic_includes_all: bool = True,
) -> Iterator[Subscriber]:
    """Stream subscribers (by id) without holding the list in memory: keyset pages of `page_size`.

    `status=None` streams every status. `topic` keeps those who chose that topic, and (unless
    `topic_includes_all` is False) those who chose "all".
    """
    clauses, params = _filters(status, topic, topic_includes_all)
    where = " AND ".join([*clauses, "id > ?"])
    sql = f"SELECT {_COLUMNS} FROM subscribers WHERE {where} ORDER BY id LIMIT ?"
    last_id = 0
    while True:
        rows = db.conn.execute(sql, (*params, last_id, page_size)).fetchall()
        if not rows:
            return
        for row in rows:
            yield _row(row)
        last_id = rows[-1]["id"]


def count(
    db: Database,
    status: str | None = None,
    *,
    topic: str | None = None,
    topic_includes_all: bool = True,
) -> int:
    """How many subscribers `iter_subscribers` with the same filters would stream."""
    clauses, params = _filters(status, topic, topic_includes_all)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return db.conn.execute(f"SELECT count(*) FROM subscribers {where}", params).fetchone()[0]


def count_by_topics(db: Database, status: str | None = "subscribed") -> dict[str, int]:
    """Number of subscribers per stored topic choice (the encoded text: 'all' or 'a;b')."""
    if status is None:
        rows = db.conn.execute("SELECT topics, count(*) AS n FROM subscribers GROUP BY topics")
    else:
        rows = db.conn.execute(
            "SELECT topics, count(*) AS n FROM subscribers WHERE status = ? GROUP BY topics",
            (status,),
        )
    return {r["topics"]: r["n"] for r in rows}


def history_rows(db: Database, subscriber_id: int) -> list[dict]:
    """Every recorded change of one subscriber, oldest first (at, field, old/new_value, source, reason)."""
    rows = db.conn.execute(
        "SELECT at, field, old_value, new_value, source, reason FROM history "
        "WHERE subscriber_id = ? ORDER BY id",
        (subscriber_id,),
    )
    return [dict(r) for r in rows]


def count_by_status(db: Database) -> dict[str, int]:
    """Number of subscribers per status (statuses with none are absent)."""
    rows = db.conn.execute("SELECT status, count(*) AS n FROM subscribers GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


# Bulk import ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedRow:
    """One valid CSV row joined with the subscriber it names (the `current_*` are None if new).

    `name`, `topics` and `status` are None when the file has no such column.
    """

    line: int
    email: str
    name: str | None
    topics: str | None
    status: str | None
    current_id: int | None
    current_name: str | None
    current_topics: str | None
    current_status: str | None


class ImportStage:
    """The rows of one import, in a TEMP table: on this connection only, never in the database file.

    Staging lets the import check duplicates and join with the existing subscribers in SQL, in
    pages, instead of holding the file in memory or querying once per row.
    """

    TABLE = "import_stage"
    COLUMNS = ("line", "email", "name", "topics", "status", "ok")

    def __init__(self, db: Database):
        self.db = db
        self.conn = db.conn
        self.conn.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
        self.conn.execute(
            f"CREATE TEMP TABLE {self.TABLE} ("
            " line INTEGER PRIMARY KEY,"
            " email TEXT NOT NULL COLLATE NOCASE,"
            " name TEXT, topics TEXT, status TEXT,"
            " ok INTEGER NOT NULL)"
        )

    def add(
        self, rows: Iterable[tuple[int, str, str | None, str | None, str | None, bool]]
    ) -> None:
        """Stage rows of (line, email, name, topics, status, ok); `ok` False: refused, kept for duplicates."""
        # Temp-only writes take no lock on the main database; one statement batch, not one per row.
        began = not self.conn.in_transaction
        if began:
            self.conn.execute("BEGIN")
        try:
            if self.db.engine == "postgresql":
                copy_rows(self.conn, self.TABLE, self.COLUMNS, rows)
            else:
                self.conn.executemany(
                    f"INSERT INTO {self.TABLE} ({', '.join(self.COLUMNS)}) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except BaseException:
            if began:
                self.conn.execute("ROLLBACK")
            raise
        if began:
            self.conn.execute("COMMIT")

    def duplicates(self) -> list[tuple[int, str, int]]:
        """(line, email, first line) of every row whose address appeared on an earlier line."""
        self.conn.execute(
            "CREATE INDEX IF NOT EXISTS import_stage_email ON import_stage (email, line)"
        )
        if self.db.engine == "postgresql":
            # Autovacuum never looks at a TEMP table: without statistics the planner guesses
            # a few rows and joins each page with `subscribers` the slow way (measured: the
            # pages of a 100,000-row re-import took 12 s instead of 1).
            self.conn.execute(f"ANALYZE {self.TABLE}")
        # A window, not a self-join: a file with one address on every line stays O(n log n).
        rows = self.conn.execute(
            "SELECT line, email, first FROM ("
            " SELECT line, email, min(line) OVER (PARTITION BY email) AS first"
            f" FROM {self.TABLE}) AS staged WHERE line > first ORDER BY line"
        )
        return [tuple(r) for r in rows]

    def refuse(self, lines: Iterable[int]) -> None:
        """Mark rows as refused: they are not imported."""
        self.conn.executemany(
            f"UPDATE {self.TABLE} SET ok = 0 WHERE line = ?", ((line,) for line in lines)
        )

    def pages(self, page_size: int = 5000) -> Iterator[list[StagedRow]]:
        """The valid rows in file order, each joined with its subscriber, one page at a time.

        Each page is fetched whole before it is yielded, so the caller may write between pages.
        """
        last = 0
        while True:
            rows = self.conn.execute(
                "SELECT i.line, i.email, i.name, i.topics, i.status, "
                "s.id, s.name, s.topics, s.status "
                f"FROM {self.TABLE} i LEFT JOIN subscribers s ON s.email = i.email "
                "WHERE i.ok = 1 AND i.line > ? ORDER BY i.line LIMIT ?",
                (last, page_size),
            ).fetchall()
            if not rows:
                return
            yield [StagedRow(*row) for row in rows]
            last = rows[-1][0]

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.TABLE}")

    def __enter__(self) -> ImportStage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ImportBatch:
    """The writes of one page of an import, decided by `newsletter.subscribers.csv_import`.

    new: (email, name, topics, status, reason); names and topics: (id, old, new);
    statuses: (id, old, new, reason).
    """

    new: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)
    names: list[tuple[int, str, str]] = field(default_factory=list)
    topics: list[tuple[int, str, str]] = field(default_factory=list)
    statuses: list[tuple[int, str, str, str | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.new) + len(self.names) + len(self.topics) + len(self.statuses)


def write_import_batch(db: Database, batch: ImportBatch, at: str, source: HistorySource) -> None:
    """Apply one batch, history included. Joins the caller's transaction.

    SQLite: `executemany`. PostgreSQL: COPY (new subscribers and history rows straight into
    their tables, changes through a TEMP table and one `UPDATE … FROM` a column): a statement
    per page, not one per row. Either way a new address that is already taken fails the
    transaction, and new subscribers get ids in file order.
    """
    bulk = db.engine == "postgresql"
    with db.transaction() as conn:
        if batch.new:
            before = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
            new_rows = ((e, n, t, s, at, at, at, r, source) for e, n, t, s, r in batch.new)
            if bulk:
                copy_rows(conn, "subscribers", _NEW_COLUMNS, new_rows)
            else:
                conn.executemany(
                    f"INSERT INTO subscribers ({', '.join(_NEW_COLUMNS)}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    new_rows,
                )
            # Same history as `insert`: the creation (with its status) and the first topics. We
            # hold the write lock, so every id above `before` is one of the rows just inserted.
            for field_sql in (
                "'created', NULL, status, ?, status_reason",
                "'topics', NULL, topics, ?, NULL",
            ):
                conn.execute(
                    "INSERT INTO history (subscriber_id, at, field, old_value, new_value, source, "
                    f"reason) SELECT id, ?, {field_sql} FROM subscribers WHERE id > ? ORDER BY id",
                    (at, source, before),
                )
        for column, changed in (("name", batch.names), ("topics", batch.topics)):
            if changed:  # `column` is one of the two names above, never input
                if bulk:
                    values = ((sid, new) for sid, _, new in changed)
                    with staged(conn, "import_changes", _CHANGES, values):
                        conn.execute("ANALYZE import_changes")  # see ImportStage.duplicates
                        conn.execute(
                            f"UPDATE subscribers AS s SET {column} = c.value, updated_at = ? "
                            "FROM import_changes AS c WHERE s.id = c.id",
                            (at,),
                        )
                else:
                    conn.executemany(
                        f"UPDATE subscribers SET {column} = ?, updated_at = ? WHERE id = ?",
                        ((new, at, sid) for sid, _, new in changed),
                    )
                changes = ((sid, column, old, new, None) for sid, old, new in changed)
                _history_many(db, changes, at, source)
        if batch.statuses:
            if bulk:
                values = ((sid, new, reason) for sid, _, new, reason in batch.statuses)
                with staged(conn, "import_statuses", _STATUS_CHANGES, values):
                    conn.execute("ANALYZE import_statuses")
                    conn.execute(
                        "UPDATE subscribers AS s SET status = c.value, updated_at = ?, "
                        "status_changed_at = ?, status_reason = c.reason, status_source = ? "
                        "FROM import_statuses AS c WHERE s.id = c.id",
                        (at, at, source),
                    )
            else:
                conn.executemany(
                    "UPDATE subscribers SET status = ?, updated_at = ?, status_changed_at = ?, "
                    "status_reason = ?, status_source = ? WHERE id = ?",
                    ((new, at, at, reason, source, sid) for sid, _, new, reason in batch.statuses),
                )
            changes = (
                (sid, "status", old, new, reason) for sid, old, new, reason in batch.statuses
            )
            _history_many(db, changes, at, source)


# The columns an import writes, and the TEMP tables its changes pass through on PostgreSQL.
_NEW_COLUMNS = (
    "email",
    "name",
    "topics",
    "status",
    "created_at",
    "updated_at",
    "status_changed_at",
    "status_reason",
    "status_source",
)
_HISTORY_COLUMNS = ("subscriber_id", "at", "field", "old_value", "new_value", "source", "reason")
_CHANGES = (("id", "BIGINT PRIMARY KEY"), ("value", "TEXT"))
_STATUS_CHANGES = (*_CHANGES, ("reason", "TEXT"))


def _history_many(db: Database, changes: Iterable[tuple], at: str, source: str) -> None:
    rows = ((sid, at, fld, old, new, source, reason) for sid, fld, old, new, reason in changes)
    if db.engine == "postgresql":
        copy_rows(db.conn, "history", _HISTORY_COLUMNS, rows)
        return
    db.conn.executemany(
        f"INSERT INTO history ({', '.join(_HISTORY_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
