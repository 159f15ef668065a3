"""`delivery.sendgrid.compress: true`: each mail-send body goes gzipped with
`Content-Encoding: gzip`, through the official client; the fake SendGrid decompresses it and
checks the JSON inside against the official schema, and refuses a corrupt one (400) or one whose
JSON reaches the size limit however small the gzip (413)."""
# Not both_engines: the body's encoding (the send through the ledger: test_backend_sendgrid).

from __future__ import annotations

import gzip
import json
import threading

import pytest
import sendgrid
from python_http_client.exceptions import HTTPError

from newsletter.delivery import RetryPolicy, send_issue
from newsletter.delivery.backends.sendgrid import SendGridBackend
from newsletter.delivery.batch import Batch, BatchResult, Recipient
from newsletter.render import RenderedEmail
from newsletter.sendgrid import request_body
from newsletter.sendgrid.client import JsonPoster
from newsletter.store import ledger as store
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, add_many, configure, database, duplicates, schema_problems

SECRET = "k" * 40
QUICK = RetryPolicy(max_attempts=2, base=0.0, maximum=0.0, rand=lambda: 1.0)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    with FakeSendGrid() as server:
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        yield server


def sendgrid_settings(workspace, compress: bool):
    return configure(
        workspace,
        backend="sendgrid",
        batch_size=10,
        timeout=10,
        sendgrid={"sync_suppressions": False, "compress": compress},
    )


def test_a_compressed_send_reaches_everyone_once(workspace, fake):
    settings = sendgrid_settings(workspace, compress=True)
    db = database(settings)
    add_many(db, 25)

    send_issue(settings, db, ISSUE, retry=QUICK, sleep=lambda s: None)

    everyone = sorted(f"user{i}@example.org" for i in range(25))
    assert sorted(fake.recipients()) == everyone and duplicates(fake.recipients()) == []
    assert store.counts(db, ISSUE) == {"sent": 25}
    accepted = [r["payload"] for r in fake.accepted()]
    assert len(accepted) == 3  # ⌈25 / 10⌉
    assert schema_problems(accepted) == []  # the JSON inside the gzip, as the fake decoded it
    for body, sent in zip(accepted, fake.send_times(), strict=True):
        assert body["content"][1]["type"] == "text/html"
        json_bytes = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        # What went over the wire is the gzip: several times smaller than the JSON inside.
        assert sent["status"] == 202 and sent["bytes"] * 4 < json_bytes


def test_without_the_setting_the_body_goes_as_plain_json(workspace, fake):
    settings = sendgrid_settings(workspace, compress=False)
    assert SendGridBackend(settings).compress is False
    db = database(settings)
    add_many(db, 5)

    send_issue(settings, db, ISSUE, retry=QUICK, sleep=lambda s: None)

    [body] = [r["payload"] for r in fake.accepted()]
    [sent] = fake.send_times()
    assert sent["bytes"] == len(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    )


def test_a_refused_recipient_is_dropped_and_the_rest_resent_compressed(workspace, fake):
    settings = sendgrid_settings(workspace, compress=True)
    db = database(settings)
    add_many(db, 3)
    refusal = {
        "errors": [
            {
                "message": "Does not contain a valid address.",
                "field": "personalizations.1.to.0.email",
            }
        ]
    }
    fake.script([{"status": 400, "body": refusal}])

    send_issue(settings, db, ISSUE, retry=QUICK, sleep=lambda s: None)

    assert store.counts(db, ISSUE) == {"sent": 2, "failed": 1}
    assert sorted(fake.recipients()) == ["user0@example.org", "user2@example.org"]
    assert [t["status"] for t in fake.send_times()] == [400, 202]


def poster(fake) -> JsonPoster:
    return JsonPoster(
        sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=fake.url), "mail", "send"
    )


