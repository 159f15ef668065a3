"""Claiming for several sending workers (`ledger.claim_for_worker`): on PostgreSQL each batch is
claimed with FOR UPDATE SKIP LOCKED, so workers never claim the same recipient nor wait for one
another; on SQLite more than one worker is refused with a clear message."""

from __future__ import annotations

import threading

import pytest

from newsletter.delivery import write_plan
from newsletter.errors import StoreError
from newsletter.store import Database
from newsletter.store import ledger as store
from newsletter.store.subscribers import get_row_by_email, write_status
from tests.support.delivery import ISSUE, add_many, issue_summaries

pytestmark = pytest.mark.both_engines


@pytest.fixture
def planned(settings, db):
    """1,000 subscribers (all topics: one segment) planned for the issue; returns its key."""
    add_many(db, 1000)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    [(segment, pending)] = store.pending_segments(db, ISSUE)
    assert pending == 1000
    return segment


def lease(db, worker: str) -> str:
    """Register `worker`'s lease on the issue's send (as `WorkerLease.join` does)."""
    with db.transaction():
        store.join_send(db, ISSUE, worker, "run", "scripted")
    return worker


def test_sqlite_refuses_more_than_one_worker(engine, db, planned):
    if engine != "sqlite":
        store.check_workers(db, 4)  # PostgreSQL: any number
        return
    store.check_workers(db, 1)
    with pytest.raises(StoreError) as refused:
        store.check_workers(db, 3)
    assert str(refused.value).endswith(
        "newsletter.db: a SQLite database takes one writer at a time, so a send runs in one "
        "process: --workers 3 needs PostgreSQL (see README, PostgreSQL)"
    )
    with pytest.raises(StoreError):
        store.claim_for_worker(db, ISSUE, planned, 100, "host:1:a")
    assert store.counts(db, ISSUE).get("submitting", 0) == 0


@pytest.mark.postgresql_only
def test_a_claim_passes_over_rows_another_worker_is_claiming(engine, db, planned):
    worker = lease(db, "host:1:a")
    other = Database(db.location)
    try:
        # Another worker is in the middle of claiming the first 10 rows (locked, not yet written).
        other.conn.execute("BEGIN")
        held = other.conn.execute(
            "SELECT subscriber_id FROM ledger WHERE issue_id = ? AND state = 'pending' "
            "ORDER BY subscriber_id LIMIT 10 FOR UPDATE",
            (ISSUE,),
        ).fetchall()
        held = {r[0] for r in held}
        claimed, skipped, number = store.claim_for_worker(db, ISSUE, planned, 100, worker)
        mine = {r.subscriber_id for r in claimed}  # it did not wait for the other
        assert (len(mine), skipped, number) == (100, 0, 1)
        assert not mine & held
        other.conn.execute("COMMIT")
    finally:
        other.close()
    claimed_next, _, number = store.claim_for_worker(db, ISSUE, planned, 10, worker)
    assert {r.subscriber_id for r in claimed_next} == held  # free again: claimed next
    assert number == 2
    assert store.counts(db, ISSUE).get("submitting", 0) == 110


@pytest.mark.postgresql_only
def test_a_subscriber_who_left_is_skipped_not_claimed(engine, db, planned):
    gone = get_row_by_email(db, "user0@example.org")
    write_status(db, gone.id, "unsubscribed", "web")
    claimed, skipped, _ = store.claim_for_worker(db, ISSUE, planned, 5, lease(db, "host:1:a"))
    assert skipped == 1
    assert gone.id not in {r.subscriber_id for r in claimed}
    assert store.get_entry(db, ISSUE, gone.id).state == "skipped"


@pytest.mark.postgresql_only
def test_three_workers_claim_every_row_exactly_once(engine, db, planned):
    claims: dict[int, list[int]] = {}
    numbers: list[int] = []
    start = threading.Barrier(3)
    failures = []

    def work(worker: int) -> None:
        mine = claims.setdefault(worker, [])
        try:
            with Database(db.location) as own:
                name = lease(own, f"host:{worker}:a")
                start.wait()
                while True:
                    rows, _, number = store.claim_for_worker(own, ISSUE, planned, 37, name)
                    if not rows:
                        return
                    mine.extend(r.subscriber_id for r in rows)
                    numbers.append(number)
                    worker_of = store.get_entry(own, ISSUE, rows[0].subscriber_id)
                    assert worker_of.batch_no == number
        except Exception as exc:  # reported below: a thread's exception would vanish
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    every = [sid for rows in claims.values() for sid in rows]
    assert len(every) == len(set(every)) == 1000
    assert store.counts(db, ISSUE).get("submitting", 0) == 1000
    assert store.counts(db, ISSUE).get("pending", 0) == 0
    assert sorted(numbers) == list(range(1, 29))  # 28 batches of 37 or fewer: unique, no gaps
    by_worker = store.worker_rows(db, ISSUE)
    assert {w: sum(s.values()) for w, s in by_worker.items()} == {
        f"host:{n}:a": len(claims[n]) for n in (1, 2, 3)
    }


@pytest.mark.postgresql_only
def test_a_lease_found_abandoned_claims_nothing(engine, db, planned):
    worker = lease(db, "host:1:a")
    with db.transaction():
        store.end_worker(db, ISSUE, worker, "abandoned")
    assert store.claim_for_worker(db, ISSUE, planned, 10, worker) is None
    assert store.counts(db, ISSUE) == {"pending": 1000}
