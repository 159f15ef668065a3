"""SQL of the send ledger: one row per (issue, subscriber), the only truth about who got what.

Also the send's plan record in `meta` (which summaries each segment key stands for); the `sends`
table (state, schedule, lock) is in `store.sends`, whose names are re-exported here. The rules
(when to claim, retry, stop) live in `newsletter.delivery`.

Every write here is batched: one statement or one `executemany` per batch, one transaction per
batch, so that a million-row send costs a few thousand transactions, not millions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import StoreError
from . import Database, now
from .sends import bulk_writes as bulk_writes
from .sends import drop_worker_lock as drop_worker_lock
from .sends import end_worker as end_worker
from .sends import finish_send as finish_send
from .sends import get_send as get_send
from .sends import heartbeat as heartbeat
from .sends import hold_worker_lock as hold_worker_lock
from .sends import join_send as join_send
from .sends import live_workers as live_workers
from .sends import note_error as note_error
from .sends import planning_lock as planning_lock
from .sends import release_lock as release_lock
from .sends import set_run as set_run
from .sends import set_schedule as set_schedule
from .sends import takes_workers as takes_workers
from .sends import try_lock as try_lock
from .sends import worker_connection_gone as worker_connection_gone
from .sends import worker_heartbeat as worker_heartbeat
from .subscribers import TopicChoice, decode_topics

# States a row may be in; `pending → submitting → sent | failed | unknown`, plus `skipped`.
PENDING, SUBMITTING, SENT, FAILED, UNKNOWN, SKIPPED = (
    "pending",
    "submitting",
    "sent",
    "failed",
    "unknown",
    "skipped",
)
# Rows in these states still need something done before the issue counts as sent.
OPEN_STATES = (PENDING, SUBMITTING, UNKNOWN, FAILED)


def has_rows(db: Database, issue_id: str) -> bool:
    """Whether any send of this issue has started (such an issue can no longer be recomposed)."""
    row = db.conn.execute("SELECT 1 FROM ledger WHERE issue_id = ? LIMIT 1", (issue_id,)).fetchone()
    return row is not None


# The plan record (in `meta`) -------------------------------------------------------------------


@dataclass
class PlanRecord:
    """What the ledger's segment keys mean, and the issue's summary list when the plan began."""

    summaries: list[str]
    segments: dict[str, list[str]]


def _plan_key(issue_id: str) -> str:
    return f"send.plan:{issue_id}"


def get_plan(db: Database, issue_id: str) -> PlanRecord | None:
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (_plan_key(issue_id),)).fetchone()
    if row is None:
        return None
    data = json.loads(row["value"])
    return PlanRecord(summaries=data["summaries"], segments=data["segments"])


def save_plan(db: Database, issue_id: str, record: PlanRecord) -> None:
    """Write the plan record (inside the caller's transaction, beside the rows that use it)."""
    value = json.dumps({"summaries": record.summaries, "segments": record.segments})
    db.conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_plan_key(issue_id), value),
    )


# Planning ----------------------------------------------------------------------------------


def planned_ids(db: Database, issue_id: str, low: int, high: int) -> set[int]:
    """Ids in [low, high] that already have a row: one range query per page of subscribers."""
    rows = db.conn.execute(
        "SELECT subscriber_id FROM ledger WHERE issue_id = ? AND subscriber_id BETWEEN ? AND ?",
        (issue_id, low, high),
    )
    return {r[0] for r in rows}


def iter_subscribed(db: Database, page_size: int = 2000) -> Iterator[list[tuple[int, str]]]:
    """Pages of (id, encoded topics) of every subscribed subscriber, by id: the plan's input.

    Like `subscribers.iter_subscribers` (keyset pages, flat memory) but without building a
    Subscriber per row, which is most of the plan's time at a million rows.
    """
    last_id = 0
    while True:
        rows = db.conn.execute(
            "SELECT id, topics FROM subscribers WHERE status = 'subscribed' AND id > ? "
            "ORDER BY id LIMIT ?",
            (last_id, page_size),
        ).fetchall()
        if not rows:
            return
        yield [(r[0], r[1]) for r in rows]
        last_id = rows[-1][0]


