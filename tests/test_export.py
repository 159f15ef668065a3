"""Export: the import's CSV format back, losslessly (export → import → export is byte-identical)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from newsletter import subscribers as subs
from newsletter.store import Database
from newsletter.store import subscribers as store
from tests.support.postgres import workspace_database

pytestmark = pytest.mark.both_engines


def test_export_format(tmp_path):
    with Database(tmp_path / "a.db") as db:
        store.insert(db, "Zed@Example.org", name="Zed", topics=["infections", "genetics"])
        store.insert(db, "ana@example.org", name='Lopez, Ana "Ani"', topics="all")
        gone = store.insert(db, "gone@example.org", name="José", topics=["genetics"])
        store.write_status(db, gone.id, "unsubscribed", "web")
        out = io.StringIO(newline="")
        assert subs.export_csv(db, out) == 3
    # Rows by id (the order they were added); topics sorted; every status; '\n' line ends.
    assert out.getvalue() == (
        "email,name,topics,status\n"
        "zed@example.org,Zed,genetics;infections,subscribed\n"
        'ana@example.org,"Lopez, Ana ""Ani""",all,subscribed\n'
        "gone@example.org,José,genetics,unsubscribed\n"
    )


def test_export_of_an_empty_list_is_the_header(tmp_path):
    with Database(tmp_path / "a.db") as db:
        out = io.StringIO(newline="")
        assert subs.export_csv(db, out) == 0
    assert out.getvalue() == "email,name,topics,status\n"


def test_round_trip_is_byte_identical(workspace, run, tmp_path, another_database):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    # Change some state the way an admin would, so the round trip carries more than the file.
    assert run("subscribers", "unsubscribe", "maria.keller@example.org").exit_code == 0
    assert (
        run("subscribers", "set-topics", "chen.wei@example.com", "genetics,infections").exit_code
        == 0
    )
    first = run("subscribers", "export", "-o", "first.csv")
    assert first.exit_code == 0, first.stderr
    assert first.stderr == "Exported 25 subscribers to first.csv\n"
    exported = (workspace / "first.csv").read_bytes()
    assert not exported.startswith(b"\xef\xbb\xbf")  # UTF-8 without a BOM
    assert exported.decode("utf-8").count("\n") == 26
    assert b"\r" not in exported
    assert b"maria.keller@example.org,Maria Keller,all,unsubscribed\n" in exported

    # Into a fresh database (another settings file pointing elsewhere), then out again.
    settings_text = (workspace / "newsletter.yaml").read_text(encoding="utf-8")
    fresh = workspace / "fresh.yaml"
    fresh.write_text(settings_text.replace("database: newsletter.db", "database: fresh.db"))
    imported = run(
        "--config", "fresh.yaml", "subscribers", "import", "first.csv", env=another_database
    )
    assert imported.exit_code == 0, imported.stderr
    assert "25 added" in imported.stdout
    second = run("--config", "fresh.yaml", "subscribers", "export", env=another_database)
    assert second.exit_code == 0
    assert second.stdout_bytes == exported
    assert (workspace / "fresh.db").exists() == (not another_database)


def test_unsubscribes_survive_the_round_trip(tmp_path, settings):
    with Database(tmp_path / "a.db") as db:
        for status in ("unsubscribed", "bounced", "complained", "invalid"):
            sub = store.insert(db, f"{status}@example.org")
            store.write_status(db, sub.id, status, "sendgrid")
        subs.export_csv_file(db, tmp_path / "out.csv")
    with Database(tmp_path / "b.db") as db:
        subs.import_csv(db, settings, tmp_path / "out.csv")
        assert store.count_by_status(db) == {
            "unsubscribed": 1,
            "bounced": 1,
            "complained": 1,
            "invalid": 1,
        }


def test_export_to_a_file_is_atomic_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old contents\n")
    with Database(tmp_path / "a.db") as db:
        store.insert(db, "a@example.org")
        assert subs.export_csv_file(db, target) == 1
    assert target.read_text() == "email,name,topics,status\na@example.org,,all,subscribed\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == ["out.csv"]


def test_export_into_a_missing_folder_is_a_clear_error(run):
    result = run("subscribers", "export", "-o", "no/such/folder/out.csv")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no/such/folder/out.csv: cannot write:")


