"""Planning in bulk, on both engines (COPY on PostgreSQL): every subscribed subscriber gets one
row with the right segment, a resumed plan adds only the missing rows and counts only those, rows
already in the ledger are left exactly as they are, and a failed page leaves nothing behind."""

from __future__ import annotations

import pytest

from newsletter.delivery import plan as planning
from newsletter.delivery import segment_key, write_plan
from newsletter.render import select_summaries
from newsletter.store import IntegrityError, ledger, now
from tests.support.delivery import ISSUE, issue_summaries

pytestmark = pytest.mark.both_engines

# Topic choices as stored, in turn; "retired-topic" is no longer configured: a skipped row.
CHOICES = ["all", "genetics", "womens-health;infections", "retired-topic", "gut-microbiome"]
COUNT = 5 * planning.PLAN_PAGE + 123  # several planning pages and a short last one


def add_list(db, count: int = COUNT, start: int = 0) -> None:
    """`count` subscribers, topics in turn from CHOICES; every 13th one unsubscribed."""
    at = now()
    with db.transaction():
        db.conn.executemany(
            "INSERT INTO subscribers (email, name, topics, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    f"p{i}@example.org",
                    f"P {i}",
                    CHOICES[i % len(CHOICES)],
                    "unsubscribed" if i % 13 == 0 else "subscribed",
                    at,
                    at,
                )
                for i in range(start, start + count)
            ),
        )


def ledger_rows(db) -> dict[str, tuple]:
    """email → (segment, state, reason, provider_id, attempts, updated_at) of the issue."""
    rows = db.conn.execute(
        "SELECT s.email, l.segment, l.state, l.reason, l.provider_id, l.attempts, l.updated_at "
        "FROM ledger l JOIN subscribers s ON s.id = l.subscriber_id WHERE l.issue_id = ?",
        (ISSUE,),
    )
    return {r[0]: tuple(r)[1:] for r in rows}


def expected_row(settings, summaries, index: int) -> tuple[str, str, str | None]:
    """(segment, state, reason) the plan must give subscriber p<index>, worked out here."""
    choice = CHOICES[index % len(CHOICES)]
    topics = "all" if choice == "all" else frozenset(choice.split(";")) & set(settings.topic_slugs)
    ids = [s.id for s in select_summaries(summaries, topics)]
    if not ids:
        return "", "skipped", "no matching topics"
    return segment_key(ids), "pending", None


def eligible(start: int = 0, count: int = COUNT) -> list[int]:
    return [i for i in range(start, start + count) if i % 13]


def test_every_subscribed_subscriber_gets_one_row_with_its_segment(settings, db):
    add_list(db)
    issue, summaries = issue_summaries(settings)
    assert write_plan(db, settings, issue, summaries) == len(eligible())
    planned = ledger_rows(db)
    assert set(planned) == {f"p{i}@example.org" for i in eligible()}
    for i in eligible():
        assert planned[f"p{i}@example.org"][:3] == expected_row(settings, summaries, i), i
    meaning = ledger.get_plan(db, ISSUE).segments
    assert {row[0] for row in planned.values() if row[0]} == set(meaning)


def test_a_resumed_plan_adds_only_the_missing_rows_and_counts_them(settings, db):
    add_list(db)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    # As if the last pages had never been committed, one row were missing inside a page, and
    # some rows had been sent or had failed since (with their own provider id and attempts).
    ids = {r[1]: r[0] for r in db.conn.execute("SELECT id, email FROM subscribers")}
    lost = [i for i in eligible() if i >= 4 * planning.PLAN_PAGE or i == 777]
    with db.transaction():
        db.conn.executemany(
            "DELETE FROM ledger WHERE issue_id = ? AND subscriber_id = ?",
            ((ISSUE, ids[f"p{i}@example.org"]) for i in lost),
        )
        db.conn.execute(
            "UPDATE ledger SET state = 'sent', provider_id = 'msg-1', attempts = 1, "
            "updated_at = 'earlier' WHERE issue_id = ? AND subscriber_id IN (?, ?)",
            (ISSUE, ids["p1@example.org"], ids["p2@example.org"]),
        )
        db.conn.execute(
            "UPDATE ledger SET state = 'failed', reason = 'refused', updated_at = 'earlier' "
            "WHERE issue_id = ? AND subscriber_id = ?",
            (ISSUE, ids["p3@example.org"]),
        )
    before = ledger_rows(db)
    add_list(db, count=50, start=COUNT)  # and some people subscribed since

    missing = len(lost) + len(eligible(COUNT, 50))
    assert write_plan(db, settings, issue, summaries) == missing
    after = ledger_rows(db)
    assert {e: after[e] for e in before} == before  # every existing row exactly as it was
    assert set(after) - set(before) == {f"p{i}@example.org" for i in [*lost, *eligible(COUNT, 50)]}
    for i in [*lost, *eligible(COUNT, 50)]:
        assert after[f"p{i}@example.org"][:3] == expected_row(settings, summaries, i), i
    assert write_plan(db, settings, issue, summaries) == 0


