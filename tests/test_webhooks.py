"""SendGrid's signed event webhook: signatures made with a key pair generated here, the events'
effect on subscribers and ledger rows, and replays that change nothing."""

from __future__ import annotations

import json
import time

import pytest

from newsletter.config import load_settings
from newsletter.sendgrid.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, event_id
from newsletter.store import subscribers as store
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.webhooks import make_key_pair, sign, signed_now

pytestmark = pytest.mark.both_engines

ISSUE = "2026-12"
NOW = int(time.time())  # for the events' own times; a batch is signed at the time it is posted


@pytest.fixture
def keys():
    return make_key_pair()


@pytest.fixture
def client(settings, keys, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", keys[1])
    return create_app(settings).test_client()


def post(client, private, events, *, timestamp=None, body=None, headers=None):
    body = body if body is not None else json.dumps(events).encode("utf-8")
    timestamp = timestamp or signed_now()
    sent_headers = {
        SIGNATURE_HEADER: sign(private, body, timestamp),
        TIMESTAMP_HEADER: timestamp,
    }
    if headers is not None:
        sent_headers = headers
    return client.post(
        "/webhooks/sendgrid", data=body, headers=sent_headers, content_type="application/json"
    )


def add_ledger_row(db, subscriber_id, issue=ISSUE):
    # The sender writes these; a bare row is all the webhook needs to find.
    with db.transaction():
        db.conn.execute(
            "INSERT INTO ledger (issue_id, subscriber_id, segment, state, updated_at) "
            "VALUES (?, ?, 'all', 'sent', '2026-12-01T09:00:00Z')",
            (issue, subscriber_id),
        )


def ledger(db, subscriber_id, issue=ISSUE):
    row = db.conn.execute(
        "SELECT delivery, delivery_at FROM ledger WHERE issue_id = ? AND subscriber_id = ?",
        (issue, subscriber_id),
    ).fetchone()
    return dict(row) if row else None


def snapshot(db):
    subscribers = [dict(r) for r in db.conn.execute("SELECT * FROM subscribers ORDER BY id")]
    history = [dict(r) for r in db.conn.execute("SELECT * FROM history ORDER BY id")]
    rows = [dict(r) for r in db.conn.execute("SELECT * FROM ledger ORDER BY subscriber_id")]
    return subscribers, history, rows


def event(kind, sub, n, **extra):
    data = {
        "email": sub.email,
        "timestamp": NOW - 100 + n,
        "event": kind,
        "sg_event_id": f"evt-{kind}-{n}",
        "sg_message_id": f"msg-{n}.filter",
        "newsletter_issue": ISSUE,
        "newsletter_subscriber": str(sub.id),
    }
    data.update(extra)
    return data


@pytest.fixture
def people(db):
    names = [
        "delivered",
        "bounced",
        "invalid",
        "spam",
        "unsub",
        "group",
        "othergroup",
        "blocked",
        "opened",
        "complainer",
    ]
    subs = {}
    for name in names:
        status = "complained" if name == "complainer" else "subscribed"
        subs[name] = store.insert(db, f"{name}@example.com", name=name, status=status)
        add_ledger_row(db, subs[name].id)
    return subs


def batch(people):
    p = people
    return [
        event("processed", p["delivered"], 0),
        event("delivered", p["delivered"], 1),
        event("bounce", p["bounced"], 2, type="bounce", reason="550 5.1.1 no such user"),
        # SendGrid's drop for an invalid address carries no sg_event_id.
        {
            k: v
            for k, v in event("dropped", p["invalid"], 3, reason="Invalid").items()
            if k != "sg_event_id"
        },
        event("spamreport", p["spam"], 4),
        event("unsubscribe", p["unsub"], 5),
        event("group_unsubscribe", p["group"], 6, asm_group_id=42),
        event("group_unsubscribe", p["othergroup"], 7, asm_group_id=99),
        event("bounce", p["blocked"], 8, type="blocked", reason="421 try later"),
        event("open", p["opened"], 9),
        event("bounce", p["complainer"], 10, type="bounce"),
        {"email": "stranger@example.com", "event": "bounce", "timestamp": NOW, "sg_event_id": "x"},
    ]


def with_group(workspace, group_id=42):
    path = workspace / "newsletter.yaml"
    path.write_text(
        path.read_text().replace(
            "    sync_suppressions: true",
            f"    sync_suppressions: true\n    asm_group_id: {group_id}",
        )
    )
    return load_settings(path)


def test_valid_batch_changes_statuses_and_ledger(workspace, db, people, keys, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", keys[1])
    client = create_app(with_group(workspace)).test_client()

    response = post(client, keys[0], batch(people))

    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["received"] == 12
    assert report["ignored"] == 1  # open (`processed` is read: it may resolve an unknown row)
    p = people

    def status(name):
        return store.get_row(db, p[name].id).status

    assert status("delivered") == "subscribed"
    assert status("bounced") == "bounced"
    assert status("invalid") == "invalid"
    assert status("spam") == "complained"
    assert status("unsub") == "unsubscribed"
    assert status("group") == "unsubscribed"
    assert status("othergroup") == "subscribed"  # another mailing's group
    assert status("blocked") == "subscribed"  # a temporary block is not a dead address
    assert status("opened") == "subscribed"
    assert status("complainer") == "complained"  # never weakened to bounced
    changed = store.get_row(db, p["bounced"].id)
    assert changed.status_source == "sendgrid"
    assert changed.status_reason == "SendGrid bounce: 550 5.1.1 no such user"
    assert store.history_rows(db, p["spam"].id)[-1]["source"] == "sendgrid"

    assert ledger(db, p["delivered"].id)["delivery"] == "delivered"
    assert ledger(db, p["delivered"].id)["delivery_at"].endswith("Z")
    assert ledger(db, p["bounced"].id)["delivery"] == "bounced"
    assert ledger(db, p["blocked"].id)["delivery"] == "bounced"
    assert ledger(db, p["invalid"].id)["delivery"] == "dropped"
    assert ledger(db, p["spam"].id)["delivery"] is None
    assert report["status_changes"] == 5
    assert ledger(db, p["complainer"].id)["delivery"] == "bounced"
    assert report["ledger_updates"] == 5


def test_replay_changes_nothing(client, db, people, keys):
    events = batch(people)
    assert post(client, keys[0], events).status_code == 200
    before = snapshot(db)
    seen = db.conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0]

    # SendGrid retries with a new timestamp and signature; the events are the same.
    again = post(client, keys[0], events, timestamp=signed_now(60))

    assert again.status_code == 200
    assert again.get_json()["replayed"] == 11 and again.get_json()["applied"] == 0
    assert snapshot(db) == before
    assert db.conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0] == seen