def test_export_warns_about_topics_the_settings_no_longer_name(workspace, run):
    with Database(workspace_database(workspace)) as db:
        store.insert(db, "old@example.org", topics=["retired-topic", "genetics"])
    result = run("subscribers", "export")
    assert result.exit_code == 0
    assert "old@example.org,,genetics;retired-topic,subscribed" in result.stdout
    assert "warning: 1 subscribers hold topics the settings no longer name (retired-topic)" in (
        result.stderr
    )


def test_export_to_stdout_is_utf8(workspace, run):
    with Database(workspace_database(workspace)) as db:
        store.insert(db, "chen@example.com", name="陈伟")
    result = run("subscribers", "export")
    assert result.exit_code == 0
    assert (
        result.stdout_bytes
        == "email,name,topics,status\nchen@example.com,陈伟,all,subscribed\n".encode()
    )


def test_exported_example_matches_the_example(workspace, run):
    """The example file, once imported, exports as the same subscribers (normalised)."""
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    out = run("subscribers", "export").stdout
    example = Path(workspace / "subscribers.example.csv").read_text(encoding="utf-8")
    assert len(out.splitlines()) == len(example.splitlines())
    assert "ingrid.solberg@example.net,Ingrid Solberg,all,subscribed" in out


FORMULA_LIKE = [
    # (email, name) as stored → (email, name) as the export writes them
    (("sum@example.org", "=SUM(A1:A9)"), ("sum@example.org", "'=SUM(A1:A9)")),
    (("plus@example.org", "+1 555 0100"), ("plus@example.org", "'+1 555 0100")),
    (("minus@example.org", "-2+3"), ("minus@example.org", "'-2+3")),
    (("at@example.org", "@home"), ("at@example.org", "'@home")),
    (("=cmd|'/ccalc'!a0@example.org", "Dee"), ("'=cmd|'/ccalc'!a0@example.org", "Dee")),
    (("quoted@example.org", "'=already quoted"), ("quoted@example.org", "''=already quoted")),
    (("hart@example.org", "'t Hart"), ("hart@example.org", "'t Hart")),
    (("plain@example.org", "Ana = Ani"), ("plain@example.org", "Ana = Ani")),
]


def add_formula_like_names(db_path):
    with Database(db_path) as db:
        for (email, name), _ in FORMULA_LIKE:
            store.insert(db, email, name=name, topics="all")


def test_names_that_look_like_formulas_are_exported_as_text(workspace, run):
    add_formula_like_names(workspace_database(workspace))
    exported = run("subscribers", "export")
    assert exported.exit_code == 0, exported.stderr
    listed = run("subscribers", "list", "--csv")
    assert listed.stdout == exported.stdout
    lines = exported.stdout.splitlines()[1:]
    expected = [f"{email},{name},all,subscribed" for _, (email, name) in FORMULA_LIKE]
    assert lines == expected
    for line in lines:  # no cell a spreadsheet would run
        assert not any(cell[:1] in "=+-@\t\r" for cell in line.split(","))


def test_formula_escaping_is_undone_by_the_import_and_the_round_trip_is_byte_identical(
    workspace, run, another_database
):
    add_formula_like_names(workspace_database(workspace))
    first = run("subscribers", "export", "-o", "first.csv")
    assert first.exit_code == 0, first.stderr
    settings_text = (workspace / "newsletter.yaml").read_text(encoding="utf-8")
    fresh = workspace / "fresh.yaml"
    fresh.write_text(settings_text.replace("database: newsletter.db", "database: fresh.db"))
    imported = run(
        "--config", "fresh.yaml", "subscribers", "import", "first.csv", env=another_database
    )
    assert imported.exit_code == 0, imported.stderr
    with Database(another_database.get("NEWSLETTER_DATABASE_URL") or workspace / "fresh.db") as db:
        stored = [(s.email, s.name) for s in store.iter_subscribers(db, status=None)]
    assert stored == [original for original, _ in FORMULA_LIKE]
    second = run("--config", "fresh.yaml", "subscribers", "export", env=another_database)
    assert second.stdout_bytes == (workspace / "first.csv").read_bytes()


def test_every_formula_start_owasp_lists_is_escaped_and_unescaped_exactly():
    for start in "=+-@\t\r":
        for text in (f"{start}x", f"'{start}x", f"''{start}x"):
            assert subs.escape_cell(text) == "'" + text
            assert subs.unescape_cell(subs.escape_cell(text)) == text
    for text in ("", "Ana", "'t Hart", "'", "x=1", " =1"):
        assert subs.escape_cell(text) == text
        assert subs.unescape_cell(text) == text
