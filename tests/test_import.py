"""Import rules: validate everything first, write in one transaction, never undo an unsubscribe."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from newsletter import subscribers as subs
from newsletter.config import display_path
from newsletter.errors import ImportRefused, SubscriberError
from newsletter.store import Database
from newsletter.store import subscribers as store
from tests.support.postgres import workspace_database

HEADER = "email,name,topics,status\n"
SEED = HEADER + (
    "ana@example.org,Ana,genetics,\n"
    "ben@example.org,Ben,all,\n"
    "cy@example.org,Cy,infections;womens-health,unsubscribed\n"
)


pytestmark = pytest.mark.both_engines


def snapshot(location: str | Path) -> tuple[list, list]:
    """Every row of subscribers and history, read through a separate connection."""
    with Database(location) as other:
        return (
            [tuple(r) for r in other.conn.execute("SELECT * FROM subscribers ORDER BY id")],
            [tuple(r) for r in other.conn.execute("SELECT * FROM history ORDER BY id")],
        )


@pytest.fixture
def seeded(workspace, run) -> str | Path:
    """The workspace's database holding three subscribers (one unsubscribed); returns where."""
    (workspace / "seed.csv").write_text(SEED, encoding="utf-8")
    result = run("subscribers", "import", "seed.csv")
    assert result.exit_code == 0, result.stderr
    return workspace_database(workspace)


def status_of(db_path: Path, email: str) -> str:
    with Database(db_path) as db:
        return store.get_row_by_email(db, email).status


# Bad input: a clear error, exit 1, nothing written -----------------------------------------------


def after_a_good_row(row: bytes) -> bytes:
    """A file whose line 3 is `row`, after a valid new row that must not be written either."""
    return (HEADER + "new@example.org,New,,\n").encode() + row