def test_replay_after_a_resubscribe_changes_nothing(client, db, people, keys):
    sub = people["unsub"]
    events = [event("unsubscribe", sub, 1)]
    post(client, keys[0], events)
    store.write_status(db, sub.id, "subscribed", "web", "subscribed again on the preference page")
    assert post(client, keys[0], events).status_code == 200
    assert store.get_row(db, sub.id).status == "subscribed"
    # A late copy with another id but an old timestamp is stale too.
    late = [event("unsubscribe", sub, 2, sg_event_id="evt-late")]
    assert post(client, keys[0], late).status_code == 200
    assert store.get_row(db, sub.id).status == "subscribed"


def test_a_late_delivered_never_hides_a_bounce(client, db, people, keys):
    sub = people["bounced"]
    post(client, keys[0], [event("bounce", sub, 5, type="bounce")])
    post(client, keys[0], [event("delivered", sub, 1)])
    assert ledger(db, sub.id)["delivery"] == "bounced"


@pytest.mark.parametrize(
    "tamper",
    ["wrong key", "body changed", "timestamp changed", "no signature", "no headers", "garbage"],
)
def test_bad_signature_is_403_and_changes_nothing(client, db, people, keys, tamper):
    events = batch(people)
    body = json.dumps(events).encode()
    timestamp = signed_now()
    good = sign(keys[0], body, timestamp)
    headers = {SIGNATURE_HEADER: good, TIMESTAMP_HEADER: timestamp}
    if tamper == "wrong key":
        other, _ = make_key_pair()
        headers[SIGNATURE_HEADER] = sign(other, body, timestamp)
    elif tamper == "body changed":
        body = body.replace(b'"bounce"', b'"spamreport"', 1)
    elif tamper == "timestamp changed":
        headers[TIMESTAMP_HEADER] = str(int(timestamp) + 1)
    elif tamper == "no signature":
        del headers[SIGNATURE_HEADER]
    elif tamper == "no headers":
        headers = {}
    elif tamper == "garbage":
        headers[SIGNATURE_HEADER] = "not base64 at all!"
    before = snapshot(db)

    response = post(client, keys[0], None, body=body, headers=headers)

    assert response.status_code == 403
    assert snapshot(db) == before
    assert db.conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0] == 0
    # The same events, correctly signed, still apply afterwards: nothing was marked as seen.
    assert post(client, keys[0], events).get_json()["applied"] == 11


