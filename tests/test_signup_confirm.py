"""Confirming a signup (`GET/POST /confirm/<token>`): the GET shows one button and changes
nothing, the POST adds or resubscribes the subscriber as `status_rules` allows and lands on
their preference page; used, expired, forged and cut links get a clear page; the welcome email;
the purge of expired signups (on start, while serving, and by the CLI)."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlsplit

import pytest

from newsletter.signup.pending import purge_pending
from newsletter.store import subscribers as store
from tests.conftest import TEST_SECRET
from tests.support.signup import (
    START,
    Clock,
    configure_signup,
    confirm_token,
    dump,
    emails_to,
    mailer,
    make_app,
    sign_up,
    signup_emails,
    text_of,
)
from tests.support.web import send_outbox

pytestmark = pytest.mark.both_engines


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def signup_app(settings, clock, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    app = make_app(settings, clock)
    yield app
    mailer(app).wait()


@pytest.fixture
def client(signup_app):
    return signup_app.test_client()


def signed_up(client, clock, signup_app, workspace, address, **fields) -> str:
    """Sign `address` up on the form; the token of the link in the email that came."""
    assert (
        sign_up(client, clock, address, ip=f"192.0.2.{len(address)}", **fields).status_code == 200
    )
    mailer(signup_app).wait()
    return confirm_token(emails_to(workspace, address)[-1])


def count(db, table: str) -> int:
    return db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- The link and its button -------------------------------------------------------------------------


def test_opening_the_link_shows_one_button_and_changes_nothing(
    client, clock, signup_app, db, workspace
):
    token = signed_up(
        client, clock, signup_app, workspace, "ana@example.org", topics=["genetics", "infections"]
    )
    before = dump(db)
    response = client.get(f"/confirm/{token}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert page.count("<button") == 1 and "Confirm my subscription</button>" in page
    assert f'<form method="post" action="/confirm/{token}">' in page
    assert ">ana@example.org</strong>" in page
    assert re.findall(r"<li>([^<]+)</li>", page) == ["Genetics", "Infections and vaccines"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"  # the token stays here
    assert dump(db) == before


def test_confirming_adds_the_subscriber_with_their_topics_and_lands_on_their_preferences(
    client, clock, signup_app, db, workspace
):
    token = signed_up(
        client,
        clock,
        signup_app,
        workspace,
        "ana@example.org",
        name="Ana Lima",
        topics=["genetics", "infections"],
    )
    response = client.post(f"/confirm/{token}")
    assert response.status_code == 303
    target = urlsplit(response.headers["Location"])
    assert target.path.startswith("/preferences/") and target.query == "confirmed=1"

    ana = store.get_row_by_email(db, "ana@example.org")
    assert (ana.name, ana.topics, ana.status) == (
        "Ana Lima",
        {"genetics", "infections"},
        "subscribed",
    )
    assert (ana.status_source, ana.status_reason) == (
        "signup",
        "confirmed the link in the signup email",
    )
    assert [(h["field"], h["new_value"], h["source"]) for h in store.history_rows(db, ana.id)] == [
        ("created", "subscribed", "signup"),
        ("topics", "genetics;infections", "signup"),
    ]
    landed = client.get(response.headers["Location"])
    assert landed.status_code == 200
    page = landed.get_data(as_text=True)
    assert 'id="confirmed"' in page and "You are subscribed." in page
    assert ">ana@example.org</strong>" in page
    # Their preference page, whose links act on them (not on anyone else).
    assert 'id="topic-genetics" name="topics" value="genetics" checked' in page
    assert 'value="womens-health" aria' in page


def test_a_link_works_once(client, clock, signup_app, db, workspace):
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    assert client.post(f"/confirm/{token}").status_code == 303
    before = dump(db)
    for method in ("GET", "POST"):
        response = client.open(f"/confirm/{token}", method=method)
        assert response.status_code == 410
        page = response.get_data(as_text=True)
        assert "This link has been used" in page and "Manage preferences" in page
    assert dump(db) == before
    assert count(db, "consents") == 1


def test_an_expired_link_says_so_and_offers_to_sign_up_again(
    client, clock, signup_app, db, workspace
):
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    clock.advance(hours=47, minutes=59)
    assert client.get(f"/confirm/{token}").status_code == 200  # still within its 48 hours
    clock.advance(minutes=2)
    before = dump(db)
    for method in ("GET", "POST"):
        response = client.open(f"/confirm/{token}", method=method)
        assert response.status_code == 410
        page = response.get_data(as_text=True)
        assert "This link has expired" in page
        assert '<a class="button" href="/subscribe">Sign up again</a>' in page
    assert store.get_row_by_email(db, "ana@example.org") is None
    # The POST purged it (nothing of an unconfirmed signup stays past its link); the dump
    # before the POST still had it.
    assert "ana@example.org" in before and count(db, "signups") == 0
    assert client.get(f"/confirm/{token}").status_code == 400


def bad_tokens(token: str) -> dict[str, str]:
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return {
        "forged": "x" * 43,
        "truncated": token[:-5],
        "altered": flipped,
        "too long": token + "A",
        "not the token's alphabet": token[:-1] + "é",
        "the token's hash": "0" * 64,
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_and_cut_links_change_nothing(method, client, clock, signup_app, db, workspace):
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    before = dump(db)
    for name, bad in bad_tokens(token).items():
        response = client.open(f"/confirm/{bad}", method=method)
        assert response.status_code == 400, name
        page = response.get_data(as_text=True)
        assert "This link does not work" in page and 'href="/subscribe"' in page, name
    assert dump(db) == before
    assert client.get(f"/confirm/{token}").status_code == 200  # the real one still works


def test_a_link_confirms_only_its_own_address(client, clock, signup_app, db, workspace):
    ana = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    signed_up(client, clock, signup_app, workspace, "bob@example.org")
    # Whatever else the POST says, the token names the signup.
    response = client.post(f"/confirm/{ana}", data={"email": "bob@example.org", "topics": "all"})
    assert response.status_code == 303
    assert store.get_row_by_email(db, "ana@example.org").topics == {"genetics"}
    assert store.get_row_by_email(db, "bob@example.org") is None
    pending = db.conn.execute("SELECT email, confirmed_at FROM signups ORDER BY email")
    assert [(r[0], r[1] is None) for r in pending] == [
        ("ana@example.org", False),
        ("bob@example.org", True),
    ]


# --- Someone the list knows -----------------------------------------------------------------------


def test_someone_who_unsubscribed_comes_back_with_the_topics_they_chose(
    client, clock, signup_app, db, workspace
):
    old = store.insert(db, "ana@example.org", name="Ana", topics="all", status="unsubscribed")
    token = signed_up(
        client, clock, signup_app, workspace, "ana@example.org", name="Ana L", topics=["genetics"]
    )
    assert client.post(f"/confirm/{token}").status_code == 303
    ana = store.get_row(db, old.id)
    assert (ana.status, ana.topics, ana.name) == ("subscribed", {"genetics"}, "Ana L")
    changes = [
        (h["field"], h["old_value"], h["new_value"], h["source"])
        for h in store.history_rows(db, ana.id)
    ]
    assert changes[2:] == [
        ("status", "unsubscribed", "subscribed", "signup"),
        ("topics", "all", "genetics", "signup"),
        ("name", "Ana", "Ana L", "signup"),
    ]


def test_an_address_that_bounced_meanwhile_is_refused_and_nothing_changes(
    client, clock, signup_app, db, workspace
):
    old = store.insert(db, "ana@example.org", status="unsubscribed")
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    store.write_status(db, old.id, "bounced", "sendgrid", "SendGrid bounce: 550 no such user")
    before = dump(db)
    response = client.post(f"/confirm/{token}")
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "We cannot start the newsletter from here" in page
    assert "Our emails to this address bounced" in page
    assert "editors@ms-research.example.org" in page
    assert dump(db) == before  # the link is not used up either
    assert client.get(f"/confirm/{token}").status_code == 200


def test_someone_added_meanwhile_gets_the_topics_they_confirmed(
    client, clock, signup_app, db, workspace
):
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org", topics=["all"])
    added = store.insert(db, "ana@example.org", topics={"genetics"})
    assert client.post(f"/confirm/{token}").status_code == 303
    ana = store.get_row(db, added.id)
    assert (ana.status, ana.topics) == ("subscribed", "all")
    assert [h["field"] for h in store.history_rows(db, ana.id)][2:] == [
        "topics"
    ]  # no status change


# --- The welcome email ----------------------------------------------------------------------------


def test_the_welcome_email_lists_the_latest_issue_on_their_topics(
    run, workspace, clock, monkeypatch, db
):
    store.insert(db, "early@example.org", topics="all")
    send_outbox(run, workspace, "2026-12")  # so there is a latest issue
    settings = configure_signup(workspace, welcome_email=True)
    app = make_app(settings, clock)
    client = app.test_client()
    assert sign_up(client, clock, "ana@example.org", topics=["womens-health"]).status_code == 200
    mailer(app).wait()
    (confirmation,) = emails_to(workspace, "ana@example.org")
    assert client.post(f"/confirm/{confirm_token(confirmation)}").status_code == 303
    mailer(app).wait()
    welcome = emails_to(workspace, "ana@example.org")[-1]
    assert welcome["Subject"] == "Welcome to MS Research Monthly"
    text = text_of(welcome)
    assert "on these topics: Women's health." in text
    assert "The latest issue on your topics:" in text
    assert "Pregnancy" in text  # the issue's women's-health summary
    assert "Gut bacteria" not in text  # a summary on another topic
    assert "https://news.ms-research.example.org/archive/2026-12/" in text
    ana = store.get_row_by_email(db, "ana@example.org")
    unsubscribe = re.search(r"Unsubscribe: (\S+)", text).group(1)
    assert welcome["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert client.get(urlsplit(unsubscribe).path).status_code == 200
    assert f"/preferences/{ana.id}." in text


def test_no_welcome_email_unless_the_settings_ask(client, clock, signup_app, db, workspace):
    token = signed_up(client, clock, signup_app, workspace, "ana@example.org")
    client.post(f"/confirm/{token}")
    mailer(signup_app).wait()
    assert len(emails_to(workspace, "ana@example.org")) == 1


# --- Purge ------------------------------------------------------------------------------------------


def test_purge_deletes_what_has_run_out(client, clock, signup_app, db, workspace):
    used = signed_up(client, clock, signup_app, workspace, "used@example.org")
    client.post(f"/confirm/{used}")
    signed_up(client, clock, signup_app, workspace, "waiting@example.org")
    clock.advance(hours=30)
    signed_up(client, clock, signup_app, workspace, "recent@example.org")
    # That signup purged, as it went, the first two's one-a-day marks (24 h) and counts (1 h).
    assert count(db, "signups") == 3
    assert count(db, "signup_mailed") == 1 and count(db, "signup_attempts") == 1

    purged = purge_pending(db, clock() + dt.timedelta(hours=25))  # 55 h after the first two
    assert (purged.signups, purged.mailed, purged.attempts) == (2, 1, 1)
    emails = [r[0] for r in db.conn.execute("SELECT email FROM signups")]
    assert emails == ["recent@example.org"]
    assert count(db, "consents") == 1  # the consent record is never purged


def test_serve_purges_on_start_and_while_serving(settings, clock, monkeypatch, db, workspace):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    first = make_app(settings, clock)
    client = first.test_client()
    sign_up(client, clock, "a@example.org", ip="192.0.2.1")
    clock.advance(hours=49)
    assert count(db, "signups") == 1
    make_app(settings, clock)  # `serve` starting again
    assert count(db, "signups") == 0

    sign_up(client, clock, "b@example.org", ip="192.0.2.2")
    clock.advance(hours=49)
    # The running app purges as it serves (at most every 10 minutes), with no restart.
    sign_up(client, clock, "c@example.org", ip="192.0.2.3")
    assert [r[0] for r in db.conn.execute("SELECT email FROM signups")] == ["c@example.org"]
    mailer(first).wait()


def test_purge_pending_command(run, workspace, db):
    from newsletter.config import load_settings
    from newsletter.signup.forms import SignupEntry, Stamp
    from newsletter.signup.pending import Visitor, request_signup

    settings = load_settings(workspace / "newsletter.yaml")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    for n, when in enumerate((long_ago, dt.datetime.now(dt.UTC))):
        request_signup(
            db,
            settings,
            SignupEntry(f"p{n}@example.org", "", "all"),
            Stamp("subscribe-page", START),
            Visitor(None, None),
            TEST_SECRET,
            when,
        )
    result = run("subscribers", "purge-pending")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Deleted 1 expired signups, 1 addresses' daily email marks and 1 old signup counts\n"
    )
    assert [r[0] for r in db.conn.execute("SELECT email FROM signups")] == ["p1@example.org"]
    assert signup_emails(workspace) == []  # the library call sends nothing by itself
