"""`newsletter send` and `newsletter report` as the editor uses them: the dry run, confirmation,
checks first, scheduling rules, proofs, and every kind of bad input."""

from __future__ import annotations

import datetime as dt

import pytest

from newsletter.cli import sending
from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.support.delivery import ISSUE, add_people, database

pytestmark = pytest.mark.both_engines


@pytest.fixture
def db(settings):
    db = database(settings)
    add_people(db)
    yield db
    db.close()


def nothing_written(db, settings) -> bool:
    outbox = settings.paths.outbox / ISSUE
    return (
        store.counts(db, ISSUE) == {} and store.get_send(db, ISSUE) is None and not outbox.exists()
    )


def test_dry_run_prints_the_plan_and_writes_nothing(run, settings, db):
    result = run("send", ISSUE, "--dry-run", "--backend", "sendgrid")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "recipients: 7 in 5 segments" in out
    assert "requests needed: 5" in out
    assert "skipped (no matching topics): 1" in out
    assert "suppressed (not subscribed): 2 (bounced 1, unsubscribed 1)" in out
    assert "Pregnancy and breastfeeding outcomes on MS" in out  # a segment's summaries
    assert "nothing was sent or written" in out
    assert nothing_written(db, settings)


def test_a_real_send_without_yes_and_without_a_terminal_refuses(run, settings, db):
    result = run("send", ISSUE)
    assert result.exit_code == 1
    assert "refusing to send without confirmation" in result.stderr and "--yes" in result.stderr
    assert nothing_written(db, settings)


def test_confirmation_shows_recipients_and_backend(run, settings, db, monkeypatch):
    monkeypatch.setattr(sending, "stdin_is_interactive", lambda: True)

    declined = run("send", ISSUE, input="n\n")
    assert declined.exit_code == 1
    assert "Send issue 2026-12 to 7 recipients (5 segments, 5 requests) with outbox?" in (
        declined.stderr
    )
    assert nothing_written(db, settings)

    accepted = run("send", ISSUE, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert store.counts(db, ISSUE) == {"sent": 7, "skipped": 1}
    assert "this run: sent 7" in accepted.stdout


def test_a_failing_check_blocks_the_send(run, settings, db):
    path = settings.paths.issues / f"{ISSUE}.yaml"
    path.write_text(path.read_text().replace("- trem2-microglia-repair", "- missing-summary"))
    for args in (["--yes"], ["--dry-run"], ["--proof", "a@example.org"]):
        result = run("send", ISSUE, *args)
        assert result.exit_code == 1
        assert "no summary named 'missing-summary'" in result.stderr
    assert nothing_written(db, settings)


def test_an_unknown_issue_is_refused(run, settings, db):
    result = run("send", "2099-01", "--yes")
    assert result.exit_code == 1
    assert "issue not found" in result.stderr
    result = run("report", "2099-01")
    assert result.exit_code == 1 and "issue not found" in result.stderr


@pytest.mark.parametrize(
    "when, message",
    [
        ("2001-01-01T09:00Z", "is in the past"),
        (None, "more than 72 hours ahead"),
        ("2026-12-01 09:00", "give a time zone"),
        ("next tuesday", "not an ISO date and time"),
    ],
)
def test_at_must_be_a_time_within_the_next_72_hours(run, settings, db, when, message):
    if when is None:
        when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=73)).strftime("%Y-%m-%dT%H:%MZ")
    result = run("send", ISSUE, "--backend", "sendgrid", "--at", when, "--yes",
                 env={"SENDGRID_API_KEY": "SG.x"})  # fmt: skip
    assert result.exit_code == 1
    assert message in result.stderr
    assert nothing_written(db, settings)


def test_at_needs_sendgrid(run, settings, db):
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%MZ")
    result = run("send", ISSUE, "--at", when, "--yes")
    assert result.exit_code == 1
    assert "--at needs the sendgrid backend" in result.stderr
    assert nothing_written(db, settings)


def test_sandbox_needs_sendgrid(run, settings, db):
    result = run("send", ISSUE, "--sandbox", "--yes")
    assert result.exit_code == 1 and "--sandbox is a SendGrid feature" in result.stderr


@pytest.mark.parametrize("address", ["not-an-email", "a@b", "two@@example.org", "x y@example.org"])
def test_a_proof_address_must_be_an_email_address(run, settings, db, address):
    result = run("send", ISSUE, "--proof", address)
    assert result.exit_code == 2
    assert "is not an email address" in result.stderr
    assert nothing_written(db, settings)


def test_proof_options_that_make_no_sense_are_usage_errors(run, settings, db):
    assert run("send", ISSUE, "--topics", "genetics", "--yes").exit_code == 2
    assert run("send", ISSUE, "--proof", "a@example.org", "--retry-unknown").exit_code == 2
    assert run("send", ISSUE, "--proof", "a@example.org", "--dry-run").exit_code == 2
    result = run("send", ISSUE, "--proof", "a@example.org", "--topics", "no-such-topic")
    assert result.exit_code == 2 and "unknown topic" in result.stderr


def test_report_answers_who_got_it_who_did_not_and_why(run, settings, db):
    assert "has not been sent" in run("report", ISSUE).stdout
    insert(db, "eve@example.org", name="Eve", topics="all")
    assert run("send", ISSUE, "--yes").exit_code == 0

    report = run("report", ISSUE)
    assert report.exit_code == 0
    assert "issue 2026-12: sent (outbox)" in report.stdout
    assert "no matching topics: 1" in report.stdout
    assert "not on the list (no email planned): bounced 1, unsubscribed 1" in report.stdout
    sent = run("report", ISSUE, "--list", "sent").stdout.split()
    assert len(sent) == 8 and "eve@example.org" in sent
    skipped = run("report", ISSUE, "--list", "skipped").stdout
    assert skipped == "retired@example.org\tno matching topics\n"
    assert run("report", ISSUE, "--list", "unknown").stdout == ""
    assert run("report", ISSUE, "--list", "nonsense").exit_code == 2
    # The same issue again: refused, it went to everyone.
    again = run("send", ISSUE, "--yes")
    assert again.exit_code == 1 and "was sent in full" in again.stderr


def test_an_issue_with_ledger_rows_can_no_longer_be_recomposed(run, settings, db):
    assert run("send", ISSUE, "--yes").exit_code == 0
    result = run("compose", "--id", ISSUE, "--date", "2026-12-01", "--force")
    assert result.exit_code == 1
    assert "cannot be recomposed" in result.stderr


def test_report_shows_what_the_webhooks_said(run, settings, db):
    assert run("send", ISSUE, "--yes").exit_code == 0
    db.conn.execute(
        "UPDATE ledger SET delivery = CASE WHEN subscriber_id = 1 THEN 'bounced' "
        "ELSE 'delivered' END WHERE issue_id = ? AND state = 'sent'",
        (ISSUE,),
    )
    report = run("report", ISSUE)
    assert "after sending (webhooks): bounced 1, delivered 6" in report.stdout
    assert run("report", ISSUE, "--list", "bounced").stdout == "all1@example.org\n"
    assert len(run("report", ISSUE, "--list", "delivered").stdout.split()) == 6
