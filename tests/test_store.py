"""The store: migrations, subscriber queries, append-only history, import staging (on SQLite
and PostgreSQL; the tests of SQLite's own ways say so)."""

from __future__ import annotations

import sqlite3

import pytest

from newsletter.store import Database, IntegrityError
from newsletter.store import subscribers as store
from newsletter.store.migrations import MIGRATIONS

pytestmark = pytest.mark.both_engines


@pytest.fixture
def db(tmp_path, database_url):
    database = Database(database_url or tmp_path / "state" / "newsletter.db")
    yield database
    database.close()


def test_database_is_created_on_first_use_with_wal_and_foreign_keys(tmp_path):
    path = tmp_path / "new" / "newsletter.db"
    with Database(path) as db:
        assert path.exists()
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.schema_version() == len(MIGRATIONS)
    with Database(path) as again:  # migrations run once: reopening applies nothing
        rows = again.conn.execute("SELECT version FROM schema_version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_foreign_keys_are_enforced(db):
    with pytest.raises(IntegrityError), db.transaction():
        db.conn.execute(
            "INSERT INTO history (subscriber_id, at, field, source) VALUES (999, 'x', 'name', 'cli')"
        )


def test_insert_and_look_up_by_id_and_email_ignoring_case(db):
    sub = store.insert(db, "Ana@Example.ORG", name="Ana", topics=["genetics", "infections"])
    assert sub.email == "ana@example.org"
    assert sub.topics == {"genetics", "infections"}
    assert (sub.status, sub.status_source) == ("subscribed", "cli")
    assert store.get_row(db, sub.id) == sub
    assert store.get_row_by_email(db, "ANA@example.org") == sub
    assert store.get_row_by_email(db, "nobody@example.org") is None
    with pytest.raises(IntegrityError):
        store.insert(db, "ana@EXAMPLE.org")


def test_status_change_is_recorded_in_history(db):
    sub = store.insert(db, "a@example.org", topics="all")
    assert store.write_status(db, sub.id, "unsubscribed", "web", "one-click link")
    assert not store.write_status(db, sub.id, "unsubscribed", "web")  # unchanged: nothing recorded
    after = store.get_row(db, sub.id)
    assert (after.status, after.status_source, after.status_reason) == (
        "unsubscribed",
        "web",
        "one-click link",
    )
    changes = store.history_rows(db, sub.id)
    assert [(c["field"], c["old_value"], c["new_value"], c["source"]) for c in changes] == [
        ("created", None, "subscribed", "cli"),
        ("topics", None, "all", "cli"),
        ("status", "subscribed", "unsubscribed", "web"),
    ]


def test_history_is_append_only(db):
    sub = store.insert(db, "a@example.org")
    with pytest.raises(IntegrityError, match="append-only"):
        db.conn.execute("UPDATE history SET source = 'web' WHERE subscriber_id = ?", (sub.id,))
    with pytest.raises(IntegrityError, match="append-only"):
        db.conn.execute("DELETE FROM history WHERE subscriber_id = ?", (sub.id,))
    assert len(store.history_rows(db, sub.id)) == 2


def test_transaction_rolls_back_everything_on_error(db):
    with pytest.raises(RuntimeError), db.transaction():
        store.insert(db, "a@example.org")  # nested: joins the outer transaction
        raise RuntimeError("midway")
    assert store.count(db) == 0
    assert db.conn.execute("SELECT count(*) FROM history").fetchone()[0] == 0


@pytest.fixture
def people(db):
    """Five subscribers with various topics and statuses, by email."""
    made = {
        "all@example.org": store.insert(db, "all@example.org", topics="all"),
        "gen@example.org": store.insert(db, "gen@example.org", topics=["genetics"]),
        "epi@example.org": store.insert(db, "epi@example.org", topics=["epigenetics"]),
        "two@example.org": store.insert(db, "two@example.org", topics=["genetics", "infections"]),
        "gone@example.org": store.insert(db, "gone@example.org", topics=["genetics"]),
    }
    store.write_status(db, made["gone@example.org"].id, "unsubscribed", "cli")
    return made


def emails(subscribers) -> list[str]:
    return [s.email for s in subscribers]


def test_iter_subscribers_streams_in_pages_by_id(db, people):
    subscribed = emails(store.iter_subscribers(db, page_size=2))
    assert subscribed == [
        "all@example.org",
        "gen@example.org",
        "epi@example.org",
        "two@example.org",
    ]
    assert len(emails(store.iter_subscribers(db, status=None, page_size=1))) == 5
    assert emails(store.iter_subscribers(db, status="unsubscribed")) == ["gone@example.org"]


def test_topic_filter_matches_whole_slugs_and_all(db, people):
    # 'genetics' must not match inside 'epigenetics'.
    got = emails(store.iter_subscribers(db, topic="genetics", page_size=2))
    assert got == ["all@example.org", "gen@example.org", "two@example.org"]
    got = emails(store.iter_subscribers(db, topic="genetics", topic_includes_all=False))
    assert got == ["gen@example.org", "two@example.org"]
    assert store.count(db, "subscribed", topic="genetics") == 3
    assert store.count(db, None, topic="genetics") == 4
    assert store.count(db) == 5


def test_counts_by_status_and_by_topics(db, people):
    assert store.count_by_status(db) == {"subscribed": 4, "unsubscribed": 1}
    assert store.count_by_topics(db) == {
        "all": 1,
        "genetics": 1,
        "epigenetics": 1,
        "genetics;infections": 1,
    }
    assert store.count_by_topics(db, None)["genetics"] == 2


def test_topics_encoding_round_trips():
    assert store.encode_topics(["b", "a", "b"]) == "a;b"
    assert store.encode_topics([]) == "all"
    assert store.decode_topics("a;b") == {"a", "b"}
    assert store.decode_topics("") == "all"


# Import staging ----------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_import_stage_lives_outside_the_database_file(db, tmp_path):
    with store.ImportStage(db) as stage:
        stage.add([(2, "a@example.org", "A", "all", None, True)])
        other = sqlite3.connect(db.path)  # a second connection sees no staged table
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master")}
        other.close()
        assert not any("import" in name for name in tables)
    # Closed: the temp table is gone.
    assert db.conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0] == 0