BODY = {
    "personalizations": [{"to": [{"email": "a@example.com"}]}],
    "from": {"email": "news@example.org"},
    "subject": "Hello",
    "content": [{"type": "text/plain", "value": "Hello"}],
}


def status_of(fake, data: bytes, gzipped: bool = True) -> int:
    try:
        return poster(fake).post(data, gzipped=gzipped).status_code
    except HTTPError as err:
        return err.status_code


def test_the_fake_decodes_our_gzip(fake):
    data = request_body.compress(request_body.encode(BODY))
    assert gzip.decompress(data) == request_body.encode(BODY)
    assert status_of(fake, data) == 202
    assert fake.accepted()[0]["payload"] == BODY


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x1f\x8b\x08\x00garbage, not deflate", id="corrupt"),
        pytest.param(gzip.compress(json.dumps(BODY).encode())[:-12], id="cut short"),
        pytest.param(json.dumps(BODY).encode(), id="plain JSON said to be gzip"),
        pytest.param(gzip.compress(b"{not json"), id="gzip of something else"),
    ],
)
def test_the_fake_refuses_a_broken_gzip_body(fake, data):
    assert status_of(fake, data) == 400
    assert fake.stats()["accepted_requests"] == 0


def test_the_size_limit_holds_for_the_json_inside_the_gzip(fake):
    fake.set_mode(max_body_bytes=50_000)
    big = json.loads(json.dumps(BODY))
    big["content"][0]["value"] = "x" * 60_000  # gzips to a few hundred bytes
    data = request_body.compress(request_body.encode(big))
    assert len(data) < 1_000
    assert status_of(fake, data) == 413
    assert status_of(fake, request_body.compress(request_body.encode(BODY))) == 202


def batch_of(addresses: list[str]) -> Batch:
    email = RenderedEmail(
        subject="Hello", preheader="", html="<p>Hello</p>" * 200, text="Hello " * 500,
        summary_ids=(), journals=(),
    )  # fmt: skip
    values = {
        "name": "Reader",
        "topics": "genetics",
        "preferences_url": "https://news.example.org/preferences/t",
        "unsubscribe_url": "https://news.example.org/unsubscribe/t",
    }
    recipients = [Recipient(i + 1, a, "Reader", values) for i, a in enumerate(addresses)]
    return Batch(issue_id=ISSUE, number=1, email=email, recipients=recipients, subject="Hello")


def test_two_backends_in_two_threads_keep_their_own_requests(workspace, fake):
    """One SendGridBackend a worker thread: two of them, one compressing, send at the same time
    (both held by the fake's latency until both are in) and neither's client, headers or
    encoding leaks into the other's request."""
    gzipping = SendGridBackend(sendgrid_settings(workspace, compress=True))
    plain = SendGridBackend(sendgrid_settings(workspace, compress=False))
    assert gzipping.client is not plain.client
    fake.set_mode(latency_ms=60_000)
    results = {"gzip": BatchResult(), "plain": BatchResult()}
    batches = {"gzip": batch_of(["g@example.org"]), "plain": batch_of(["p@example.org"])}
    threads = [
        threading.Thread(target=backend.deliver, args=(batches[key], results[key]))
        for key, backend in (("gzip", gzipping), ("plain", plain))
    ]
    for thread in threads:
        thread.start()
    try:
        both_in_flight = fake.wait_for("in_flight", n=2, timeout=20)
    finally:
        fake.release()
        for thread in threads:
            thread.join(30)
    assert both_in_flight
    assert results["gzip"].sent and results["plain"].sent
    by_address = {r["recipients"][0]: r["payload"] for r in fake.accepted()}
    assert set(by_address) == {"g@example.org", "p@example.org"}
    sizes = sorted(t["bytes"] for t in fake.send_times())
    plain_json = len(request_body.encode(by_address["p@example.org"]))
    assert sizes[1] == plain_json  # the plain one went as JSON
    assert sizes[0] * 4 < plain_json  # the other one gzipped