def add_rows(db: Database, issue_id: str, rows: Iterable[tuple[int, str, str, str | None]]) -> int:
    """Insert (subscriber_id, segment, state, reason) rows; existing rows are left alone.

    Runs inside the caller's transaction. Returns how many rows were new. On PostgreSQL the rows
    go in with COPY (into a TEMP table, then one `INSERT … SELECT … ON CONFLICT DO NOTHING`):
    one statement per page instead of one per row; SQLite's `executemany` is as fast already.
    """
    at = now()
    if db.engine == "postgresql":
        from .postgres import staged

        with db.transaction(), staged(db.conn, "ledger_new", _NEW_LEDGER_ROWS, rows):
            cur = db.conn.execute(
                "INSERT INTO ledger (issue_id, subscriber_id, segment, state, reason, updated_at) "
                "SELECT ?, subscriber_id, segment, state, reason, ? FROM ledger_new "
                "ON CONFLICT DO NOTHING",
                (issue_id, at),
            )
            return cur.rowcount
    cur = db.conn.executemany(
        "INSERT INTO ledger (issue_id, subscriber_id, segment, state, reason, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        ((issue_id, sid, segment, state, reason, at) for sid, segment, state, reason in rows),
    )
    return cur.rowcount


def refresh_statistics(db: Database) -> None:
    """After a plan added rows: the ledger's statistics for PostgreSQL's query planner, now.

    Autovacuum analyses a table up to a minute after it grew. Until then PostgreSQL plans the
    claims and records as if the issue had a handful of rows, and picks scans of all of them:
    a claim's `= ANY` update of 1,000 rows read the whole issue (50,000 rows, 0.3 s a batch).
    SQLite needs nothing: it plans by the indexes alone."""
    if db.engine == "postgresql":
        with db.transaction(exclusive=False):
            db.conn.execute("ANALYZE ledger")


# The TEMP table `add_rows` copies a page of new rows into (PostgreSQL).
_NEW_LEDGER_ROWS = (
    ("subscriber_id", "BIGINT"),
    ("segment", "TEXT"),
    ("state", "TEXT"),
    ("reason", "TEXT"),
)


# Recovery ----------------------------------------------------------------------------------


def move_state(
    db: Database, issue_id: str, from_state: str, to_state: str, reason: str | None
) -> int:
    """Every row of the issue in `from_state` → `to_state` (one statement); returns how many."""
    with db.transaction():
        cur = db.conn.execute(
            "UPDATE ledger SET state = ?, reason = ?, updated_at = ? "
            "WHERE issue_id = ? AND state = ?",
            (to_state, reason, now(), issue_id, from_state),
        )
        if to_state == UNKNOWN:
            settle_noted_unknown(db, issue_id)
    return cur.rowcount


def settle_noted_unknown(db: Database, issue_id: str) -> int:
    """`unknown` rows whose acceptance the provider reported while they were still `submitting`
    (`events.accept_unknown` noted it) → `sent`, with that word as the reason; how many."""
    cur = db.conn.execute(
        "UPDATE ledger SET state = 'sent', reason = accepted_note, updated_at = ? "
        "WHERE issue_id = ? AND state = 'unknown' AND accepted_note IS NOT NULL",
        (now(), issue_id),
    )
    return cur.rowcount


# Claiming and recording --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    subscriber_id: int
    email: str
    name: str
    topics: TopicChoice


def pending_segments(db: Database, issue_id: str) -> list[tuple[str, int]]:
    """(segment key, pending rows) for every segment with work left, largest first."""
    rows = db.conn.execute(
        "SELECT segment, count(*) AS n FROM ledger WHERE issue_id = ? AND state = 'pending' "
        "GROUP BY segment ORDER BY n DESC, segment",
        (issue_id,),
    )
    return [(r["segment"], r["n"]) for r in rows]