def test_signed_but_not_a_list_is_400(client, keys):
    response = post(client, keys[0], None, body=b'{"event": "bounce"}')
    assert response.status_code == 400


def test_no_public_key_is_503(settings, monkeypatch, keys):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    client = create_app(settings).test_client()
    response = post(client, keys[0], [])
    # Not a 4xx: SendGrid retries a 5xx, so no event is lost while the key is being set up.
    assert response.status_code == 503


def test_public_key_from_settings_file(workspace, db, keys, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    path = workspace / "newsletter.yaml"
    path.write_text(
        path.read_text().replace(
            "    sync_suppressions: true",
            f"    sync_suppressions: true\n    webhook_public_key: {keys[1]}",
        )
    )
    client = create_app(load_settings(path)).test_client()
    sub = store.insert(db, "reader@example.com")
    assert post(client, keys[0], [event("spamreport", sub, 1)]).status_code == 200
    assert store.get_row(db, sub.id).status == "complained"


def test_event_id_without_sg_event_id_is_stable():
    a = {"email": "x@example.com", "event": "dropped", "reason": "Invalid", "timestamp": 1}
    b = dict(reversed(list(a.items())))
    assert event_id(a) == event_id(b) and event_id(a).startswith("sha256:")
    assert event_id({**a, "sg_event_id": "abc"}) == "abc"


def test_library_entry_point(settings, db, keys, monkeypatch):
    from newsletter.sendgrid.webhooks import SignatureInvalid, WebhookNotConfigured, handle_webhook

    sub = store.insert(db, "reader@example.com")
    body = json.dumps([event("unsubscribe", sub, 1)]).encode()
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    with pytest.raises(WebhookNotConfigured):
        handle_webhook(settings, db, body, "sig", "1")
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnot a key\n")
    with pytest.raises(WebhookNotConfigured, match="cannot be read"):
        handle_webhook(settings, db, body, "sig", "1")
    # A PEM block pasted whole works as well as SendGrid's bare base64.
    pem = "-----BEGIN PUBLIC KEY-----\n" + keys[1] + "\n-----END PUBLIC KEY-----\n"
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", pem)
    signed_at = signed_now()
    with pytest.raises(SignatureInvalid):
        handle_webhook(settings, db, body, sign(keys[0], body, signed_at), signed_now(1))
    assert store.get_row(db, sub.id).status == "subscribed"
    report = handle_webhook(settings, db, body, sign(keys[0], body, signed_at), signed_at)
    assert report.status_changes == 1 and store.get_row(db, sub.id).status == "unsubscribed"


# --- One bad event costs only itself (D13) -------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_EVENTS = {
    # (what the bad event is, how it is written into the batch's JSON)
    "a 40-digit subscriber id": lambda e: json.dumps({**e, "newsletter_subscriber": "9" * 40}),
    "a 40-digit subscriber id as a number": lambda e: json.dumps(
        {**e, "newsletter_subscriber": 10**40}
    ),
    "a timestamp of 1e20": lambda e: json.dumps({**e, "timestamp": 1e20}),
    "a timestamp of 1e400 (infinity)": lambda e: json.dumps(e)[:-1] + ', "timestamp": 1e400}',
    "a negative timestamp": lambda e: json.dumps({**e, "timestamp": -5}),
    "deeply nested JSON in a field": lambda e: json.dumps(e)[:-1] + f', "x": {nested(100_000)}}}',
    "a deeply nested entry": lambda e: nested(100_000),
    "JSON nested 50 deep in a field": lambda e: json.dumps(e)[:-1] + f', "x": {nested(50)}}}',
    "a 5000-digit number": lambda e: json.dumps(e)[:-1] + ', "n": ' + "7" * 5000 + "}",
    "a broken entry": lambda e: '{"event": "bounce", "email": }',
    "an email address as a list": lambda e: json.dumps({**e, "email": [e["email"]]}),
}


