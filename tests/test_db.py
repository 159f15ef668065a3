"""`newsletter db`: where a schema stands, upgrading it, and moving everything between SQLite and
PostgreSQL (`db copy`); the `database:` setting and NEWSLETTER_DATABASE_URL, whose password
never shows."""
# both_engines by hand: each test names its engines (status, upgrade, copy between them).

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from newsletter.store import Database, events, signups
from newsletter.store import subscribers as store
from newsletter.store.migrations import MIGRATIONS

ISSUE = "2026-12"


def every_row(location) -> dict[str, list[tuple]]:
    """Each table's rows (not schema_version), sorted, through the store's own connection."""
    from newsletter.store.copy import tables

    with Database(location) as db:
        return {
            table: sorted(
                (tuple(r) for r in db.conn.execute(f'SELECT * FROM "{table}"')),
                key=repr,
            )
            for table in tables(db)
        }


@pytest.fixture
def busy_workspace(workspace, run) -> Path:
    """A SQLite workspace that has used every table: an import (history, consent), a send to
    the outbox (sends, ledger, the plan in meta), a webhook event, a pending signup."""
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    sent = run("send", ISSUE, "--yes")
    assert sent.exit_code == 0, sent.stderr
    with Database(workspace / "newsletter.db") as db:
        with db.transaction():
            assert events.remember_event(db, "evt-1")
        signups.put(
            db,
            signups.PendingSignup(
                None,
                "new@example.org",
                "a" * 64,
                "New Person",
                "genetics",
                "2026-11-30T10:00:00Z",
                "2026-12-02T10:00:00Z",
                None,
                "192.0.2.0",
                "a browser",
                "home-page",
                "2026-01",
                "b" * 64,
                "https://ms-research.example.org/privacy/",
            ),
        )
        signups.add_attempt(db, "client-hash", "2026-11-30T10:00:00Z")
        counts = {t: len(rows) for t, rows in every_row(db.location).items()}
    assert all(counts[t] > 0 for t in ("subscribers", "history", "sends", "ledger", "meta"))
    assert all(counts[t] > 0 for t in ("webhook_events", "signups", "consents"))
    return workspace / "newsletter.db"


# Status and upgrade --------------------------------------------------------------------------------


def test_status_of_a_sqlite_database(workspace, run):
    missing = run("db", "status")
    assert missing.exit_code == 0
    assert missing.stdout == (
        f"newsletter.db (SQLite): no database there yet; any command creates it at version "
        f"{len(MIGRATIONS)}\n"
    )
    assert not (workspace / "newsletter.db").exists()  # status creates nothing
    assert run("subscribers", "add", "a@example.org").exit_code == 0
    result = run("db", "status")
    assert result.exit_code == 0
    n = len(MIGRATIONS)
    assert result.stdout == f"newsletter.db (SQLite): schema version {n} of {n}: up to date\n"
    assert run("db", "upgrade").stdout == f"newsletter.db: already at schema version {n}\n"


def test_postgresql_is_upgraded_by_db_upgrade_only(workspace, run, postgres_server):
    url = postgres_server.create_database()
    env = {"NEWSLETTER_DATABASE_URL": url}
    n = len(MIGRATIONS)
    before = run("db", "status", env=env)
    assert before.exit_code == 1
    assert before.stdout == (
        f"{url} (PostgreSQL): schema version 0 of {n}: {n} migration(s) to apply: "
        "run `newsletter db upgrade`\n"
    )
    refused = run("subscribers", "add", "a@example.org", env=env)
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: {url}: the database is at schema version 0, this tool needs {n}: "
        "run `newsletter db upgrade` first\n"
    )
    upgraded = run("db", "upgrade", env=env)
    assert upgraded.exit_code == 0, upgraded.stderr
    assert upgraded.stdout == f"{url}: upgraded from schema version 0 to {n}\n"
    assert run("db", "status", env=env).stdout.endswith(f"schema version {n} of {n}: up to date\n")
    assert run("db", "upgrade", env=env).stdout == f"{url}: already at schema version {n}\n"
    assert run("subscribers", "add", "Ana@Example.org", env=env).exit_code == 0
    again = run("subscribers", "add", "ana@EXAMPLE.org", env=env)  # addresses ignore case
    assert again.exit_code == 1
    assert "already a subscriber" in again.stderr


