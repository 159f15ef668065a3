"""SendGrid's size limits, held before a request leaves: a batch whose body would reach the
request limit (30 MB) goes out as several requests, everyone sent once and recorded with their
own request's message id; a personalization whose custom args reach 10,000 bytes fails that
recipient alone. The fake SendGrid enforces the same limits (413 and 400), so what it accepts
proves the split."""
# Not both_engines: the body's limits (the send through the ledger: test_backend_sendgrid).

from __future__ import annotations

import json

import pytest
from python_http_client.exceptions import HTTPError

from newsletter.delivery import RetryPolicy, send_issue
from newsletter.delivery.backends.sendgrid import SendGridBackend
from newsletter.delivery.batch import Batch, BatchResult, Recipient
from newsletter.render import RenderedEmail
from newsletter.sendgrid import request_body
from newsletter.store import ledger as store
from tests.fake_sendgrid import MAX_BODY_BYTES, TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, add_many, configure, database, duplicates

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


@pytest.fixture
def settings(workspace):
    return configure(
        workspace,
        backend="sendgrid",
        batch_size=40,
        timeout=10,
        sendgrid={"sync_suppressions": False},
    )


def provider_ids(db) -> dict[str, str]:
    """email → the message id the ledger recorded."""
    rows = db.conn.execute(
        "SELECT s.email, l.provider_id FROM ledger l JOIN subscribers s ON s.id = l.subscriber_id "
        "WHERE l.issue_id = ? AND l.state = 'sent'",
        (ISSUE,),
    )
    return {r[0]: r[1] for r in rows}


def post_whole(fake, body: dict) -> int:
    """What the fake answers to `body` sent as one request by the official client."""
    client = client_for(fake)
    try:
        return client.client.mail.send.post(request_body=body).status_code
    except HTTPError as err:
        return err.status_code


def client_for(fake):
    import sendgrid

    client = sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=fake.url)
    client.client.timeout = 30
    return client


def test_a_batch_over_the_size_limit_goes_out_as_several_requests(settings, fake):
    limit = 60_000  # the example issue's content and about 20 of these personalizations (78 KB)
    fake.set_mode(max_body_bytes=limit)  # the fake refuses 60,000 bytes or more, like 30 MB
    db = database(settings)
    add_many(db, 40)
    backend = SendGridBackend(settings)
    backend.max_request_bytes = limit

    result = send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=lambda s: None)

    times = fake.send_times()
    assert [t["status"] for t in times] == [202] * len(times)
    assert len(times) >= 2, "one batch of 40, sent as several requests"
    assert all(t["bytes"] < limit for t in times)
    # Each request but the last was filled: splitting never sends more requests than needed.
    assert all(t["bytes"] > limit // 2 for t in times[:-1])
    everyone = [f"user{i}@example.org" for i in range(40)]
    assert sorted(fake.recipients()) == sorted(everyone)
    assert duplicates(fake.recipients()) == []
    assert store.counts(db, ISSUE) == {"sent": 40}
    assert result.report.state == "sent"
    # Everyone is recorded with the message id of the request that carried them.
    accepted = fake.accepted()
    assert len(accepted) == len(times)
    carried = {a: request["x_message_id"] for request in accepted for a in request["recipients"]}
    assert provider_ids(db) == carried
    assert len(set(carried.values())) == len(accepted)

    # The same 40 in one request: the fake refuses it, as SendGrid refuses 30 MB.
    whole = dict(accepted[0]["payload"])
    whole["personalizations"] = [p for r in accepted for p in r["payload"]["personalizations"]]
    assert post_whole(fake, whole) == 413


def big_batch(text_bytes: int, people: int = 2) -> Batch:
    """A batch whose text part is `text_bytes` of ASCII: the request size is nearly all content."""
    email = RenderedEmail(
        subject="Size",
        preheader="",
        html="<p>Hello</p>",
        text="x" * text_bytes,
        summary_ids=(),
        journals=(),
    )
    recipients = [
        Recipient(
            i + 1,
            f"reader{i}@example.org",
            f"Reader {i}",
            {
                "name": f"Reader {i}",
                "topics": "genetics",
                "preferences_url": f"https://news.example.org/preferences/t{i}",
                "unsubscribe_url": f"https://news.example.org/unsubscribe/t{i}",
            },
        )
        for i in range(people)
    ]
    return Batch(issue_id=ISSUE, number=1, email=email, recipients=recipients, subject="Size")


def test_at_sendgrids_own_30_mb_the_body_is_split_and_accepted(settings, fake):
    backend = SendGridBackend(settings)
    assert backend.max_request_bytes == request_body.MAX_REQUEST_BYTES == MAX_BODY_BYTES
    small = big_batch(0)
    base = len(request_body.encode(backend.payload(small.only([]))))
    one = len(request_body.encode(backend.payload(small.only(small.recipients[:1])))) - base
    # Content that leaves room for one personalization under 30,000,000 bytes, not for two.
    batch = big_batch(MAX_BODY_BYTES - base - one - 10)

    result = BatchResult()
    backend.deliver(batch, result)

    times = fake.send_times()
    assert [t["status"] for t in times] == [202, 202]
    assert all(MAX_BODY_BYTES - 2 * one < t["bytes"] < MAX_BODY_BYTES for t in times)
    assert sorted(result.sent) == [1, 2] and result.failed == {}
    assert sorted(fake.recipients()) == ["reader0@example.org", "reader1@example.org"]
    whole = backend.payload(batch)
    assert len(request_body.encode(whole)) >= MAX_BODY_BYTES
    assert post_whole(fake, whole) == 413  # as one request: refused


class NoteSendGrid(SendGridBackend):
    """Carries a note of `notes[subscriber id]` bytes in some recipients' custom args."""

    notes: dict[int, int] = {}

    def custom_args(self, batch, recipient):
        args = super().custom_args(batch, recipient)
        size = self.notes.get(recipient.subscriber_id)
        if size is not None:
            args["note"] = "n" * size
        return args


def args_bytes_without_note(subscriber_id: int) -> int:
    return len("newsletter_issue" + ISSUE + "newsletter_subscriber" + str(subscriber_id) + "note")


def test_custom_args_of_10000_bytes_fail_that_recipient_alone(settings, fake):
    db = database(settings)
    add_many(db, 5)  # ids 1 to 5
    backend = NoteSendGrid(settings)
    # Subscriber 2's custom args take exactly 10,000 bytes (refused: "less than 10000 bytes"),
    # subscriber 3's 9,999 (accepted).
    backend.notes = {2: 10_000 - args_bytes_without_note(2), 3: 9_999 - args_bytes_without_note(3)}

    send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=lambda s: None)

    assert fake.stats()["responses"] == {202: 1}  # refused before the request, not by SendGrid
    assert sorted(fake.recipients()) == [f"user{i}@example.org" for i in (0, 2, 3, 4)]
    assert store.counts(db, ISSUE) == {"sent": 4, "failed": 1}
    [(reason, count)] = store.reasons(db, ISSUE, "failed").items()
    assert count == 1
    assert "user1@example.org" in reason and "custom args take 10,000 bytes" in reason
    [note] = [
        p["custom_args"]["note"]
        for p in fake.accepted()[0]["payload"]["personalizations"]
        if p["to"][0]["email"] == "user2@example.org"
    ]
    assert len(note) == 9_999 - args_bytes_without_note(3)

    # The fake, like SendGrid, refuses the personalization that was held back.
    refused = dict(fake.accepted()[0]["payload"])
    refused["personalizations"] = [
        {"to": [{"email": "user1@example.org"}], "custom_args": {"note": "n" * 9_996}}
    ]
    assert post_whole(fake, refused) == 400