BAD_INPUT = {
    "not a CSV": (b'{"subscribers": ["a@example.org"]}\n', "bad.csv:1: not a subscribers CSV"),
    "a binary file": (b"\x89PNG\r\n\x1a\n\x00\x00", "bad.csv:1: not a CSV text file"),
    "an empty file": (b"", "bad.csv: the file is empty"),
    "a header without email": (b"name,topics\nAna,all\n", "bad.csv:1: no 'email' column"),
    "a misspelt header": (
        b"e-mail,name\n",
        "bad.csv:1: unknown column 'e-mail' (expected columns: email, name, topics, status); "
        "did you mean 'email'?",
    ),
    "a@b": (after_a_good_row(b"a@b,A,,\n"), "bad.csv:3: email 'a@b' is not a valid address: "),
    "a@@b.org": (
        after_a_good_row(b"a@@b.org,A,,\n"),
        "bad.csv:3: email 'a@@b.org' is not a valid address: ",
    ),
    "a b@c.org": (
        after_a_good_row(b"a b@c.org,A,,\n"),
        "bad.csv:3: email 'a b@c.org' is not a valid address: ",
    ),
    "a name with a newline": (
        after_a_good_row(b'x@example.org,"Ana\nLopez",,\n'),
        "bad.csv:3: name 'Ana\\nLopez' contains a line break",
    ),
    "a name with an unquoted comma": (
        after_a_good_row(b"x@example.org,Lopez, Ana,,\n"),
        "bad.csv:3: 5 fields, but the header has 4 (a name with a comma must be in double quotes",
    ),
    "an unknown topic": (
        after_a_good_row(b"x@example.org,X,cooking,\n"),
        "bad.csv:3: unknown topic 'cooking' (known topics: treatment-safety,",
    ),
    "a status of maybe": (
        after_a_good_row(b"x@example.org,X,,maybe\n"),
        "bad.csv:3: unknown status 'maybe'",
    ),
    "a Latin-1 file": (
        after_a_good_row("x@example.org,José,,\n".encode("latin-1")),
        "bad.csv:3: not UTF-8 text (byte 0xe9 at column 18)",
    ),
    "a duplicate ignoring case": (
        after_a_good_row(b"New@Example.ORG,N,,\n"),
        "bad.csv:3: email 'new@example.org' appears again (first on line 2; case is ignored)",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_refused_and_nothing_written(workspace, run, seeded, case):
    content, expected = BAD_INPUT[case]
    (workspace / "bad.csv").write_bytes(content)
    before = snapshot(seeded)
    result = run("subscribers", "import", "bad.csv")
    assert result.exit_code == 1
    assert f"error: {expected}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert snapshot(seeded) == before


def test_a_correctly_quoted_name_with_a_comma_is_fine(workspace, run, seeded):
    (workspace / "ok.csv").write_text(HEADER + 'x@example.org,"Lopez, Ana",,\n', encoding="utf-8")
    result = run("subscribers", "import", "ok.csv")
    assert result.exit_code == 0, result.stderr
    with Database(seeded) as db:
        assert store.get_row_by_email(db, "x@example.org").name == "Lopez, Ana"


def test_missing_file_is_an_error_not_a_traceback(run):
    result = run("subscribers", "import", "nowhere.csv")
    assert result.exit_code == 1
    assert result.stderr == "error: nowhere.csv: file not found\n"


def test_every_error_is_listed_with_its_line(workspace, run, seeded):
    (workspace / "bad.csv").write_text(
        HEADER + "ok1@example.org,,,\n"
        "a@@b.org,,,\n"
        "ok2@example.org,,,\n"
        "c@example.org,,cooking,maybe\n"
        "OK1@example.org,,,\n",
        encoding="utf-8",
    )
    before = snapshot(seeded)
    result = run("subscribers", "import", "bad.csv")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert [line.split(":")[2] for line in lines[:-1]] == ["3", "5", "5", "6"]
    assert lines[-1] == (
        "error: bad.csv: 3 of 5 rows are invalid; nothing was imported "
        "(fix them, or import with --skip-invalid to leave them out)"
    )
    assert snapshot(seeded) == before


def test_100000_rows_with_one_bad_row_at_the_end(workspace, run, seeded):
    with open(workspace / "big.csv", "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        out.writelines(f"user{i}@example.org,User {i},genetics,\n" for i in range(99_999))
        out.write("bad@@example.org,Bad,,\n")
    before = snapshot(seeded)
    result = run("subscribers", "import", "big.csv")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: big.csv:100001: email 'bad@@example.org' is not a valid address: "
        "The part after the @-sign contains invalid characters: '@'.",
        "error: big.csv: 1 of 100000 rows are invalid; nothing was imported "
        "(fix them, or import with --skip-invalid to leave them out)",
    ]
    assert snapshot(seeded) == before


# What an import does -----------------------------------------------------------------------------


def test_import_the_example_file(workspace, run):
    result = run("subscribers", "import", "subscribers.example.csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "subscribers.example.csv: 25 rows: 25 added, 0 updated, 0 unchanged, 0 refused\n"
    )
    again = run("subscribers", "import", "subscribers.example.csv")
    assert "25 rows: 0 added, 0 updated, 25 unchanged, 0 refused" in again.stdout
    with Database(workspace_database(workspace)) as db:
        assert store.count_by_status(db) == {
            "subscribed": 20,
            "unsubscribed": 2,
            "bounced": 2,
            "complained": 1,
        }
        ingrid = store.get_row_by_email(db, "INGRID.SOLBERG@example.net")
        assert (ingrid.email, ingrid.topics) == ("ingrid.solberg@example.net", "all")


def test_existing_subscribers_are_updated_with_history(workspace, run, seeded):
    (workspace / "update.csv").write_text(
        HEADER + "ANA@example.org,Ana María,genetics;infections,\nben@example.org,Ben,all,\n",
        encoding="utf-8",
    )
    result = run("subscribers", "import", "update.csv")
    assert result.exit_code == 0, result.stderr
    assert "2 rows: 0 added, 1 updated, 1 unchanged, 0 refused" in result.stdout
    with Database(seeded) as db:
        ana = store.get_row_by_email(db, "ana@example.org")
        assert (ana.name, ana.topics) == ("Ana María", {"genetics", "infections"})
        changes = store.history_rows(db, ana.id)[-2:]
    assert [(c["field"], c["old_value"], c["new_value"], c["source"]) for c in changes] == [
        ("name", "Ana", "Ana María", "import"),
        ("topics", "genetics", "genetics;infections", "import"),
    ]


def test_missing_columns_leave_those_fields_alone(workspace, run, seeded):
    (workspace / "emails.csv").write_text(
        "email\nana@example.org\ncy@example.org\nnew@example.org\n"
    )
    result = run("subscribers", "import", "emails.csv")
    assert "3 rows: 1 added, 0 updated, 2 unchanged" in result.stdout
    with Database(seeded) as db:
        ana, cy, new = (
            store.get_row_by_email(db, e)
            for e in ("ana@example.org", "cy@example.org", "new@example.org")
        )
    assert (ana.name, ana.topics, ana.status) == ("Ana", {"genetics"}, "subscribed")
    assert cy.status == "unsubscribed"
    assert (new.name, new.topics, new.status) == ("", "all", "subscribed")


def test_a_row_with_status_unsubscribed_unsubscribes(workspace, run, seeded):
    (workspace / "leavers.csv").write_text(HEADER + "ben@example.org,Ben,all,unsubscribed\n")
    result = run("subscribers", "import", "leavers.csv")
    assert "1 updated" in result.stdout
    with Database(seeded) as db:
        ben = store.get_row_by_email(db, "ben@example.org")
        last = store.history_rows(db, ben.id)[-1]
    assert (ben.status, ben.status_source, ben.status_reason) == (
        "unsubscribed",
        "import",
        "imported from leavers.csv:2",
    )
    assert (last["field"], last["old_value"], last["new_value"], last["source"]) == (
        "status",
        "subscribed",
        "unsubscribed",
        "import",
    )


# The unsubscribe is never undone -----------------------------------------------------------------


@pytest.mark.parametrize("left", ["unsubscribed", "bounced", "complained", "invalid"])
@pytest.mark.parametrize("status_cell", ["subscribed", ""])
def test_import_never_resubscribes_anyone_who_left(db, settings, tmp_path, left, status_cell):
    sub = store.insert(db, "left@example.org", topics=["genetics"])
    store.write_status(db, sub.id, left, "sendgrid", "provider said so")
    path = tmp_path / "old.csv"
    path.write_text(HEADER + f"left@example.org,Back,infections,{status_cell}\n")
    result = subs.import_csv(db, settings, path)
    after = store.get_row(db, sub.id)
    assert (after.status, after.status_source) == (left, "sendgrid")
    assert (after.name, after.topics) == ("Back", {"infections"})  # the rest is still updated
    assert (result.updated, result.kept_status) == (1, 1)
    assert all(
        c["field"] != "status" or c["source"] == "sendgrid" for c in store.history_rows(db, sub.id)
    )


@pytest.mark.parametrize("left", ["unsubscribed", "bounced", "complained", "invalid"])
def test_resubscribe_flag_allows_it(db, settings, tmp_path, left):
    sub = store.insert(db, "left@example.org")
    store.write_status(db, sub.id, left, "cli")
    path = tmp_path / "back.csv"
    path.write_text(HEADER + "left@example.org,,,subscribed\n")
    result = subs.import_csv(db, settings, path, resubscribe=True)
    assert (result.updated, result.kept_status) == (1, 0)
    after = store.get_row(db, sub.id)
    assert (after.status, after.status_source) == ("subscribed", "import")


def test_an_old_list_reimported_does_not_undo_an_unsubscribe(workspace, run):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    assert run("subscribers", "unsubscribe", "maria.keller@example.org").exit_code == 0
    result = run("subscribers", "import", "subscribers.example.csv")
    assert result.exit_code == 0
    assert "25 rows: 0 added, 0 updated, 25 unchanged, 0 refused" in result.stdout
    assert "1 rows ask for a weaker status than the subscriber has" in result.stdout
    assert "--resubscribe" in result.stdout
    assert status_of(workspace_database(workspace), "maria.keller@example.org") == "unsubscribed"
    # Only an explicit --resubscribe brings them (and the example's other leavers) back.
    result = run("subscribers", "import", "subscribers.example.csv", "--resubscribe")
    assert "1 updated" in result.stdout
    assert status_of(workspace_database(workspace), "maria.keller@example.org") == "subscribed"


def test_an_import_never_weakens_a_complaint_or_an_unsubscribe(workspace, run):
    (workspace / "first.csv").write_text(
        "email,status\n"
        "angry@example.org,complained\n"
        "gone@example.org,unsubscribed\n"
        "left@example.org,unsubscribed\n"
        "bounced@example.org,bounced\n"
        "bad@example.org,invalid\n"
        "here@example.org,subscribed\n"
    )
    assert run("subscribers", "import", "first.csv").exit_code == 0
    (workspace / "second.csv").write_text(
        "email,status\n"
        "angry@example.org,unsubscribed\n"  # weaker: kept complained
        "gone@example.org,bounced\n"  # weaker: kept unsubscribed
        "left@example.org,invalid\n"  # weaker: kept unsubscribed
        "bounced@example.org,invalid\n"  # as strong: kept bounced
        "bad@example.org,unsubscribed\n"  # stronger: their own choice is recorded
        "here@example.org,complained\n"  # stronger
    )
    result = run("subscribers", "import", "second.csv")
    assert result.exit_code == 0
    assert "6 rows: 0 added, 2 updated, 4 unchanged, 0 refused" in result.stdout
    assert "4 rows ask for a weaker status than the subscriber has" in result.stdout
    db = workspace_database(workspace)
    assert [
        status_of(db, f"{who}@example.org") for who in ("angry", "gone", "left", "bounced")
    ] == [
        "complained",
        "unsubscribed",
        "unsubscribed",
        "bounced",
    ]
    assert status_of(db, "bad@example.org") == "unsubscribed"
    assert status_of(db, "here@example.org") == "complained"

    # --resubscribe is the admin's override, and the history says it was used.
    result = run("subscribers", "import", "second.csv", "--resubscribe")
    assert "6 rows: 0 added, 4 updated, 2 unchanged, 0 refused" in result.stdout
    assert status_of(db, "angry@example.org") == "unsubscribed"
    history = run("subscribers", "history", "angry@example.org", env={"COLUMNS": "200"}).stdout
    assert "complained → unsubscribed" in history
    assert "imported from second.csv:2 (--resubscribe)" in history


def test_the_import_summary_counts_every_row(workspace, run):
    (workspace / "first.csv").write_text(
        "email,name,status\n"
        "a@example.org,A,subscribed\n"
        "b@example.org,B,subscribed\n"
        "c@example.org,C,subscribed\n"
        "d@example.org,D,unsubscribed\n"
        "e@example.org,E,bounced\n"
        "f@example.org,F,complained\n"
    )
    result = run("subscribers", "import", "first.csv")
    assert "6 rows: 6 added, 0 updated, 0 unchanged, 0 refused" in result.stdout
    (workspace / "second.csv").write_text(
        "email,name,status\n"
        "a@example.org,A,subscribed\n"  # unchanged
        "b@example.org,Bea,subscribed\n"  # updated: name
        "c@example.org,C,unsubscribed\n"  # updated: status
        "d@example.org,D,subscribed\n"  # kept, so unchanged
        "e@example.org,E,subscribed\n"  # kept, so unchanged
        "f@example.org,Fay,subscribed\n"  # kept, and updated: name
        "g@example.org,G,\n"  # added
        "h@example.org,H,bounced\n"  # added
    )
    result = run("subscribers", "import", "second.csv", "--dry-run")
    assert "8 rows: 2 would be added, 3 would be updated, 3 unchanged, 0 refused" in result.stdout
    assert "3 rows ask for a weaker status" in result.stdout
    result = run("subscribers", "import", "second.csv")
    assert "8 rows: 2 added, 3 updated, 3 unchanged, 0 refused" in result.stdout
    assert "3 rows ask for a weaker status" in result.stdout


# --skip-invalid and --dry-run --------------------------------------------------------------------


def test_skip_invalid_imports_valid_rows_and_lists_the_others(workspace, run, seeded):
    (workspace / "mixed.csv").write_text(
        HEADER + "new1@example.org,,,\na@@b.org,,,\nnew2@example.org,,,\nnew1@EXAMPLE.org,,,\n"
    )
    result = run("subscribers", "import", "mixed.csv", "--skip-invalid")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "skipped: mixed.csv:3: email 'a@@b.org' is not a valid address: "
        "The part after the @-sign contains invalid characters: '@'.",
        "skipped: mixed.csv:5: email 'new1@example.org' appears again "
        "(first on line 2; case is ignored)",
    ]
    assert "4 rows: 2 added, 0 updated, 0 unchanged, 2 refused" in result.stdout
    with Database(seeded) as db:
        assert store.count(db) == 5


def test_dry_run_counts_and_writes_nothing(workspace, run, seeded):
    (workspace / "next.csv").write_text(
        HEADER + "ana@example.org,Ana,genetics,\n"  # unchanged
        "ben@example.org,Benjamin,all,\n"  # updated
        "cy@example.org,Cy,infections;womens-health,subscribed\n"  # kept unsubscribed
        "dee@example.org,Dee,,\n"  # added
        "bad@@example.org,,,\n"  # refused
    )
    before = snapshot(seeded)
    result = run("subscribers", "import", "next.csv", "--dry-run", "--skip-invalid")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == (
        "next.csv: 5 rows: 1 would be added, 1 would be updated, 2 unchanged, 1 refused"
    )
    assert result.stdout.splitlines()[-1] == "dry run: nothing was written"
    assert "skipped: next.csv:6:" in result.stderr
    assert snapshot(seeded) == before
    # Without --skip-invalid a dry run refuses the file, exactly as the import would.
    result = run("subscribers", "import", "next.csv", "--dry-run")
    assert result.exit_code == 1
    assert "error: next.csv:6: email 'bad@@example.org'" in result.stderr
    assert snapshot(seeded) == before


# One transaction -------------------------------------------------------------------------------


def many_rows(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        out.writelines(f"p{i}@example.net,P {i},genetics;infections,\n" for i in range(n))
    return path


def test_batches_cover_every_row_with_history(db, settings, tmp_path):
    calls = []
    result = subs.import_csv(
        db,
        settings,
        many_rows(tmp_path / "many.csv", 2345),
        batch_size=500,
        on_batch=lambda done, total: calls.append((done, total)),
    )
    assert result.added == 2345
    assert calls == [(500, 2345), (1000, 2345), (1500, 2345), (2000, 2345), (2345, 2345)]
    assert store.count(db) == 2345
    assert db.conn.execute("SELECT count(*) FROM history").fetchone()[0] == 2 * 2345
    last = store.get_row_by_email(db, "p2344@example.net")
    assert [c["field"] for c in store.history_rows(db, last.id)] == ["created", "topics"]


def test_failure_midway_writes_nothing(db, settings, tmp_path):
    store.insert(db, "p3@example.net", name="Before", topics=["genetics"])
    before = snapshot(db.location)
    seen = []

    def fail_after_first_batch(done, total):
        seen.append(store.count(db))  # inside the transaction: the first batch is written
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        subs.import_csv(
            db,
            settings,
            many_rows(tmp_path / "many.csv", 100),
            batch_size=10,
            on_batch=fail_after_first_batch,
        )
    assert seen == [10]  # 9 added + the one there before
    assert snapshot(db.location) == before


CHILD = """
import sys
from newsletter import subscribers as subs
from newsletter.config import load_settings
from newsletter.store import open_database
from newsletter.store import subscribers as store

settings = load_settings(sys.argv[1])
db = open_database(settings)

def wait_to_be_killed(done, total):
    print(done, store.count(db), flush=True)
    sys.stdin.readline()  # blocks: the parent kills us here, mid-transaction

subs.import_csv(db, settings, sys.argv[2], batch_size=100, on_batch=wait_to_be_killed)
print("finished", flush=True)
"""


def test_killed_halfway_writes_nothing(workspace, settings, seeded, tmp_path):
    before = snapshot(seeded)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    big = many_rows(tmp_path / "many.csv", 1000)
    child = subprocess.Popen(
        [sys.executable, str(script), str(workspace / "newsletter.yaml"), str(big)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert child.stdout.readline().split() == ["100", "103"]  # 100 rows written, uncommitted
    finally:
        child.kill()  # SIGKILL: no cleanup, no rollback by Python
        child.wait()
    assert child.returncode == -9
    assert snapshot(seeded) == before
    if not isinstance(seeded, str):  # a SQLite file: not damaged either
        conn = sqlite3.connect(seeded)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


def test_import_refused_carries_every_problem(db, settings, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "a@b,,,\nx@example.org,,,maybe\n")
    with pytest.raises(ImportRefused) as caught:
        subs.import_csv(db, settings, path)
    assert len(caught.value.problems) == 2
    assert store.count(db) == 0


@pytest.mark.sqlite_only
def test_a_busy_database_is_a_clear_error(settings, tmp_path):
    path = tmp_path / "busy.db"
    Database(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    csv_path = tmp_path / "one.csv"
    csv_path.write_text(HEADER + "a@example.org,,,\n")
    try:
        with Database(path, timeout=0.05) as db, pytest.raises(SubscriberError) as caught:
            subs.import_csv(db, settings, csv_path)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "the database is busy (another command is writing); nothing was imported" in str(
        caught.value
    )


# What a bulk path (COPY on PostgreSQL) could get wrong -------------------------------------------

# Names as the file holds them (CSV-quoted) and as they must come back: backslashes and the
# sequences COPY's text format gives a meaning (\N is its NULL, \. its end of data, \t a tab),
# quotes, commas, placeholders of either engine's driver, and text beyond ASCII.
AWKWARD_NAMES = {
    "back@example.org": ('"C:\\Users\\Ana"', "C:\\Users\\Ana"),
    "null@example.org": ("\\N", "\\N"),
    "end@example.org": ("\\.", "\\."),
    "tab@example.org": ("Ana\\tLopez", "Ana\\tLopez"),
    "quotes@example.org": ('"Ana ""Nana"" O\'Brien"', 'Ana "Nana" O\'Brien'),
    "comma@example.org": ('"Lopez, Ana, Jr."', "Lopez, Ana, Jr."),
    "percent@example.org": ('"100% %s ? $1 {name}"', "100% %s ? $1 {name}"),
    "accents@example.org": ("Zoë Núñez-Yılmaz", "Zoë Núñez-Yılmaz"),
    "cjk@example.org": ("陈静 🌿", "陈静 🌿"),
    "combining@example.org": ("Jose\u0301", "Jose\u0301"),
}


def test_names_copy_treats_specially_arrive_as_written(db, settings, tmp_path):
    path = tmp_path / "awkward.csv"
    lines = [f"{email},{cell},genetics,\n" for email, (cell, _) in AWKWARD_NAMES.items()]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    result = subs.import_csv(db, settings, path)
    assert (result.rows, result.added, result.refused) == (len(AWKWARD_NAMES), len(lines), 0)
    for email, (_, name) in AWKWARD_NAMES.items():
        assert store.get_row_by_email(db, email).name == name, email

    # Re-imported with each name changed: the update path and its history keep them too.
    again = tmp_path / "again.csv"
    lines = [
        f'{email},"{name.replace(chr(34), chr(34) * 2)} \\N",genetics,\n'
        for email, (_, name) in AWKWARD_NAMES.items()
    ]
    again.write_text(HEADER + "".join(lines), encoding="utf-8")
    result = subs.import_csv(db, settings, again)
    assert (result.updated, result.unchanged) == (len(AWKWARD_NAMES), 0)
    for email, (_, name) in AWKWARD_NAMES.items():
        sub = store.get_row_by_email(db, email)
        assert sub.name == name + " \\N"
        last = store.history_rows(db, sub.id)[-1]
        assert (last["field"], last["old_value"], last["new_value"]) == (
            "name",
            name,
            name + " \\N",
        )


@pytest.mark.parametrize(
    "cell, problem",
    [
        ('"Ana\tLopez"', "name 'Ana\\tLopez' contains a control character"),
        ('"Ana\nLopez"', "name 'Ana\\nLopez' contains a line break"),
        ('"Ana\r\nLopez"', "name 'Ana\\r\\nLopez' contains a line break"),
        ("Ana\x00Lopez", "name 'Ana\\x00Lopez' contains a control character"),
        ("Ana\x1bLopez", "name 'Ana\\x1bLopez' contains a control character"),
    ],
    ids=["tab", "newline", "crlf", "NUL", "escape"],
)
def test_a_character_copy_would_mangle_is_refused_by_line_and_nothing_written(
    db, settings, tmp_path, cell, problem
):
    store.insert(db, "there@example.org", name="There")
    before = snapshot(db.location)
    path = tmp_path / "ctl.csv"
    rows = "".join(f"ok{i}@example.org,Ok {i},,\n" for i in range(300))
    path.write_bytes((HEADER + rows + f"bad@example.org,{cell},,\n").encode("utf-8"))
    with pytest.raises(ImportRefused) as caught:
        subs.import_csv(db, settings, path, batch_size=100)
    assert caught.value.problems == [f"{display_path(path)}:302: {problem}"]
    assert snapshot(db.location) == before


def test_duplicates_across_pages_are_refused_and_the_first_one_kept(db, settings, tmp_path):
    path = tmp_path / "dups.csv"
    lines = []
    for i in range(1000):
        if i and i % 7 == 0:  # the address of line i - 5, in upper case, with another name
            lines.append(f"D{i - 5}@EXAMPLE.ORG,Again {i},,\n")
        else:
            lines.append(f"d{i}@example.org,First {i},,\n")
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    with pytest.raises(ImportRefused) as caught:
        subs.import_csv(db, settings, path, batch_size=100)
    assert len(caught.value.problems) == 142
    assert store.count(db) == 0

    result = subs.import_csv(db, settings, path, batch_size=100, skip_invalid=True)
    assert (result.rows, result.added, result.refused) == (1000, 858, 142)
    assert store.count(db) == 858
    assert store.get_row_by_email(db, "d2@example.org").name == "First 2"  # not "Again 7"
    assert result.problems[0].endswith(
        "email 'd2@example.org' appears again (first on line 4; case is ignored)"
    )


def test_new_subscribers_get_ids_in_file_order_each_with_its_own_line(db, settings, tmp_path):
    path = tmp_path / "order.csv"
    emails = [f"z{999 - i:03d}@example.org" for i in range(250)]  # not in alphabetical order
    path.write_text(HEADER + "".join(f"{e},N {e},,\n" for e in emails), encoding="utf-8")
    subs.import_csv(db, settings, path, batch_size=60)
    rows = db.conn.execute("SELECT email, status_reason FROM subscribers ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [
        (e, f"imported from {display_path(path)}:{line}") for line, e in enumerate(emails, start=2)
    ]


def test_a_large_reimport_updates_each_row_as_its_own_line_says(db, settings, tmp_path):
    n = 1200
    first = tmp_path / "first.csv"
    first.write_text(
        HEADER + "".join(f"r{i}@example.org,R {i},genetics,\n" for i in range(n)), encoding="utf-8"
    )
    subs.import_csv(db, settings, first, batch_size=500)
    ids = {
        f"r{i}@example.org": store.get_row_by_email(db, f"r{i}@example.org").id for i in range(n)
    }

    def row(i: int) -> str:
        name = f"Renamed {i}" if i % 3 == 0 else f"R {i}"
        topics = "infections" if i % 4 == 0 else "genetics"
        status = "unsubscribed" if i % 5 == 0 else ""
        return f"r{i}@example.org,{name},{topics},{status}\n"

    second = tmp_path / "second.csv"
    second.write_text(HEADER + "".join(row(i) for i in range(n)), encoding="utf-8")
    result = subs.import_csv(db, settings, second, batch_size=500)
    changed = {i for i in range(n) if i % 3 == 0 or i % 4 == 0 or i % 5 == 0}
    assert (result.added, result.updated, result.unchanged) == (0, len(changed), n - len(changed))
    for i in (0, 3, 4, 5, 7, 15, 20, 60, 1199):
        sub = store.get_row(db, ids[f"r{i}@example.org"])
        assert sub.name == (f"Renamed {i}" if i % 3 == 0 else f"R {i}")
        assert sub.topics == ({"infections"} if i % 4 == 0 else {"genetics"})
        if i % 5 == 0:
            assert (sub.status, sub.status_source) == ("unsubscribed", "import")
            assert sub.status_reason.endswith(f"second.csv:{i + 2}")
        else:
            assert sub.status == "subscribed"
            assert sub.status_reason.endswith(f"first.csv:{i + 2}")  # from its creation
        fields = [c["field"] for c in store.history_rows(db, sub.id)[2:]]
        expected = [f for f, hit in (("name", 3), ("topics", 4), ("status", 5)) if i % hit == 0]
        assert fields == expected
    history = db.conn.execute("SELECT count(*) FROM history").fetchone()[0]
    changes = sum((i % 3 == 0) + (i % 4 == 0) + (i % 5 == 0) for i in range(n))
    assert history == 2 * n + changes


def test_a_reimport_failing_midway_leaves_every_row_as_it_was(db, settings, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text(
        HEADER + "".join(f"r{i}@example.org,R {i},genetics,\n" for i in range(300)),
        encoding="utf-8",
    )
    subs.import_csv(db, settings, first)
    before = snapshot(db.location)
    second = tmp_path / "second.csv"
    second.write_text(
        HEADER
        + "".join(f"r{i}@example.org,New {i},infections,unsubscribed\n" for i in range(300))
        + "".join(f"n{i}@example.org,N {i},,\n" for i in range(300)),
        encoding="utf-8",
    )
    pages = []

    def fail_on_the_third_page(done, total):
        pages.append(done)
        if len(pages) == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        subs.import_csv(db, settings, second, batch_size=100, on_batch=fail_on_the_third_page)
    assert snapshot(db.location) == before
    # Nothing of it is left behind on the connection either: the same import then succeeds.
    result = subs.import_csv(db, settings, second, batch_size=100)
    assert (result.added, result.updated) == (300, 300)


def test_each_address_added_as_subscribed_gets_one_consent_row(db, settings, tmp_path):
    from newsletter.store import consents

    path = tmp_path / "list.csv"
    rows = [
        f"c{i}@example.org,C {i},genetics;infections,{'bounced' if i % 4 == 0 else ''}\n"
        for i in range(450)
    ]
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    subs.import_csv(db, settings, path, batch_size=100)
    record = list(consents.iter_all(db))
    assert [(c.email, c.source, c.topics) for c in record] == [
        (f"c{i}@example.org", f"import: {display_path(path)}", "genetics;infections")
        for i in range(450)
        if i % 4
    ]