def test_a_database_made_by_the_v3_release_upgrades_without_losing_a_row(tmp_path):
    """A SQLite file as the release with migrations 1-3 left it (built with exactly those
    scripts and raw SQL), holding a row in every table, opened by this version."""
    path = tmp_path / "v3.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        old.executescript(script)
        old.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    at = "2026-11-01T09:00:00Z"
    old.executescript(
        f"""
        INSERT INTO subscribers VALUES (1, 'ana@example.org', 'Ana', 'genetics', 'subscribed',
            '{at}', '{at}', '{at}', NULL, 'signup');
        INSERT INTO subscribers VALUES (2, 'ben@example.org', '', 'all', 'unsubscribed',
            '{at}', '{at}', '{at}', 'one-click link', 'web');
        INSERT INTO history VALUES (1, 1, '{at}', 'created', NULL, 'subscribed', 'signup', NULL);
        INSERT INTO history VALUES (2, 2, '{at}', 'status', 'subscribed', 'unsubscribed', 'web',
            'one-click link');
        INSERT INTO sends VALUES ('2026-11', 'sent', 'outbox', '{at}', '{at}', '{at}', NULL,
            NULL, NULL, NULL, NULL);
        INSERT INTO ledger VALUES ('2026-11', 1, 'genetics', 'sent', NULL, 'msg-1', 1, 1, '{at}',
            'delivered', '{at}');
        INSERT INTO ledger VALUES ('2026-11', 2, 'all', 'skipped', 'unsubscribed', NULL, 0, NULL,
            '{at}', NULL, NULL);
        INSERT INTO meta VALUES ('suppressions.synced', '{at}');
        INSERT INTO webhook_events VALUES ('evt-9', '{at}');
        INSERT INTO signups VALUES (1, 'cy@example.org', '{"c" * 64}', 'Cy', 'all', '{at}',
            '{at}', NULL, '192.0.2.0', 'a browser', 'home-page', '2026-01', '{"d" * 64}', NULL);
        INSERT INTO signup_mailed VALUES ('cy@example.org', '{at}');
        INSERT INTO signup_attempts VALUES ('client', '{at}');
        INSERT INTO consent_texts VALUES ('{"d" * 64}', '2026-01', 'Yes, please.', '{at}');
        INSERT INTO consents VALUES (1, 'ana@example.org', 'signup', '{at}', '{at}', '192.0.2.0',
            'a browser', 'home-page', '2026-01', '{"d" * 64}', NULL, 'genetics');
        """
    )
    before = {
        table: old.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in (
            "subscribers",
            "history",
            "sends",
            "ledger",
            "meta",
            "webhook_events",
            "signups",
            "signup_mailed",
            "signup_attempts",
            "consent_texts",
            "consents",
        )
    }
    old.close()
    with Database(path) as db:  # this version: upgrades on opening
        assert db.schema_version() == len(MIGRATIONS)
        for table, rows in before.items():
            columns = [r[1] for r in sqlite3.connect(path).execute(f"PRAGMA table_info({table})")]
            assert len(columns) >= len(rows[0])  # a migration may add columns, never drop them
            kept = db.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            assert [tuple(r)[: len(rows[0])] for r in kept] == rows, table
        assert store.get_row_by_email(db, "ANA@example.org").status_source == "signup"
        assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []


# Copy ----------------------------------------------------------------------------------------------


def test_copy_sqlite_to_postgresql_and_back_keeps_every_row(
    busy_workspace, run, tmp_path, postgres_server
):
    original = every_row(busy_workspace)
    url = postgres_server.create_database()  # empty: the copy brings it to the current schema
    result = run("db", "copy", "newsletter.db", url)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"Copied {sum(map(len, original.values()))} rows in {len(original)} tables from "
        f"newsletter.db to {url}; counts and checksums match"
    )
    assert f"ledger: {len(original['ledger'])} rows, checksum " in result.stdout
    assert every_row(url) == original

    # The copy is a working database: the report reads it, and new rows get new ids.
    env = {"NEWSLETTER_DATABASE_URL": url}
    report = run("report", ISSUE, env=env)
    assert report.exit_code == 0, report.stderr
    assert report.stdout == run("report", ISSUE).stdout
    assert run("subscribers", "add", "late@example.org", env=env).exit_code == 0
    with Database(url) as db:
        late = store.get_row_by_email(db, "late@example.org")
    assert late.id == max(r[0] for r in original["subscribers"]) + 1

    back = tmp_path / "back" / "newsletter.db"
    assert run("db", "copy", url, str(back)).exit_code == 0
    returned = every_row(back)
    assert len(returned["subscribers"]) == len(original["subscribers"]) + 1
    returned["subscribers"] = [r for r in returned["subscribers"] if r[1] != "late@example.org"]
    late_history = [r for r in returned["history"] if r[1] == late.id]
    assert len(late_history) == 2
    returned["history"] = [r for r in returned["history"] if r[1] != late.id]
    assert returned == original