def next_batch_no(db: Database, issue_id: str) -> int:
    row = db.conn.execute(
        "SELECT max(batch_no) FROM ledger WHERE issue_id = ?", (issue_id,)
    ).fetchone()
    return (row[0] or 0) + 1


def claim(
    db: Database,
    issue_id: str,
    segment: str,
    limit: int,
    batch_no: int,
    owner: str,
    after: int = 0,
) -> tuple[list[ClaimedRow], int] | None:
    """Claim up to `limit` pending rows of one segment: `submitting`, committed before any call.

    Only rows with a subscriber id above `after` are looked at: a sender passes the last id it
    claimed in the segment, so that each claim starts where the last ended instead of walking
    again over the rows already sent (the ledger has no index on `state`; see migration 7).
    The subscriber's status is read now, not at planning: one who left since is marked
    `skipped` instead. Returns (claimed rows, skipped count), or None when the lock is no longer
    ours (another send took it over), in which case nothing is changed.
    """
    at = now()
    with db.transaction():
        if not heartbeat(db, issue_id, owner):
            return None
        rows = db.conn.execute(
            "SELECT l.subscriber_id, s.email, s.name, s.topics, s.status FROM ledger AS l "
            "JOIN subscribers AS s ON s.id = l.subscriber_id "
            "WHERE l.issue_id = ? AND l.segment = ? AND l.subscriber_id > ? "
            "AND l.state = 'pending' ORDER BY l.subscriber_id LIMIT ?",
            (issue_id, segment, after, limit),
        ).fetchall()
        if not rows:
            return [], 0
        gone = [
            (f"{r['status']} before sending", at, issue_id, r[0])
            for r in rows
            if r[4] != "subscribed"
        ]
        if gone:
            db.conn.executemany(
                "UPDATE ledger SET state = 'skipped', reason = ?, updated_at = ? "
                "WHERE issue_id = ? AND subscriber_id = ?",
                gone,
            )
        # The claimed rows are the first `limit` pending ones of this primary-key range (issue,
        # segment, subscriber), so one range UPDATE claims exactly them (the skipped ones are no
        # longer pending).
        db.conn.execute(
            "UPDATE ledger SET state = 'submitting', batch_no = ?, attempts = attempts + 1, "
            "reason = NULL, updated_at = ?, submitted_at = ? WHERE issue_id = ? "
            "AND state = 'pending' AND segment = ? AND subscriber_id BETWEEN ? AND ?",
            (batch_no, at, at, issue_id, segment, rows[0][0], rows[-1][0]),
        )
    claimed = [
        ClaimedRow(r[0], r[1], r[2], decode_topics(r[3])) for r in rows if r[4] == "subscribed"
    ]
    return claimed, len(gone)


def check_workers(db: Database, workers: int) -> None:
    """StoreError unless `workers` sending processes can share this database's ledger."""
    if workers > 1 and db.engine == "sqlite":
        raise StoreError(
            f"{db.display}: a SQLite database takes one writer at a time, so a send runs in one "
            f"process: --workers {workers} needs PostgreSQL (see README, PostgreSQL)"
        )


