"""The consent record: what a confirmed signup keeps (and how much of the client's address, per
`signup.record_ip`), what an admin's import keeps ("import: FILE"), that the record is
append-only, and `newsletter subscribers consent EMAIL` / `--export -o FILE`."""

from __future__ import annotations

import csv
import hashlib
import io

import pytest

from newsletter.store import IntegrityError
from tests.conftest import TEST_SECRET
from tests.support.signup import (
    Clock,
    configure_signup,
    confirm_token,
    dump,
    emails_to,
    mailer,
    make_app,
    sign_up,
)

pytestmark = pytest.mark.both_engines

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"


@pytest.fixture
def clock():
    return Clock()


def join(workspace, clock, monkeypatch, address, *, ip="192.0.2.77", **signup_settings):
    """Sign `address` up from `ip` and confirm it an hour later (settings changed first)."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    settings = configure_signup(workspace, **signup_settings)
    app = make_app(settings, clock)
    client = app.test_client()
    response = sign_up(
        client,
        clock,
        address,
        ip=ip,
        headers={"User-Agent": BROWSER + "\x07"},
        topics=["genetics", "womens-health"],
    )
    assert response.status_code == 200
    mailer(app).wait()
    clock.advance(hours=1)
    token = confirm_token(emails_to(workspace, address.lower())[-1])
    assert client.post(f"/confirm/{token}").status_code == 303
    return settings


def consents(db) -> list[dict]:
    return [dict(r) for r in db.conn.execute("SELECT * FROM consents ORDER BY id")]


def test_a_confirmed_signup_keeps_when_how_and_to_what(workspace, clock, monkeypatch, db):
    settings = join(workspace, clock, monkeypatch, "Ana@Example.org")
    (row,) = consents(db)
    text = settings.signup.consent_text
    assert row == {
        "id": 1,
        "email": "ana@example.org",
        "source": "signup",
        "requested_at": "2026-12-01T09:00:20Z",  # the form was sent
        "confirmed_at": "2026-12-01T10:00:20Z",  # the link was confirmed
        "ip": "192.0.2.0",  # truncated, the default
        "user_agent": BROWSER,  # printable characters only
        "form_id": "subscribe-page",
        "consent_version": "2026-01",
        "consent_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "privacy_url": "https://ms-research.example.org/privacy/",
        "topics": "genetics;womens-health",
    }
    (kept,) = db.conn.execute("SELECT version, text FROM consent_texts").fetchall()
    assert tuple(kept) == ("2026-01", text)


@pytest.mark.parametrize(
    ("mode", "ip", "kept"),
    [
        ("full", "192.0.2.77", "192.0.2.77"),
        ("truncated", "192.0.2.77", "192.0.2.0"),
        ("none", "192.0.2.77", None),
        ("full", "2001:db8:abcd:12:34::1", "2001:db8:abcd:12:34::1"),
        ("truncated", "2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("truncated", "::ffff:198.51.100.9", "198.51.100.0"),
    ],
)
def test_the_client_address_is_kept_as_record_ip_says(
    workspace, clock, monkeypatch, db, mode, ip, kept
):
    join(workspace, clock, monkeypatch, "ana@example.org", ip=ip, record_ip=mode)
    assert [r["ip"] for r in consents(db)] == [kept]
    # Nothing else in the database holds the full address when it is not to be kept.
    if kept != ip:
        assert ip not in dump(db)


def test_a_new_consent_sentence_is_a_new_version_and_both_are_kept(
    workspace, clock, monkeypatch, db
):
    join(workspace, clock, monkeypatch, "ana@example.org")
    join(
        workspace,
        clock,
        monkeypatch,
        "bob@example.org",
        consent_text="Email me the newsletter; I can leave at any time.",
        consent_version="2027-01",
    )
    rows = consents(db)
    assert [r["consent_version"] for r in rows] == ["2026-01", "2027-01"]
    assert rows[0]["consent_sha256"] != rows[1]["consent_sha256"]
    assert db.conn.execute("SELECT count(*) FROM consent_texts").fetchone()[0] == 2


def test_the_record_is_append_only(workspace, clock, monkeypatch, db):
    join(workspace, clock, monkeypatch, "ana@example.org")
    for statement in ("UPDATE consents SET ip = NULL", "DELETE FROM consents"):
        with pytest.raises(IntegrityError, match="append-only"), db.transaction():
            db.conn.execute(statement)
    assert len(consents(db)) == 1


# --- An admin's import ------------------------------------------------------------------------------


def test_an_import_records_its_own_consent_source(run, workspace, db):
    assert run("subscribers", "import", "subscribers.example.csv", "--dry-run").exit_code == 0
    assert consents(db) == []
    result = run("subscribers", "import", "subscribers.example.csv")
    assert result.exit_code == 0, result.output
    rows = consents(db)
    subscribed = db.conn.execute(
        "SELECT email, topics FROM subscribers WHERE status = 'subscribed' ORDER BY id"
    ).fetchall()
    assert [(r["email"], r["topics"]) for r in rows] == [tuple(s) for s in subscribed]
    assert {r["source"] for r in rows} == {"import: subscribers.example.csv"}
    assert all(r["requested_at"] is None and r["ip"] is None for r in rows)
    assert "lukas.brandt@example.net" not in {r["email"] for r in rows}  # imported unsubscribed

    # Importing again adds nobody: no new consent. Resubscribing a leaver records it.
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    assert len(consents(db)) == len(rows)
    (workspace / "back.csv").write_text("email,status\nlukas.brandt@example.net,subscribed\n")
    assert run("subscribers", "import", "back.csv", "--resubscribe").exit_code == 0
    last = consents(db)[-1]
    assert (last["email"], last["source"], last["topics"]) == (
        "lukas.brandt@example.net",
        "import: back.csv",
        "diagnosis-imaging",
    )


# --- The commands ----------------------------------------------------------------------------------


def test_consent_prints_the_record_of_one_address(run, workspace, clock, monkeypatch, db):
    settings = join(workspace, clock, monkeypatch, "ana@example.org")
    result = run("subscribers", "consent", "ANA@example.org")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    for expected in (
        "ana@example.org: signup",
        "form sent │ 2026-12-01T09:00:20Z",
        "confirmed │ 2026-12-01T10:00:20Z",
        "IP address │ 192.0.2.0",
        "form │ subscribe-page",
        "consent version │ 2026-01",
        "privacy notice │ https://ms-research.example.org/privacy/",
        "topics │ genetics, womens-health",
    ):
        assert expected in out, expected
    sha = hashlib.sha256(settings.signup.consent_text.encode()).hexdigest()
    assert sha[:40] in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    assert "Yes, please email me MS Research Monthly" in out


def test_consent_of_an_unknown_address_is_an_error(run):
    result = run("subscribers", "consent", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr == "error: no consent is recorded for 'nobody@example.org'\n"


@pytest.mark.parametrize(
    "args",
    [
        ("subscribers", "consent"),
        ("subscribers", "consent", "a@example.org", "--export"),
        ("subscribers", "consent", "a@example.org", "-o", "x.csv"),
    ],
)
def test_consent_usage_errors(run, args):
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_consent_export_writes_all_of_it_as_csv(run, workspace, clock, monkeypatch, db):
    join(workspace, clock, monkeypatch, "ana@example.org")
    (workspace / "one.csv").write_text("email,name,topics\nbo@example.org,Bo,infections\n")
    assert run("subscribers", "import", "one.csv").exit_code == 0

    result = run("subscribers", "consent", "--export", "-o", "consent.csv")
    assert result.exit_code == 0, result.output
    assert result.stderr == "Exported 2 consent records to consent.csv\n"
    assert sorted(p.name for p in workspace.iterdir() if "consent" in p.name) == ["consent.csv"]
    with open(workspace / "consent.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "email",
        "source",
        "requested_at",
        "confirmed_at",
        "ip",
        "user_agent",
        "form_id",
        "consent_version",
        "consent_sha256",
        "privacy_url",
        "topics",
        "consent_text",
    ]
    ana, bo = rows
    assert (ana["email"], ana["source"], ana["ip"], ana["topics"]) == (
        "ana@example.org",
        "signup",
        "192.0.2.0",
        "genetics;womens-health",
    )
    assert hashlib.sha256(ana["consent_text"].encode()).hexdigest() == ana["consent_sha256"]
    assert (bo["email"], bo["source"], bo["topics"], bo["ip"], bo["consent_text"]) == (
        "bo@example.org",
        "import: one.csv",
        "infections",
        "",
        "",
    )
    # The same CSV on standard output.
    printed = run("subscribers", "consent", "--export")
    assert printed.exit_code == 0
    assert list(csv.DictReader(io.StringIO(printed.stdout))) == rows


def test_consent_export_to_a_folder_that_does_not_exist_writes_nothing(run, workspace):
    result = run("subscribers", "consent", "--export", "-o", "missing/consent.csv")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: missing/consent.csv: cannot write")
    assert not (workspace / "missing").exists()