def test_copy_keeps_awkward_text_bytes_and_numbers_exactly(busy_workspace, run, postgres_server):
    # PostgreSQL is written with COPY, whose text format gives tabs, line breaks, backslashes,
    # `\N` and a lone `\.` meanings of their own: each must arrive as it was.
    name = 'Tab\there, a line\nbreak, back\\slash, \\N, \\.\n\\., "quotes", 🧠 é'
    key = bytes(range(256))  # every byte, NUL, tab and backslash among them
    with Database(busy_workspace) as db:
        store.insert(db, "awkward@example.org", name=name)
        with db.transaction():
            db.conn.execute(
                "INSERT INTO click_keys (issue_id, key, created_at, discard_after) "
                "VALUES (?, ?, ?, ?)",
                (ISSUE, key, "2026-12-01T00:00:00Z", "2027-03-01T00:00:00Z"),
            )
            db.conn.execute(
                "INSERT INTO click_recent (issue_id, clicker, link, summary_id, kind, day, at, "
                "automated) VALUES (?, 'c', 'l', 's', 'summary', '2026-12-01', ?, 0)",
                (ISSUE, 1764547200.123456789),
            )
    original = every_row(busy_workspace)
    url = postgres_server.create_database()
    assert run("db", "copy", "newsletter.db", url).exit_code == 0
    assert every_row(url) == original
    with Database(url) as db:
        assert store.get_row_by_email(db, "awkward@example.org").name == name
        assert db.conn.execute("SELECT key FROM click_keys").fetchone()[0] == key


def test_copy_refuses_a_target_with_data_unless_forced(busy_workspace, run, postgres_server):
    url = postgres_server.create_database()
    assert run("db", "copy", "newsletter.db", url).exit_code == 0
    with Database(url) as db:
        store.insert(db, "only-in-target@example.org")
    refused = run("db", "copy", "newsletter.db", url)
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: {url}: the target already holds data; nothing was copied "
        "(--force replaces it with the source's)\n"
    )
    with Database(url) as db:
        assert store.get_row_by_email(db, "only-in-target@example.org") is not None
    forced = run("db", "copy", "newsletter.db", url, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert every_row(url) == every_row(busy_workspace)


def test_copy_into_a_sqlite_file_with_data_refuses_then_replaces_append_only_rows(
    busy_workspace, run, tmp_path
):
    other = tmp_path / "other.db"
    with Database(other) as db:
        store.insert(db, "someone@example.org")  # a history row: append-only
    assert run("db", "copy", "newsletter.db", str(other)).exit_code == 1
    assert run("db", "copy", "newsletter.db", str(other), "--force").exit_code == 0
    assert every_row(other) == every_row(busy_workspace)
    with Database(other) as db, pytest.raises(Exception, match="append-only"):
        db.conn.execute("DELETE FROM history")  # the guards are back


# Settings and the environment ------------------------------------------------------------------


def test_the_database_setting_names_a_sqlite_file(workspace, run):
    settings = workspace / "newsletter.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8") + "database: data/list.db\n", encoding="utf-8"
    )
    assert run("subscribers", "add", "a@example.org").exit_code == 0
    assert (workspace / "data" / "list.db").exists()
    assert run("db", "status").stdout.startswith("data/list.db (SQLite): schema version")


def test_a_password_in_the_settings_file_is_refused(workspace, run):
    settings = workspace / "newsletter.yaml"
    text = settings.read_text(encoding="utf-8")
    settings.write_text(text + "database: postgresql://app:hunter2@db.internal/news\n")
    result = run("db", "status")
    assert result.exit_code == 1
    assert "field 'database': the URL holds a password, which does not belong in the settings" in (
        result.stderr
    )
    assert "NEWSLETTER_DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_server_that_cannot_be_reached_is_named_without_its_password(run):
    url = "postgresql://app:s3cr3t-pw@127.0.0.1:9/news"  # port 9 (discard): nothing listens
    result = run("subscribers", "list", env={"NEWSLETTER_DATABASE_URL": url})
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: postgresql://app:***@127.0.0.1:9/news: cannot use the database: "
    )
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_environment_never_shows_the_url():
    from newsletter.config import Environment

    environment = Environment.read({"NEWSLETTER_DATABASE_URL": "postgresql://a:pw@h/d"})
    assert environment.database_url == "postgresql://a:pw@h/d"
    assert "pw" not in repr(environment)
