"""The outbox backend end to end: the example issue to the example subscribers as .eml files."""

from __future__ import annotations

import pytest

from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.support.delivery import (
    ISSUE,
    check_deliveries,
    configure,
    database,
    parse,
    text_part,
    titles_for,
    titles_in,
)

pytestmark = pytest.mark.both_engines


def outbox_messages(settings, issue=ISSUE):
    folder = settings.paths.outbox / issue
    return {p.name: parse(p.read_bytes()) for p in sorted(folder.glob("*.eml"))}


def test_example_issue_to_example_subscribers(run, workspace, settings):
    configure(workspace, batch_size=4)
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    messages = outbox_messages(settings)
    received: dict[str, list[str]] = {}
    for msg in messages.values():
        received.setdefault(msg["To"].addresses[0].addr_spec, []).append(text_part(msg))
    db = database(settings)
    check_deliveries(settings, db, received)
    for name in ("lukas.brandt@example.net", "old.address@example.com"):
        assert name not in received  # unsubscribed, bounced
    # The report's counts are what landed in the outbox.
    report = run("report", ISSUE, "--list", "sent")
    assert sorted(report.output.split()) == sorted(received)
    assert store.counts(db, ISSUE) == {"sent": len(messages)}
    assert "sent" in run("report", ISSUE).output
    # Files are written whole (renamed into place): nothing half-written is left.
    assert not list((settings.paths.outbox / ISSUE).glob("*.tmp"))
    for msg in messages.values():
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Message-ID"] and msg["Date"]


def test_outbox_warns_when_links_are_signed_with_the_development_key(run, settings):
    db = database(settings)
    insert(db, "ana@example.org", name="Ana", topics=["genetics"])

    result = run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET_KEY": None})

    assert result.exit_code == 0, result.output
    assert "NEWSLETTER_SECRET_KEY is not set" in result.stderr
    [msg] = outbox_messages(settings).values()
    assert titles_in(text_part(msg), settings) == titles_for(settings, ["genetics"])


def test_smtp_and_sendgrid_refuse_without_the_secret_key(run, settings):
    db = database(settings)
    insert(db, "ana@example.org", topics="all")
    for backend in ("smtp", "sendgrid"):
        env = {"NEWSLETTER_SECRET_KEY": None, "SENDGRID_API_KEY": "SG.x"}
        result = run("send", ISSUE, "--yes", "--backend", backend, env=env)
        assert result.exit_code == 1
        assert "NEWSLETTER_SECRET_KEY is not set" in result.stderr
    assert store.counts(db, ISSUE) == {}


def test_a_name_with_a_line_break_cannot_add_headers(run, settings):
    db = database(settings)
    insert(db, "eve@example.org", name="Eve\r\nBcc: victim@example.org", topics="all")
    assert run("send", ISSUE, "--yes").exit_code == 0
    [path] = (settings.paths.outbox / ISSUE).glob("*.eml")
    raw = path.read_bytes()
    assert b"\r\nBcc:" not in raw
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.org"]


def test_proofs_go_to_the_given_addresses_only_and_are_not_recorded(run, settings):
    db = database(settings)
    insert(db, "subscriber@example.org", topics="all")

    result = run(
        "send", ISSUE, "--proof", "editor@example.org", "--proof", "Second@Example.org",
        "--topics", "genetics",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    proofs = sorted((settings.paths.outbox / ISSUE / "proofs").glob("*.eml"))
    assert [p.name for p in proofs] == ["Second@example.org.eml", "editor@example.org.eml"]
    for path in proofs:
        msg = parse(path.read_bytes())
        assert msg["Subject"].startswith("[PROOF] ")
        assert titles_in(text_part(msg), settings) == titles_for(settings, ["genetics"])
        assert "/preferences/preview" in text_part(msg)  # links that act on no one
    assert outbox_messages(settings) == {}  # nobody on the list got it
    assert store.counts(db, ISSUE) == {} and store.get_send(db, ISSUE) is None


def test_an_unwritable_outbox_stops_the_send_with_nothing_marked_sent(run, settings):
    db = database(settings)
    insert(db, "ana@example.org", topics="all")
    settings.paths.outbox.mkdir(parents=True)
    (settings.paths.outbox / ISSUE).write_text("a file where the folder should be")

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 1
    assert "cannot write" in result.stderr
    assert store.counts(db, ISSUE) == {"pending": 1}