def claim_for_worker(
    db: Database, issue_id: str, segment: str, limit: int, worker: str, after: int = 0
) -> tuple[list[ClaimedRow], int, int] | None:
    """`claim` for one of several workers sending the same issue (PostgreSQL only).

    The rows are locked with `FOR UPDATE … SKIP LOCKED` in a transaction of their own that takes
    no store-wide lock: a row another worker is claiming at this moment is passed over, so two
    workers never claim the same recipient, and neither waits for the other. The same
    transaction refreshes the worker's lease (`send_workers`), writes the worker on the rows it
    claims (recovery after a crash is per worker) and takes the batch's number from the issue's
    counter (`sends.last_batch_no`), so numbers stay unique across workers. `after`: as in
    `claim`. Returns (claimed rows, skipped count, batch number; 0 when nothing was claimed),
    or None when the lease is no longer live (another worker found it abandoned), in which case
    nothing is changed.
    """
    check_workers(db, 2)
    at = now()
    with db.transaction(exclusive=False):
        if not worker_heartbeat(db, issue_id, worker):
            return None
        rows = db.conn.execute(
            "SELECT l.subscriber_id, s.email, s.name, s.topics, s.status FROM ledger AS l "
            "JOIN subscribers AS s ON s.id = l.subscriber_id "
            "WHERE l.issue_id = ? AND l.segment = ? AND l.subscriber_id > ? "
            "AND l.state = 'pending' ORDER BY l.subscriber_id LIMIT ? FOR UPDATE OF l SKIP LOCKED",
            (issue_id, segment, after, limit),
        ).fetchall()
        if not rows:
            return [], 0, 0
        gone = [
            (f"{r[4]} before sending", at, issue_id, r[0]) for r in rows if r[4] != "subscribed"
        ]
        if gone:
            db.conn.executemany(
                "UPDATE ledger SET state = 'skipped', reason = ?, updated_at = ? "
                "WHERE issue_id = ? AND subscriber_id = ?",
                gone,
            )
        ids = [r[0] for r in rows if r[4] == "subscribed"]
        batch_no = 0
        if ids:
            batch_no = _next_worker_batch_no(db, issue_id)
            # Exactly the locked rows (another worker's may lie between them): `= ANY` of the
            # ids, reached through the primary key (issue, segment, subscriber).
            db.conn.execute(
                "UPDATE ledger SET state = 'submitting', batch_no = ?, worker = ?, "
                "attempts = attempts + 1, reason = NULL, updated_at = ?, submitted_at = ? "
                "WHERE issue_id = ? AND segment = ? AND subscriber_id = ANY(?)",
                (batch_no, worker, at, at, issue_id, segment, ids),
            )
    claimed = [
        ClaimedRow(r[0], r[1], r[2], decode_topics(r[3])) for r in rows if r[4] == "subscribed"
    ]
    return claimed, len(gone), batch_no


def _next_worker_batch_no(db: Database, issue_id: str) -> int:
    """The next number from the issue's counter (`sends.last_batch_no`), in the caller's claim.

    The counter starts above the numbers earlier single-process runs gave, which takes the
    issue's highest batch number: a scan of all its rows. That is done only while the counter is
    unset. One statement with both (`coalesce(last_batch_no, (SELECT max …))`) scanned the
    issue at every claim that had waited for another worker's: PostgreSQL re-checks such an
    update (EvalPlanQual) and evaluates every sub-select of it then, needed or not; at 1,000,000
    subscribers 4 workers' claims took 1.3 s each instead of 0.05.
    """
    row = db.conn.execute(
        "UPDATE sends SET last_batch_no = last_batch_no + 1 "
        "WHERE issue_id = ? AND last_batch_no IS NOT NULL RETURNING last_batch_no",
        (issue_id,),
    ).fetchone()
    if row is not None:
        return row[0]
    return db.conn.execute(
        "UPDATE sends SET last_batch_no = coalesce(last_batch_no, "
        "(SELECT coalesce(max(batch_no), 0) FROM ledger WHERE issue_id = ?)) + 1 "
        "WHERE issue_id = ? RETURNING last_batch_no",
        (issue_id, issue_id),
    ).fetchone()[0]


def recover_gone_workers(db: Database, issue_id: str, reason: str) -> int:
    """`submitting` rows of workers without a live lease → `unknown` (their batches may or may
    not have gone out); a live worker's rows in flight are left alone. How many."""
    with db.transaction():
        cur = db.conn.execute(
            "UPDATE ledger SET state = 'unknown', reason = ?, updated_at = ? "
            "WHERE issue_id = ? AND state = 'submitting' AND NOT EXISTS "
            "(SELECT 1 FROM send_workers AS w WHERE w.issue_id = ledger.issue_id "
            "AND w.worker = ledger.worker AND w.finished_at IS NULL)",
            (reason, now(), issue_id),
        )
        if cur.rowcount:
            settle_noted_unknown(db, issue_id)
    return cur.rowcount


