"""The signup's emails through each backend: a real SMTP server (aiosmtpd), the SendGrid-like
server with the real client (one transactional request, checked against SendGrid's official
schema), and what happens when one cannot be sent (the visitor's page is the same; the address's
daily mark is given back, so asking again works)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

from newsletter.store import subscribers as store
from tests.conftest import TEST_SECRET
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import configure, free_port, parse, schema_problems
from tests.support.signup import (
    CONFIRM_RE,
    Clock,
    confirm_token,
    mailer,
    make_app,
    sign_up,
    text_of,
)
from tests.support.smtp import Recorder

pytestmark = pytest.mark.both_engines

TYPED_NAME = "Click http://spam.example now"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def smtp(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings = configure(
        workspace,
        backend="smtp",
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5},
    )
    yield handler, settings
    controller.stop()


def test_the_confirmation_goes_through_smtp(smtp, clock, db):
    handler, settings = smtp
    app = make_app(settings, clock)
    client = app.test_client()
    assert sign_up(client, clock, "ana@example.org", name=TYPED_NAME).status_code == 200
    mailer(app).wait()
    ((recipients, data),) = handler.messages
    assert recipients == ["ana@example.org"]
    assert b"spam.example" not in data
    message = parse(data)
    assert message["To"] == "ana@example.org"
    assert message["From"] == "MS Research Monthly <newsletter@ms-research.example.org>"
    token = confirm_token(message)
    assert client.post(f"/confirm/{token}").status_code == 303
    assert store.get_row_by_email(db, "ana@example.org").status == "subscribed"


def test_already_subscribed_gets_a_working_preferences_link_by_smtp(smtp, clock, db):
    handler, settings = smtp
    ana = store.insert(db, "ana@example.org", topics={"genetics"})
    app = make_app(settings, clock)
    client = app.test_client()
    assert sign_up(client, clock, "ana@example.org", topics=["all"]).status_code == 200
    mailer(app).wait()
    ((_, data),) = handler.messages
    message = parse(data)
    assert message["Subject"] == "You are already subscribed to MS Research Monthly"
    text = text_of(message)
    assert "nothing has changed" in text and not CONFIRM_RE.search(text)
    link = next(word for word in text.split() if "/preferences/" in word)
    page = client.get(urlsplit(link).path)
    assert page.status_code == 200 and ">ana@example.org</strong>" in page.get_data(as_text=True)
    assert store.get_row(db, ana.id).topics == {"genetics"}  # the form changed nothing


def test_an_email_that_cannot_be_sent_gives_the_address_its_turn_back(
    workspace, clock, monkeypatch, db, caplog
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    port = free_port()  # nothing listens there
    settings = configure(
        workspace,
        backend="smtp",
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5},
    )
    app = make_app(settings, clock)
    client = app.test_client()
    ok = sign_up(client, clock, "ana@example.org", ip="192.0.2.1")
    mailer(app).wait()
    assert ok.status_code == 200
    assert "Check your inbox" in ok.get_data(as_text=True)  # the visitor is told nothing else
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "the signup's confirm email could not be sent" in failures[0].getMessage()
    assert "ana@example.org" not in caplog.text
    assert db.conn.execute("SELECT count(*) FROM signup_mailed").fetchone()[0] == 0

    # With the server up, asking again right away sends the email.
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sign_up(client, clock, "ana@example.org", ip="192.0.2.2")
        mailer(app).wait()
    finally:
        controller.stop()
    assert [r for r, _ in handler.messages] == [["ana@example.org"]]


def test_the_confirmation_is_one_transactional_sendgrid_request(workspace, clock, monkeypatch, db):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid() as fake:
        monkeypatch.setenv("SENDGRID_API_HOST", fake.url)
        settings = configure(
            workspace, backend="sendgrid", sendgrid={"sync_suppressions": False, "asm_group_id": 42}
        )
        app = make_app(settings, clock)
        client = app.test_client()
        assert sign_up(client, clock, "ana@example.org", name=TYPED_NAME).status_code == 200
        mailer(app).wait()
        (request,) = fake.accepted()
    body = request["payload"]
    assert schema_problems([body]) == []
    assert request["recipients"] == ["ana@example.org"]
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "ana@example.org"}]  # no name: nothing typed
    assert "substitutions" not in personalization
    assert "spam.example" not in str(body)
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["subject"] == "Please confirm your subscription to MS Research Monthly"
    assert body["categories"] == ["newsletter-signup"]
    # SendGrid must not rewrite the link through its own servers (nor watch it being opened).
    assert body["tracking_settings"]["click_tracking"] == {"enable": False, "enable_text": False}
    assert body["tracking_settings"]["open_tracking"] == {"enable": False}
    assert "asm" not in body  # a group unsubscribe must not swallow someone's confirmation
    token = CONFIRM_RE.search(body["content"][0]["value"]).group(1)
    assert client.post(f"/confirm/{token}").status_code == 303
