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
        store.claim_for_worker(db, ISSUE, planned, 100, 1)
    assert store.counts(db, ISSUE).get("submitting", 0) == 0


@pytest.mark.postgresql_only
def test_a_claim_passes_over_rows_another_worker_is_claiming(engine, db, planned):
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
        claimed, skipped = store.claim_for_worker(db, ISSUE, planned, 100, 1)  # does not wait
        mine = {r.subscriber_id for r in claimed}
        assert (len(mine), skipped) == (100, 0)
        assert not mine & held
        other.conn.execute("COMMIT")
    finally:
        other.close()
    claimed_next, _ = store.claim_for_worker(db, ISSUE, planned, 10, 2)
    assert {r.subscriber_id for r in claimed_next} == held  # free again: claimed next
    assert store.counts(db, ISSUE).get("submitting", 0) == 110


@pytest.mark.postgresql_only
def test_a_subscriber_who_left_is_skipped_not_claimed(engine, db, planned):
    gone = get_row_by_email(db, "user0@example.org")
    write_status(db, gone.id, "unsubscribed", "web")
    claimed, skipped = store.claim_for_worker(db, ISSUE, planned, 5, 1)
    assert skipped == 1
    assert gone.id not in {r.subscriber_id for r in claimed}
    assert store.get_entry(db, ISSUE, gone.id).state == "skipped"


@pytest.mark.postgresql_only
def test_three_workers_claim_every_row_exactly_once(engine, db, planned):
    claims: dict[int, list[int]] = {}
    start = threading.Barrier(3)
    failures = []

    def work(worker: int) -> None:
        mine = claims.setdefault(worker, [])
        try:
            with Database(db.location) as own:
                start.wait()
                batch = 0
                while True:
                    batch += 1
                    rows, _ = store.claim_for_worker(own, ISSUE, planned, 37, worker * 1000 + batch)
                    if not rows:
                        return
                    mine.extend(r.subscriber_id for r in rows)
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
