"""What the list accepts as an address or a name, at every entry point (import, `add`, proofs):
one rule, so that nothing stored can break a backend later.

Addresses: an internationalised domain is stored in its ASCII (IDNA, `xn--`) form, which every
backend and SendGrid's suppression lists use; a non-ASCII local part is refused (no backend here
speaks SMTPUTF8). Names: at most 100 characters.
"""

from __future__ import annotations

import csv
import io

import pytest

from newsletter.store import subscribers as store

pytestmark = pytest.mark.both_engines

MAX_NAME = 100

HEADER = "email,name,topics,status\n"


def exported(run) -> list[dict]:
    result = run("subscribers", "export")
    assert result.exit_code == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


# Addresses -------------------------------------------------------------------------------------


def test_import_refuses_a_non_ascii_local_part_naming_the_line(workspace, run):
    (workspace / "list.csv").write_text(
        HEADER + "ana@example.org,Ana,,\nü@example.org,U,,\n", encoding="utf-8"
    )

    result = run("subscribers", "import", "list.csv")

    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: list.csv:3: email 'ü@example.org' is not a valid address: ")
    assert "before the @-sign" in first and "'ü'" in first
    assert "Traceback" not in result.output
    assert exported(run) == []  # the good row before it was not written either


def test_import_stores_an_internationalised_domain_in_its_ascii_form(workspace, run):
    (workspace / "list.csv").write_text(HEADER + "User@Bücher.Example,Ulla,,\n", encoding="utf-8")
    assert run("subscribers", "import", "list.csv").exit_code == 0

    assert [r["email"] for r in exported(run)] == ["user@xn--bcher-kva.example"]

    # The same person written either way is the same subscriber: updated, not added twice.
    (workspace / "again.csv").write_text(
        HEADER + "user@xn--BCHER-kva.example,Ulla B,,\n", encoding="utf-8"
    )
    result = run("subscribers", "import", "again.csv")
    assert result.exit_code == 0, result.stderr
    assert "0 added, 1 updated" in result.stdout
    assert [(r["email"], r["name"]) for r in exported(run)] == [
        ("user@xn--bcher-kva.example", "Ulla B")
    ]


def test_add_refuses_a_non_ascii_local_part(run, db):
    result = run("subscribers", "add", "zoë@example.org")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: email 'zoë@example.org' is not a valid address: ")
    assert "before the @-sign" in result.stderr
    assert store.count(db) == 0


@pytest.mark.parametrize("given", ["ana@bücher.example", "ana@xn--bcher-kva.example"])
def test_add_stores_the_ascii_form_of_the_domain_however_it_is_written(run, db, given):
    result = run("subscribers", "add", given)
    assert result.exit_code == 0, result.stderr
    assert "Added ana@xn--bcher-kva.example" in result.stdout
    assert [s.email for s in store.iter_subscribers(db)] == ["ana@xn--bcher-kva.example"]


def test_a_proof_to_a_non_ascii_local_part_is_refused_before_anything_is_sent(run, settings):
    result = run("send", "2026-12", "--proof", "ü@example.org")
    assert result.exit_code == 2
    assert "ü@example.org" in result.stderr and "before the @-sign" in result.stderr
    assert not settings.paths.outbox.exists()


def test_a_proof_to_an_internationalised_domain_goes_to_its_ascii_form(run, settings):
    result = run("send", "2026-12", "--proof", "editor@bücher.example")
    assert result.exit_code == 0, result.output
    proofs = settings.paths.outbox / "2026-12" / "proofs"
    assert [p.name for p in proofs.iterdir()] == ["editor@xn--bcher-kva.example.eml"]


# Names -----------------------------------------------------------------------------------------


def test_import_refuses_a_name_over_100_characters_naming_the_line(workspace, run):
    (workspace / "list.csv").write_text(
        HEADER + f"ok@example.org,{'a' * MAX_NAME},,\nlong@example.org,{'b' * 20_000},,\n",
        encoding="utf-8",
    )

    result = run("subscribers", "import", "list.csv")

    assert result.exit_code == 1
    [problem, summary] = result.stderr.splitlines()
    assert problem.startswith("error: list.csv:3: name 'bbbbbbbbbb")
    assert problem.endswith("is 20000 characters long; at most 100 are allowed")
    assert len(problem) < 200  # the name itself is not printed in full
    assert "nothing was imported" in summary
    assert exported(run) == []


def test_a_name_of_100_characters_is_fine_everywhere(workspace, run, db):
    name = "Ö" * MAX_NAME
    (workspace / "list.csv").write_text(HEADER + f"ok@example.org,{name},,\n", encoding="utf-8")
    assert run("subscribers", "import", "list.csv").exit_code == 0
    assert run("subscribers", "add", "two@example.org", "--name", name).exit_code == 0
    assert [r["name"] for r in exported(run)] == [name, name]


def test_add_refuses_a_name_over_100_characters(run, db):
    result = run("subscribers", "add", "long@example.org", "--name", "x" * (MAX_NAME + 1))
    assert result.exit_code == 1
    assert result.stderr == (
        "error: name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is 101 characters long; "
        "at most 100 are allowed\n"
    )
    assert store.count(db) == 0