def test_add_rows_leaves_existing_rows_alone_and_counts_the_new(settings, db):
    add_list(db, count=10)
    ids = [r[0] for r in db.conn.execute("SELECT id FROM subscribers ORDER BY id")]
    with db.transaction():
        assert ledger.add_rows(db, ISSUE, [(ids[0], "aaa", "pending", None)]) == 1
        db.conn.execute(
            "UPDATE ledger SET state = 'sent', provider_id = 'x-1' WHERE subscriber_id = ?",
            (ids[0],),
        )
    before = ledger_rows(db)
    rows = [(sid, "bbb", "pending", None) for sid in ids[:6]]
    rows.append((ids[6], "", "skipped", "no matching topics"))
    with db.transaction():
        assert ledger.add_rows(db, ISSUE, rows) == 6
        # Twice in one transaction: the second adds nothing.
        assert ledger.add_rows(db, ISSUE, rows) == 0
    after = ledger_rows(db)
    assert after["p0@example.org"] == before["p0@example.org"]
    assert after["p0@example.org"][:4] == ("aaa", "sent", None, "x-1")
    assert [after[f"p{i}@example.org"][:3] for i in range(1, 7)] == [
        ("bbb", "pending", None)
    ] * 5 + [("", "skipped", "no matching topics")]
    with db.transaction():
        assert ledger.add_rows(db, ISSUE, []) == 0


def test_a_page_that_fails_leaves_nothing_and_the_next_one_works(settings, db):
    add_list(db, count=20)
    ids = [r[0] for r in db.conn.execute("SELECT id FROM subscribers ORDER BY id")]
    with pytest.raises(RuntimeError, match="disk full"), db.transaction():
        assert ledger.add_rows(db, ISSUE, [(sid, "k", "pending", None) for sid in ids]) == 20
        raise RuntimeError("disk full")
    assert ledger_rows(db) == {}
    with db.transaction():
        assert ledger.add_rows(db, ISSUE, [(sid, "k", "pending", None) for sid in ids[:5]]) == 5
    with db.transaction():
        assert ledger.add_rows(db, ISSUE, [(sid, "k", "pending", None) for sid in ids]) == 15
    assert len(ledger_rows(db)) == 20


def test_a_row_naming_nobody_fails_the_whole_page(settings, db):
    add_list(db, count=5)
    ids = [r[0] for r in db.conn.execute("SELECT id FROM subscribers ORDER BY id")]
    rows = [(sid, "k", "pending", None) for sid in ids] + [(max(ids) + 100, "k", "pending", None)]
    with pytest.raises(IntegrityError), db.transaction():
        ledger.add_rows(db, ISSUE, rows)
    assert ledger_rows(db) == {}


@pytest.mark.postgresql_only
def test_after_a_plan_postgresql_plans_the_claims_on_the_ledgers_real_size(settings, db):
    # Autovacuum would analyse the grown ledger a minute later; meanwhile PostgreSQL took it
    # for nearly empty and planned each claim's update as a scan of the whole issue.
    add_list(db)
    issue, summaries = issue_summaries(settings)
    planned = write_plan(db, settings, issue, summaries)
    assert planned == COUNT - len(range(0, COUNT, 13))
    estimate, analysed = db.conn.execute(
        "SELECT c.reltuples, s.last_analyze FROM pg_class c "
        "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'ledger'"
    ).fetchone()
    assert analysed is not None
    assert estimate == planned