def worker_rows(db: Database, issue_id: str) -> dict[str, dict[str, int]]:
    """worker → state → rows, for the rows a worker claimed (several senders' report)."""
    out: dict[str, dict[str, int]] = {}
    rows = db.conn.execute(
        "SELECT worker, state, count(*) AS n FROM ledger WHERE issue_id = ? "
        "AND worker IS NOT NULL GROUP BY worker, state",
        (issue_id,),
    )
    for r in rows:
        out.setdefault(r["worker"], {})[r["state"]] = r["n"]
    return out


def add_attempt(db: Database, issue_id: str, subscriber_ids: Iterable[int]) -> None:
    """Count one more attempt for rows about to be submitted again (a retry), from now."""
    at = now()
    with db.transaction():
        db.conn.executemany(
            "UPDATE ledger SET attempts = attempts + 1, updated_at = ?, submitted_at = ? "
            "WHERE issue_id = ? AND subscriber_id = ?",
            ((at, at, issue_id, sid) for sid in subscriber_ids),
        )


def record_batch_sent(
    db: Database, issue_id: str, segment: str, ids: list[int], batch_no: int, provider_id: str
) -> int:
    """A whole batch accepted under one provider id (SendGrid): one statement, not one a row.

    The primary key (issue, segment, subscriber) reaches exactly the batch's id range.
    """
    with db.transaction():
        cur = db.conn.execute(
            "UPDATE ledger SET state = 'sent', provider_id = ?, reason = NULL, updated_at = ? "
            "WHERE issue_id = ? AND state = 'submitting' AND segment = ? "
            "AND subscriber_id BETWEEN ? AND ? AND batch_no = ?",
            (provider_id, now(), issue_id, segment, min(ids), max(ids), batch_no),
        )
    return cur.rowcount


def record(
    db: Database,
    issue_id: str,
    sent: dict[int, str] | None = None,
    failed: dict[int, str] | None = None,
    unknown: dict[int, str] | None = None,
    pending: Iterable[int] = (),
) -> None:
    """Record a batch's outcome, all of it in one transaction.

    `sent` maps subscriber id → provider message id; `failed`/`unknown` map id → reason;
    `pending` ids go back to pending (surely not accepted: a later run sends them).
    """
    at = now()
    with db.transaction():
        if sent:
            db.conn.executemany(
                "UPDATE ledger SET state = 'sent', provider_id = ?, reason = NULL, updated_at = ? "
                "WHERE issue_id = ? AND subscriber_id = ?",
                ((pid, at, issue_id, sid) for sid, pid in sent.items()),
            )
        for state, reasons in (("failed", failed), ("unknown", unknown)):
            if reasons:
                db.conn.executemany(
                    "UPDATE ledger SET state = ?, reason = ?, updated_at = ? "
                    "WHERE issue_id = ? AND subscriber_id = ?",
                    ((state, reason, at, issue_id, sid) for sid, reason in reasons.items()),
                )
        if unknown:
            settle_noted_unknown(db, issue_id)
        db.conn.executemany(
            "UPDATE ledger SET state = 'pending', updated_at = ? "
            "WHERE issue_id = ? AND subscriber_id = ?",
            ((at, issue_id, sid) for sid in pending),
        )


# Reporting ---------------------------------------------------------------------------------


def sent_issues(db: Database) -> dict[str, str]:
    """Issue id → when its delivery began (scheduled time, else the send's start, ISO UTC), for
    every issue that at least one subscriber was sent. Nothing about who: the public archive
    reads only this."""
    rows = db.conn.execute(
        "SELECT s.issue_id, coalesce(s.send_at, s.created_at) AS sent_at FROM sends AS s "
        "WHERE EXISTS (SELECT 1 FROM ledger AS l WHERE l.issue_id = s.issue_id "
        "AND l.state = 'sent') ORDER BY s.issue_id"
    )
    return {r["issue_id"]: r["sent_at"] for r in rows}


def counts(db: Database, issue_id: str) -> dict[str, int]:
    rows = db.conn.execute(
        "SELECT state, count(*) AS n FROM ledger WHERE issue_id = ? GROUP BY state", (issue_id,)
    )
    return {r["state"]: r["n"] for r in rows}


