"""SQL of the `sends` table: one row per issue (state, backend, schedule) and the lock that keeps
two sends of one issue from running at once; and the send's write-ahead-log setting.

The ledger rows themselves are in `store.ledger`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import Database, now


def get_send(db: Database, issue_id: str) -> dict | None:
    row = db.conn.execute("SELECT * FROM sends WHERE issue_id = ?", (issue_id,)).fetchone()
    return dict(row) if row else None


def try_lock(
    db: Database,
    issue_id: str,
    owner: str,
    backend: str,
    can_take_over: Callable[[str, str | None], bool],
) -> str | None:
    """Take the issue's send lock; None when taken, else the owner that holds it.

    `can_take_over(owner, lock_at)` decides whether a held lock is abandoned (its process died).
    BEGIN IMMEDIATE makes the read and the write one step: two sends cannot both win.
    """
    at = now()
    with db.transaction():
        row = db.conn.execute(
            "SELECT lock_owner, lock_at FROM sends WHERE issue_id = ?", (issue_id,)
        ).fetchone()
        if row is None:
            db.conn.execute(
                "INSERT INTO sends (issue_id, state, backend, created_at, updated_at, "
                "lock_owner, lock_at) VALUES (?, 'sending', ?, ?, ?, ?, ?)",
                (issue_id, backend, at, at, owner, at),
            )
            return None
        held_by = row["lock_owner"]
        if held_by and held_by != owner and not can_take_over(held_by, row["lock_at"]):
            return held_by
        db.conn.execute(
            "UPDATE sends SET lock_owner = ?, lock_at = ?, backend = ?, updated_at = ?, "
            "state = CASE WHEN state = 'sent' THEN 'sent' ELSE 'sending' END WHERE issue_id = ?",
            (owner, at, backend, at, issue_id),
        )
    return None


def heartbeat(db: Database, issue_id: str, owner: str) -> bool:
    """Refresh the lock (inside the caller's transaction); False when it is no longer ours."""
    cur = db.conn.execute(
        "UPDATE sends SET lock_at = ? WHERE issue_id = ? AND lock_owner = ?",
        (now(), issue_id, owner),
    )
    return cur.rowcount == 1


def release_lock(
    db: Database, issue_id: str, owner: str, state: str, last_error: str | None = None
) -> None:
    """Let go of the lock and record how the run ended ('sent', 'stopped')."""
    at = now()
    with db.transaction():
        db.conn.execute(
            "UPDATE sends SET lock_owner = NULL, lock_at = NULL, state = ?, updated_at = ?, "
            "last_error = ?, finished_at = CASE WHEN ? = 'sent' THEN ? ELSE finished_at END "
            "WHERE issue_id = ? AND lock_owner = ?",
            (state, at, last_error, state, at, issue_id, owner),
        )


def set_schedule(db: Database, issue_id: str, send_at: str | None, batch_id: str | None) -> None:
    with db.transaction():
        db.conn.execute(
            "UPDATE sends SET send_at = ?, batch_id = ?, updated_at = ? WHERE issue_id = ?",
            (send_at, batch_id, now(), issue_id),
        )


@contextmanager
def bulk_writes(db: Database, wal_pages: int = 20000) -> Iterator[None]:
    """Let the write-ahead log grow to `wal_pages` pages (4 KB each) during a send.

    A send commits two transactions a batch, each touching about a page a row (a segment's rows
    are spread over the table); with SQLite's default of 1000 pages, nearly every commit also
    copies the log back into the database. Checkpointing less often writes each page once per
    many batches instead of twice per batch. The previous setting comes back afterwards.
    SQLite only: PostgreSQL's checkpoints are the server's business.
    """
    if db.engine != "sqlite":
        yield
        return
    before = db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    db.conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_pages)}")
    try:
        yield
    finally:
        db.conn.execute(f"PRAGMA wal_autocheckpoint = {int(before)}")