def test_import_stage_finds_duplicates_and_joins_existing(db):
    known = store.insert(db, "known@example.org", name="Known", topics=["genetics"])
    with store.ImportStage(db) as stage:
        stage.add(
            [
                (2, "new@example.org", "New", "all", "subscribed", True),
                (3, "known@example.org", None, "infections", None, True),
                (4, "dup@example.org", "", "all", None, False),  # refused for another reason
                (5, "dup@example.org", "", "all", None, True),
                (6, "dup@example.org", "", "all", None, True),
            ]
        )
        duplicates = stage.duplicates()
        assert duplicates == [(5, "dup@example.org", 4), (6, "dup@example.org", 4)]
        stage.refuse(line for line, _, _ in duplicates)
        pages = list(stage.pages(page_size=1))
    assert [len(p) for p in pages] == [1, 1]
    new, old = pages[0][0], pages[1][0]
    assert (new.line, new.current_id) == (2, None)
    assert (old.line, old.current_id, old.current_name, old.current_topics) == (
        3,
        known.id,
        "Known",
        "genetics",
    )
    assert old.name is None and old.status is None


def test_write_import_batch_writes_rows_and_history(db):
    old = store.insert(db, "old@example.org", name="Old", topics=["genetics"])
    batch = store.ImportBatch(
        new=[
            ("n1@example.org", "N1", "all", "subscribed", "imported from x.csv:2"),
            ("n2@example.org", "", "genetics", "unsubscribed", "imported from x.csv:3"),
        ],
        names=[(old.id, "Old", "Older")],
        topics=[(old.id, "genetics", "infections")],
        statuses=[(old.id, "subscribed", "bounced", "imported from x.csv:4")],
    )
    assert len(batch) == 5
    with db.transaction():
        store.write_import_batch(db, batch, "2026-01-01T00:00:00Z", "import")
    n2 = store.get_row_by_email(db, "n2@example.org")
    assert (n2.status, n2.status_source, n2.status_reason) == (
        "unsubscribed",
        "import",
        "imported from x.csv:3",
    )
    assert [(c["field"], c["new_value"], c["source"]) for c in store.history_rows(db, n2.id)] == [
        ("created", "unsubscribed", "import"),
        ("topics", "genetics", "import"),
    ]
    after = store.get_row(db, old.id)
    assert (after.name, after.topics, after.status) == ("Older", {"infections"}, "bounced")
    changes = [(c["field"], c["old_value"], c["new_value"]) for c in store.history_rows(db, old.id)]
    assert changes[2:] == [
        ("name", "Old", "Older"),
        ("topics", "genetics", "infections"),
        ("status", "subscribed", "bounced"),
    ]


