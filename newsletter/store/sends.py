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


# Several workers (PostgreSQL) -------------------------------------------------------------------
#
# Each sending process holds a lease of its own (a `send_workers` row) instead of the one lock
# above, and, for as long as its connection lives, a session advisory lock named after it: the
# server lets go of that lock when the process or its connection dies, on whichever host, so
# another worker can tell a live worker from a gone one without waiting for its heartbeat to age.

_PLANNING_LOCKS = 0x6E6C50  # advisory lock class of an issue's planning ("nlP")
_WORKER_LOCKS = 0x6E6C57  # advisory lock class of a worker's liveness ("nlW")


def takes_workers(db: Database) -> bool:
    """Whether several processes may send one issue at once on this database (leases and
    `claim_for_worker`); SQLite has one writer, so there a send holds the one lock."""
    return db.engine == "postgresql"


def _key(text: str) -> int:
    """A 32-bit advisory lock key for a text (a collision only makes a gone worker look alive
    until its heartbeat goes stale: never the other way round)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


@contextmanager
def planning_lock(db: Database, issue_id: str) -> Iterator[None]:
    """Hold the issue's planning lock: the first worker to get it recovers and plans; the others
    wait for it here (blocking on the server's lock, however long the plan takes)."""
    db.conn.execute("SET lock_timeout = 0")  # planning a million rows takes longer than 30 s
    try:
        db.conn.execute(
            "SELECT pg_advisory_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
            (_PLANNING_LOCKS, _key(issue_id)),
        )
    finally:
        db.conn.execute(f"SET lock_timeout = '{int(db.timeout * 1000)}ms'")
    try:
        yield
    finally:
        db.conn.execute(
            "SELECT pg_advisory_unlock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
            (_PLANNING_LOCKS, _key(issue_id)),
        )


def hold_worker_lock(db: Database, worker: str) -> None:
    """Take this worker's liveness lock on its connection (held until the connection ends)."""
    db.conn.execute(
        "SELECT pg_advisory_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
        (_WORKER_LOCKS, _key(worker)),
    )


def drop_worker_lock(db: Database, worker: str) -> None:
    db.conn.execute(
        "SELECT pg_advisory_unlock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
        (_WORKER_LOCKS, _key(worker)),
    )


def worker_connection_gone(db: Database, worker: str) -> bool:
    """Whether no connection holds `worker`'s liveness lock any more (its process or its
    connection died). Never ask it about this connection's own worker."""
    row = db.conn.execute(
        "SELECT pg_try_advisory_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
        (_WORKER_LOCKS, _key(worker)),
    ).fetchone()
    if row[0]:
        drop_worker_lock(db, worker)
        return True
    return False


def join_send(db: Database, issue_id: str, worker: str, run_id: str, backend: str) -> None:
    """Register a worker's lease (inside the caller's transaction); the issue's `sends` row is
    made, or marked `sending`, and names the latest worker as its `lock_owner` (shown by
    `report`; no one waits for it)."""
    at = now()
    row = db.conn.execute("SELECT state FROM sends WHERE issue_id = ?", (issue_id,)).fetchone()
    if row is None:
        db.conn.execute(
            "INSERT INTO sends (issue_id, state, backend, created_at, updated_at, "
            "lock_owner, lock_at) VALUES (?, 'sending', ?, ?, ?, ?, ?)",
            (issue_id, backend, at, at, worker, at),
        )
    else:
        db.conn.execute(
            "UPDATE sends SET lock_owner = ?, lock_at = ?, backend = ?, updated_at = ?, "
            "state = CASE WHEN state = 'sent' THEN 'sent' ELSE 'sending' END WHERE issue_id = ?",
            (worker, at, backend, at, issue_id),
        )
    db.conn.execute(
        "INSERT INTO send_workers (issue_id, worker, run_id, backend, started_at, heartbeat_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (issue_id, worker, run_id, backend, at, at),
    )


def live_workers(db: Database, issue_id: str) -> list[dict]:
    """The leases of the issue not yet finished (their workers may still have died)."""
    rows = db.conn.execute(
        "SELECT worker, run_id, backend, started_at, heartbeat_at FROM send_workers "
        "WHERE issue_id = ? AND finished_at IS NULL ORDER BY started_at, worker",
        (issue_id,),
    )
    return [dict(r) for r in rows]


def worker_heartbeat(db: Database, issue_id: str, worker: str) -> bool:
    """Refresh a lease (inside the caller's transaction); False when it is no longer live
    (another worker found it abandoned and recovered its rows)."""
    cur = db.conn.execute(
        "UPDATE send_workers SET heartbeat_at = ? "
        "WHERE issue_id = ? AND worker = ? AND finished_at IS NULL",
        (now(), issue_id, worker),
    )
    return cur.rowcount == 1


def end_worker(
    db: Database, issue_id: str, worker: str, outcome: str, last_error: str | None = None
) -> None:
    """Finish a lease ('done', 'stopped', or 'abandoned' when another worker found it gone);
    one already finished stays as it was."""
    db.conn.execute(
        "UPDATE send_workers SET finished_at = ?, outcome = ?, last_error = ? "
        "WHERE issue_id = ? AND worker = ? AND finished_at IS NULL",
        (now(), outcome, last_error, issue_id, worker),
    )


def set_run(db: Database, issue_id: str, run_id: str) -> None:
    """The run (one `send` command, all its workers) that planned the send."""
    db.conn.execute("UPDATE sends SET run_id = ? WHERE issue_id = ?", (run_id, issue_id))


def note_error(db: Database, issue_id: str, last_error: str) -> None:
    """A worker stopped by an error: `report` shows it while the others go on."""
    db.conn.execute(
        "UPDATE sends SET last_error = ?, updated_at = ? WHERE issue_id = ?",
        (last_error, now(), issue_id),
    )


def finish_send(db: Database, issue_id: str, state: str, last_error: str | None) -> None:
    """The last worker out records how the send ended ('sent', 'stopped')."""
    at = now()
    db.conn.execute(
        "UPDATE sends SET lock_owner = NULL, lock_at = NULL, state = ?, updated_at = ?, "
        "last_error = ?, finished_at = CASE WHEN ? = 'sent' THEN ? ELSE finished_at END "
        "WHERE issue_id = ?",
        (state, at, last_error, state, at, issue_id),
    )
