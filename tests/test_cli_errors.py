"""A user's mistake or a broken environment is one line on stderr and exit status 1, never a
traceback, and nothing is written: bad issue ids, folders where files should be, databases that
cannot be created, written or locked. One mapping covers every command, new ones included."""
# Not both_engines: SQLite files' own failures (read-only, locked); PostgreSQL's in test_db.

from __future__ import annotations

import sqlite3

import click
import pytest

from newsletter import store
from newsletter.cli import cli, pass_app
from tests.support.delivery import ISSUE, add_people


def one_line_error(result) -> str:
    """The single `error: ...` line of a failed command (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("bad_id", ["../../escape", "a/b", "-rf", ".hidden", "2026-12\n"])
def test_compose_refuses_an_issue_id_that_is_not_a_plain_name(run, workspace, bad_id):
    before = files_under(workspace.parent)
    line = one_line_error(run("compose", "--date", "2026-12-01", f"--id={bad_id}"))
    assert line == (
        f"error: issue id {bad_id!r} is not allowed: use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit (for example 2026-12)"
    )
    assert files_under(workspace.parent) == before


def test_a_folder_named_like_a_summary_is_named_in_the_error(run, workspace):
    (workspace / "summaries" / "x.yaml").mkdir()
    for command in (["check", ISSUE], ["compose", "--date", "2026-12-01", "--id", "extra"]):
        line = one_line_error(run(*command))
        assert line == "error: summaries/x.yaml: is a folder, not a file"
    assert not (workspace / "issues" / "extra.yaml").exists()


def test_a_settings_path_that_is_a_folder_is_named_in_the_error(run, workspace):
    (workspace / "settings-folder").mkdir()
    result = run("check", ISSUE, env={"NEWSLETTER_CONFIG": "settings-folder"})
    assert one_line_error(result) == "error: settings-folder: is a folder, not a file"


def test_a_database_whose_folder_cannot_be_created_is_named_in_the_error(run, workspace):
    (workspace / "state").write_text("a file where the database's folder should be\n")
    settings = workspace / "newsletter.yaml"
    text = settings.read_text(encoding="utf-8")
    settings.write_text(text.replace("database: newsletter.db", "database: state/db/n.db"))
    line = one_line_error(run("subscribers", "add", "ana@example.org"))
    assert line == (
        "error: state/db/n.db: cannot create the database's folder state/db: not a directory"
    )


def make_read_only(path) -> None:
    """Make a database file read-only in SQLite's eyes, whoever runs the tests.

    Root ignores file modes, so `chmod 444` would not do it when the tests run as root; SQLite
    opens a file whose header says "write version 3" (byte 18) read-only, with the same error a
    read-only file or mount gives: "attempt to write a readonly database".
    """
    with open(path, "r+b") as f:
        f.seek(18)
        f.write(bytes([3]))


READ_ONLY = (
    "error: newsletter.db: the database is read-only (attempt to write a readonly database): "
    "make the file and its folder writable for the user running this command"
)


@pytest.mark.parametrize(
    "command", [["subscribers", "add", "new@example.org"], ["send", ISSUE, "--yes"]]
)
def test_a_read_only_database_is_named_in_the_error(run, workspace, db, command):
    add_people(db)
    db.close()
    make_read_only(workspace / "newsletter.db")
    assert one_line_error(run(*command)) == READ_ONLY
    assert not (workspace / "outbox").exists()


@pytest.mark.parametrize(
    "command", [["subscribers", "add", "new@example.org"], ["send", ISSUE, "--yes"]]
)
def test_a_database_locked_longer_than_the_busy_timeout_is_named_in_the_error(
    run, workspace, db, monkeypatch, command
):
    add_people(db)
    monkeypatch.setattr(store, "BUSY_TIMEOUT", 0.05)
    other = sqlite3.connect(workspace / "newsletter.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another command is writing, and keeps at it
    try:
        line = one_line_error(run(*command))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert line == (
        "error: newsletter.db: the database is locked: another command has been writing to it "
        "for more than 0.05 seconds; try again when it has finished"
    )
    assert db.conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 10
    assert db.conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0
    assert not (workspace / "outbox").exists()


@pytest.fixture
def extra_command():
    """Register a command the way a new module would, and take it away afterwards."""
    added = []

    def register(function):
        command = click.command(name="extra-test-command")(pass_app(function))
        cli.add_command(command)
        added.append(command.name)
        return command

    yield register
    for name in added:
        cli.commands.pop(name)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            sqlite3.OperationalError("disk I/O error"),
            "error: newsletter.db: database error: disk I/O error",
        ),
        (
            sqlite3.DatabaseError("file is not a database"),
            "error: newsletter.db: not a newsletter database, or a damaged one "
            "(file is not a database)",
        ),
        (
            OSError(28, "No space left on device", "out/file.csv"),
            "error: out/file.csv: no space left on device",
        ),
    ],
)
def test_a_new_command_gets_the_same_one_line_errors(run, extra_command, raised, expected):
    @extra_command
    def extra(app):
        assert app.db.path.exists()  # opened, as most commands do
        raise raised

    assert one_line_error(run("extra-test-command")) == expected


def test_a_bug_in_a_command_still_shows_its_traceback(run, extra_command):
    @extra_command
    def extra(app):
        raise sqlite3.IntegrityError("UNIQUE constraint failed: subscribers.email")

    with pytest.raises(sqlite3.IntegrityError):
        run("extra-test-command")