def test_ledger_rows_survive_the_move_to_a_segment_clustered_ledger(tmp_path, monkeypatch):
    """A database made by version 1 keeps every ledger row, and (issue, subscriber) stays unique."""
    import newsletter.store as store_package

    path = tmp_path / "old.db"
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS[:1])
    with Database(path) as old:
        assert old.schema_version() == 1
        ana = store.insert(old, "ana@example.org")
        with old.transaction():
            old.conn.execute(
                "INSERT INTO ledger (issue_id, subscriber_id, segment, state, provider_id, "
                "updated_at) VALUES ('2026-12', ?, 'a|b', 'sent', 'msg-1', 'now')",
                (ana.id,),
            )
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS)
    with Database(path) as new:
        assert new.schema_version() == len(MIGRATIONS)
        rows = new.conn.execute(
            "SELECT issue_id, subscriber_id, segment, state, provider_id FROM ledger"
        )
        assert [tuple(r) for r in rows] == [("2026-12", ana.id, "a|b", "sent", "msg-1")]
        with pytest.raises(IntegrityError), new.transaction():
            new.conn.execute(
                "INSERT INTO ledger (issue_id, subscriber_id, segment, state, updated_at) "
                "VALUES ('2026-12', ?, 'other', 'pending', 'now')",
                (ana.id,),
            )


def test_a_database_before_signup_upgrades_and_keeps_every_row(tmp_path, monkeypatch):
    """Version 3 rebuilds `subscribers` (so `signup` may be a status source) under tables that
    reference it: every subscriber, history row and ledger row survives, with its id, and the
    foreign keys still hold."""
    import newsletter.store as store_package

    path = tmp_path / "old.db"
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS[:2])
    with Database(path) as old:
        assert old.schema_version() == 2
        ana = store.insert(old, "ana@example.org", name="Ana", topics={"genetics"})
        bo = store.insert(old, "bo@example.org", status="bounced", source="sendgrid")
        store.write_status(old, ana.id, "unsubscribed", "web", "one-click unsubscribe")
        with old.transaction():
            old.conn.execute(
                "INSERT INTO ledger (issue_id, subscriber_id, segment, state, updated_at) "
                "VALUES ('2026-12', ?, 'a', 'sent', 'now')",
                (bo.id,),
            )
        before = {
            table: [tuple(r) for r in old.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in ("subscribers", "history", "ledger")
        }
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS[:3])
    with Database(path) as new:
        assert new.schema_version() == 3
        for table, rows in before.items():
            assert [
                tuple(r) for r in new.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            ] == rows
        assert new.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert new.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {r[1] for r in new.conn.execute("PRAGMA index_list(subscribers)")}
        assert "subscribers_by_status" in indexes
        assert store.write_status(new, ana.id, "subscribed", "signup", "confirmed")
        assert store.get_row(new, ana.id).status_source == "signup"
        with pytest.raises(IntegrityError), new.transaction():
            new.conn.execute(
                "INSERT INTO history (subscriber_id, at, field, source) "
                "VALUES (999, 'x', 'name', 'cli')"
            )
        with pytest.raises(IntegrityError), new.transaction():
            new.conn.execute("UPDATE subscribers SET status_source = 'elsewhere'")
        tables = {
            r[0] for r in new.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {
            "signups",
            "signup_mailed",
            "signup_attempts",
            "consents",
            "consent_texts",
        } <= tables