def delivery_counts(db: Database, issue_id: str) -> dict[str, int]:
    """Counts of what the provider's webhooks said happened next (delivered, bounced...)."""
    rows = db.conn.execute(
        "SELECT delivery, count(*) AS n FROM ledger WHERE issue_id = ? AND delivery IS NOT NULL "
        "GROUP BY delivery",
        (issue_id,),
    )
    return {r["delivery"]: r["n"] for r in rows}


def reasons(db: Database, issue_id: str, state: str) -> dict[str, int]:
    rows = db.conn.execute(
        "SELECT coalesce(reason, '') AS reason, count(*) AS n FROM ledger "
        "WHERE issue_id = ? AND state = ? GROUP BY reason ORDER BY n DESC, reason",
        (issue_id, state),
    )
    return {r["reason"]: r["n"] for r in rows}


def segment_counts(db: Database, issue_id: str) -> dict[str, dict[str, int]]:
    """segment key → state → rows."""
    out: dict[str, dict[str, int]] = {}
    rows = db.conn.execute(
        "SELECT segment, state, count(*) AS n FROM ledger WHERE issue_id = ? "
        "GROUP BY segment, state",
        (issue_id,),
    )
    for r in rows:
        out.setdefault(r["segment"], {})[r["state"]] = r["n"]
    return out


@dataclass(frozen=True)
class LedgerEntry:
    subscriber_id: int
    email: str
    state: str
    reason: str | None
    provider_id: str | None
    attempts: int
    batch_no: int | None
    updated_at: str
    delivery: str | None


def iter_entries(
    db: Database,
    issue_id: str,
    state: str | None = None,
    delivery: str | None = None,
    page_size: int = 1000,
) -> Iterator[LedgerEntry]:
    """Rows of the issue (optionally in one state, or with one webhook delivery), by email."""
    where, args = "l.issue_id = ?", [issue_id]
    if state is not None:
        where += " AND l.state = ?"
        args.append(state)
    if delivery is not None:
        where += " AND l.delivery = ?"
        args.append(delivery)
    last = ""
    email = db.bytewise("s.email")
    while True:
        rows = db.conn.execute(
            "SELECT l.subscriber_id, s.email, l.state, l.reason, l.provider_id, l.attempts, "
            "l.batch_no, l.updated_at, l.delivery FROM ledger AS l "
            f"JOIN subscribers AS s ON s.id = l.subscriber_id WHERE {where} AND {email} > ? "
            f"ORDER BY {email} LIMIT ?",
            (*args, last, page_size),
        ).fetchall()
        if not rows:
            return
        for r in rows:
            yield LedgerEntry(*r)
        last = rows[-1]["email"]


def get_entry(db: Database, issue_id: str, subscriber_id: int) -> LedgerEntry | None:
    row = db.conn.execute(
        "SELECT l.subscriber_id, s.email, l.state, l.reason, l.provider_id, l.attempts, "
        "l.batch_no, l.updated_at, l.delivery FROM ledger AS l "
        "JOIN subscribers AS s ON s.id = l.subscriber_id "
        "WHERE l.issue_id = ? AND l.subscriber_id = ?",
        (issue_id, subscriber_id),
    ).fetchone()
    return LedgerEntry(*row) if row else None


def subscriber_counts(db: Database) -> dict[str, int]:
    """Subscribers per status (the people not on the list: unsubscribed, bounced...)."""
    rows = db.conn.execute("SELECT status, count(*) AS n FROM subscribers GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


def unplanned_counts(db: Database, issue_id: str) -> dict[str, int]:
    """Subscribers with no row for this issue, by status (not on the list when it was planned)."""
    rows = db.conn.execute(
        "SELECT s.status, count(*) AS n FROM subscribers AS s WHERE NOT EXISTS "
        "(SELECT 1 FROM ledger AS l WHERE l.issue_id = ? AND l.subscriber_id = s.id) "
        "GROUP BY s.status",
        (issue_id,),
    )
    return {r["status"]: r["n"] for r in rows}