def test_split_packs_requests_under_the_limit_in_order():
    body = {
        "subject": "s",
        "personalizations": [{"to": [{"email": f"{i}@x.org"}]} for i in range(7)],
    }
    body["personalizations"][4] = {"to": [{"email": "long@x.org", "name": "n" * 200}]}
    base = len(request_body.encode({**body, "personalizations": []}))
    sizes = [len(request_body.encode(p)) for p in body["personalizations"]]
    limit = base + sizes[0] * 3 + 2 + 1  # three short ones and their commas fit, just

    groups, alone = request_body.split(body, limit)

    assert alone == [4]  # the long one fits in no request
    assert groups == [[0, 1, 2], [3, 5, 6]]
    for group in groups:
        part = {**body, "personalizations": [body["personalizations"][i] for i in group]}
        assert len(request_body.encode(part)) < limit
    full = {**body, "personalizations": body["personalizations"][:4]}
    assert len(request_body.encode(full)) >= limit  # a fourth would not have fitted


def test_personalization_problem_counts_utf8_bytes():
    ok = {"custom_args": {"k": "é" * 4_998}}  # 1 + 9,996 bytes
    over = {"custom_args": {"k": "é" * 4_999 + "a"}}  # 1 + 9,998 + 1 = 10,000 bytes
    assert request_body.personalization_problem(ok) is None
    assert "10,000 bytes" in request_body.personalization_problem(over)
    assert request_body.personalization_problem(ok, message_args_bytes=3) is not None
    assert request_body.personalization_problem({"to": [{"email": "a@x.org"}]}) is None


def test_a_split_batch_interrupted_mid_way_resumes_without_resending(settings, fake):
    """The second of a split batch's requests is lost after SendGrid took it: its recipients
    are unknown, the first request's stay sent and the third's were never tried (pending); a
    second send delivers only those."""
    limit = 45_000  # the example issue's content and about 6 personalizations a request
    fake.set_mode(max_body_bytes=limit)
    db = database(settings)
    add_many(db, 40)

    class LoseSecond(SendGridBackend):
        def _send_mail(self, data, personalizations):
            if self.requests == 1:  # SendGrid accepts the second request, its answer is lost
                fake.script([{"drop": True, "accept": True}])
            return super()._send_mail(data, personalizations)

    backend = LoseSecond(settings)
    backend.max_request_bytes = limit
    with pytest.raises(Exception, match="may or may not"):
        send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=lambda s: None)

    first, second = fake.accepted()
    counts = store.counts(db, ISSUE)
    assert counts["sent"] == len(first["recipients"])
    assert counts["unknown"] == len(second["recipients"])
    assert counts["pending"] == 40 - len(first["recipients"]) - len(second["recipients"]) > 0

    backend = SendGridBackend(settings)
    backend.max_request_bytes = limit
    send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=lambda s: None)

    assert duplicates(fake.recipients()) == []  # nobody twice
    assert sorted(fake.recipients()) == sorted(f"user{i}@example.org" for i in range(40))
    assert store.counts(db, ISSUE) == {"sent": 40 - counts["unknown"], "unknown": counts["unknown"]}


def test_a_lone_surrogate_is_encoded_as_the_json_module_would():
    body = {"subject": "a\ud800b", "personalizations": []}
    assert json.loads(request_body.encode(body)) == body
