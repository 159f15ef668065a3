"""Unsubscribe: one-click POST (RFC 8058), a GET that changes nothing, and the page afterwards."""

from __future__ import annotations

import re
import urllib.request

import pytest

from newsletter.store import subscribers as store
from newsletter.tokens import LinkSigner
from tests.conftest import TEST_SECRET, serving

pytestmark = pytest.mark.both_engines

SIGNER = LinkSigner(TEST_SECRET)
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def server(app):
    with serving(app) as base:
        yield base


def url(sub, purpose="unsubscribe"):
    return f"/{purpose}/{SIGNER.sign(sub.id, purpose)}"


def test_get_shows_one_button_and_changes_nothing(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    before = store.history_rows(db, sub.id)
    response = client.get(url(sub))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "reader@example.com" in html
    assert html.count("<button") == 1
    form = re.search(
        r'<form method="post" action="([^"]+)">.*?<button[^>]*>Unsubscribe</button>', html, re.S
    )
    assert form and form.group(1) == url(sub)
    assert store.get_row(db, sub.id).status == "subscribed"
    assert store.history_rows(db, sub.id) == before


def test_one_click_post_without_cookies_unsubscribes(client, db):
    sub = store.insert(db, "reader@example.com")
    response = client.post(
        url(sub), data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    now = store.get_row(db, sub.id)
    assert now.status == "unsubscribed"
    assert now.status_source == "web" and now.status_reason == "one-click unsubscribe"
    change = store.history_rows(db, sub.id)[-1]
    assert (change["field"], change["old_value"], change["new_value"], change["source"]) == (
        "status",
        "subscribed",
        "unsubscribed",
        "web",
    )

    # Mail providers retry: a second POST answers 200 and records nothing more.
    count = len(store.history_rows(db, sub.id))
    assert client.post(url(sub), data=ONE_CLICK).status_code == 200
    assert len(store.history_rows(db, sub.id)) == count


def test_one_click_over_real_http_as_a_mail_provider_sends_it(server, db):
    sub = store.insert(db, "reader@example.com")
    # Multipart, as RFC 8058 allows; no cookie jar, no Origin, no Referer.
    boundary = "----provider"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        server + url(sub),
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers.get("Set-Cookie") is None
    assert store.get_row(db, sub.id).status == "unsubscribed"
    assert store.get_row(db, sub.id).status_reason == "one-click unsubscribe"


def test_page_button_post_and_the_page_afterwards(client, db):
    sub = store.insert(db, "reader@example.com", topics={"genetics"})
    response = client.post(url(sub), data={"List-Unsubscribe": "One-Click"})
    html = response.get_data(as_text=True)
    assert "You are unsubscribed" in html
    resubscribe = re.search(
        r'<form method="post" action="([^"]+)">\s*<button[^>]*>Subscribe again', html
    )
    change = re.search(
        r'<a class="button secondary" href="([^"]+)">Change topics instead</a>', html
    )
    assert resubscribe and change
    assert change.group(1) == url(sub, "preferences")
    assert resubscribe.group(1) == url(sub, "preferences").replace("/preferences/", "/resubscribe/")

    # "Change topics instead" opens their preference page; "Subscribe again" brings them back.
    assert client.get(change.group(1)).status_code == 200
    assert client.post(resubscribe.group(1)).status_code == 200
    assert store.get_row(db, sub.id).status == "subscribed"
    statuses = [h["new_value"] for h in store.history_rows(db, sub.id) if h["field"] == "status"]
    assert statuses == ["unsubscribed", "subscribed"]


def test_a_post_without_the_one_click_body_also_unsubscribes(client, db):
    sub = store.insert(db, "reader@example.com")
    assert client.post(url(sub)).status_code == 200
    assert store.get_row(db, sub.id).status == "unsubscribed"
    assert store.get_row(db, sub.id).status_reason == "unsubscribe page"


def test_get_when_already_unsubscribed_says_so(client, db):
    sub = store.insert(db, "gone@example.com", status="unsubscribed")
    html = client.get(url(sub)).get_data(as_text=True)
    assert "already unsubscribed" in html
    assert "Subscribe again" in html


def test_unsubscribing_a_complainer_keeps_the_complaint(client, db):
    sub = store.insert(db, "angry@example.com", status="complained")
    html = client.post(url(sub), data=ONE_CLICK).get_data(as_text=True)
    assert store.get_row(db, sub.id).status == "complained"
    assert "Subscribe again" not in html


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("bounced", "Our emails to this address bounced"),
        ("invalid", "reported this address as invalid"),
    ],
)
def test_one_click_on_a_bounced_address_keeps_the_bounce_and_offers_no_subscribe_again(
    client, db, status, said
):
    sub = store.insert(db, "stopped@example.com", status="subscribed")
    store.write_status(db, sub.id, status, "sendgrid", "SendGrid bounce: 550 5.1.1")
    before = store.history_rows(db, sub.id)

    response = client.post(
        url(sub), data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert said in html and "We send no more" in html
    assert "Subscribe again" not in html
    assert store.get_row(db, sub.id).status == status
    assert store.history_rows(db, sub.id) == before

    # Neither the preference page nor its "Subscribe again" address brings the address back.
    page = client.get(url(sub, "preferences")).get_data(as_text=True)
    assert "Subscribe again" not in page and "write to" in page
    again = client.post(url(sub, "preferences").replace("/preferences/", "/resubscribe/"))
    assert again.status_code == 409
    assert "We cannot restart the newsletter from here" in again.get_data(as_text=True)
    assert store.get_row(db, sub.id).status == status
    assert store.history_rows(db, sub.id) == before