@pytest.mark.parametrize("write_bad", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_a_bad_event_in_a_signed_batch_is_skipped_and_logged_and_the_rest_applied(
    client, db, people, keys, caplog, write_bad
):
    p = people
    first = event("unsubscribe", p["unsub"], 1)
    bad = event("bounce", p["bounced"], 2, type="bounce")
    last = event("spamreport", p["spam"], 3)
    body = f"[{json.dumps(first)}, {write_bad(bad)}, {json.dumps(last)}]".encode()

    with caplog.at_level("WARNING", logger="newsletter.sendgrid.webhooks"):
        response = post(client, keys[0], None, body=body)

    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert (report["received"], report["applied"], report["invalid"]) == (3, 2, 1)
    assert store.get_row(db, p["unsub"].id).status == "unsubscribed"
    assert store.get_row(db, p["spam"].id).status == "complained"
    assert store.get_row(db, p["bounced"].id).status == "subscribed"  # the bad one: not applied
    assert ledger(db, p["bounced"].id)["delivery"] is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("SendGrid webhook: event 2 of 3 skipped: ")
    assert p["bounced"].email not in warning  # no personal data in the log


def test_an_event_whose_type_is_not_text_is_ignored(client, db, people, keys):
    odd = {**event("bounce", people["bounced"], 1), "event": ["bounce"]}
    response = post(client, keys[0], [odd, event("spamreport", people["spam"], 2)])
    assert response.status_code == 200
    assert (response.get_json()["ignored"], response.get_json()["applied"]) == (1, 1)
    assert store.get_row(db, people["bounced"].id).status == "subscribed"


def test_a_batch_of_only_bad_events_is_still_answered_2xx(client, db, people, keys):
    body = f'[{nested(50_000)}, {{"event": "bounce", "timestamp": 1e20}}]'.encode()
    response = post(client, keys[0], None, body=body)
    assert response.status_code == 200
    assert response.get_json()["invalid"] == 2


@pytest.mark.parametrize(
    "body",
    [b'{"event": "bounce"}', b"[" * 100_000, b'[{"event": "bounce"}] trailing', b"", b"\xff["],
    ids=["an object", "an unclosed list", "text after the list", "empty", "not UTF-8"],
)
def test_a_signed_body_that_is_not_a_list_of_events_is_400(client, db, people, keys, body):
    before = snapshot(db)
    response = post(client, keys[0], None, body=body)
    assert response.status_code in (400, 403)  # (bytes that are not UTF-8 cannot be verified)
    assert snapshot(db) == before


# --- Freshness: a batch signed long ago is refused ---------------------------------------------


@pytest.mark.parametrize(
    "offset", [-601, -3600 * 24, 3600], ids=["10 min ago", "a day ago", "ahead"]
)
def test_a_batch_signed_outside_the_freshness_window_is_refused(client, db, people, keys, offset):
    events = [event("unsubscribe", people["unsub"], 1)]
    before = snapshot(db)

    response = post(client, keys[0], events, timestamp=signed_now(offset))

    assert response.status_code == 403
    assert response.get_json()["error"] == (
        "the webhook batch was not signed within the last 600 seconds"
    )
    assert snapshot(db) == before
    # The same events signed now (SendGrid signs each retry afresh) are applied.
    assert post(client, keys[0], events).get_json()["applied"] == 1


def test_the_freshness_window_is_a_setting(workspace, db, people, keys, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", keys[1])
    path = workspace / "newsletter.yaml"
    path.write_text(
        path.read_text().replace(
            "    sync_suppressions: true",
            "    sync_suppressions: true\n    webhook_max_age: 60",
        )
    )
    client = create_app(load_settings(path)).test_client()
    events = [event("unsubscribe", people["unsub"], 1)]

    assert post(client, keys[0], events, timestamp=signed_now(-120)).status_code == 403
    assert post(client, keys[0], events, timestamp=signed_now(-30)).status_code == 200


def test_freshness_boundary(settings, db, keys, monkeypatch):
    from newsletter.sendgrid.webhooks import WebhookTooOld, handle_webhook

    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", keys[1])
    sub = store.insert(db, "reader@example.com")
    body = json.dumps([event("unsubscribe", sub, 1)]).encode()
    signed_at = 1_800_000_000
    signature = sign(keys[0], body, str(signed_at))
    for now in (signed_at + 601, signed_at - 601):
        with pytest.raises(WebhookTooOld):
            handle_webhook(settings, db, body, signature, str(signed_at), now=now)
    assert store.get_row(db, sub.id).status == "subscribed"
    report = handle_webhook(settings, db, body, signature, str(signed_at), now=signed_at + 600)
    assert report.status_changes == 1


def test_freshness_setting_is_checked(workspace, run):
    path = workspace / "newsletter.yaml"
    path.write_text(
        path.read_text().replace(
            "    sync_suppressions: true", "    sync_suppressions: true\n    webhook_max_age: 0"
        )
    )
    result = run("check", ISSUE)
    assert result.exit_code == 1
    assert "field 'delivery.sendgrid.webhook_max_age'" in result.stderr
