"""The SendGrid backend against the fake SendGrid server: the payload (checked against SendGrid's
official schema), retries, stops, unknown outcomes, scheduling, sandbox, and the example issue
end to end."""

from __future__ import annotations

import datetime as dt
import html
import re
import time

import pytest

from newsletter.delivery import RetryPolicy, build_report, send_issue
from newsletter.delivery.backends.sendgrid import SendGridBackend
from newsletter.errors import AuthenticationError, DeliveryError, PayloadRejected
from newsletter.sendgrid.client import retry_after_seconds
from newsletter.store import ledger as store
from newsletter.store.subscribers import get_row_by_email, insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid, load_mail_send_schema
from tests.support.delivery import (
    ISSUE,
    add_many,
    check_deliveries,
    configure,
    database,
    duplicates,
    free_port,
    schema_problems,
    titles_in,
)

pytestmark = pytest.mark.both_engines

SECRET = "k" * 40
QUICK = RetryPolicy(max_attempts=4, base=0.5, maximum=2.0, rand=lambda: 1.0)


class RecordingSendGrid(SendGridBackend):
    """The real backend, keeping every request body it builds (accepted by the fake or not).

    The `fake` fixture checks every one of them against SendGrid's official schema."""

    built: list[dict] = []  # every body of the current test

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.bodies: list[dict] = []

    def payload(self, batch):
        body = super().payload(batch)
        self.bodies.append(body)
        self.built.append(body)
        return body


@pytest.fixture(scope="module")
def schema():
    return load_mail_send_schema()


def test_the_official_schema_is_available(schema):
    assert schema is not None, "tsg_mail_v3.json is not in tests/fake_sendgrid/openapi/"
    assert schema.is_valid({"personalizations": []}) is False


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    RecordingSendGrid.built.clear()
    with FakeSendGrid() as server:
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        yield server
        # Every payload of the test, built here or sent by the CLI, against the official schema.
        accepted = [r["payload"] for r in server.accepted()]
        assert schema_problems(accepted + RecordingSendGrid.built) == []


@pytest.fixture
def sg_settings(workspace):
    # One request at a time: these tests follow the order of the fake's scripted answers
    # (several in flight: tests/test_send_concurrency.py).
    return configure(
        workspace,
        backend="sendgrid",
        batch_size=3,
        timeout=1,
        concurrency=1,
        sendgrid={"sync_suppressions": False},
    )


@pytest.fixture
def db(sg_settings):
    db = database(sg_settings)
    insert(db, "women@example.org", name="Wanda & Co", topics=["womens-health"])
    insert(db, "gone@example.org", topics="all", status="unsubscribed")
    add_many(db, 5)
    yield db
    db.close()


def send(settings, db, backend=None, sleeps=None, **kw):
    backend = backend or RecordingSendGrid(settings)
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return send_issue(settings, db, ISSUE, backend=backend, retry=QUICK, sleep=sleep, **kw)


def by_name(substitutions: dict[str, str]) -> dict[str, str]:
    """A personalization's substitutions by placeholder name (`name`, `name|html`...): the keys
    carry their render's nonce, `%%name|html|0123456789abcdef%%`, the same in every key."""
    names = {}
    nonces = set()
    for key, value in substitutions.items():
        match = re.fullmatch(r"%%([a-z_]+(?:\|html)?)\|([0-9a-f]{16})%%", key)
        assert match, key
        names[match[1]] = value
        nonces.add(match[2])
    assert len(nonces) == 1
    return names


def received_texts(fake) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for request in fake.accepted():
        text = request["payload"]["content"][0]["value"]
        for address in request["recipients"]:
            out.setdefault(address, []).append(text)
    return out


def test_example_issue_to_example_subscribers_through_sendgrid(run, workspace, fake):
    settings = configure(workspace, backend="sendgrid", batch_size=3)  # suppression sync on
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", ISSUE, "--yes", env=env)

    assert result.exit_code == 0, result.output
    db = database(settings)
    check_deliveries(settings, db, received_texts(fake))
    assert store.counts(db, ISSUE) == {"sent": len(fake.recipients())}
    listed = run("report", ISSUE, "--list", "sent").output.split()
    assert sorted(listed) == sorted(fake.recipients())
    assert len(fake.suppression_requests()) == 4  # SendGrid's suppressions pulled first

    bodies = [r["payload"] for r in fake.accepted()]
    for body in bodies:
        assert 1 <= len(body["personalizations"]) <= 3
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        assert body["categories"] == ["newsletter", ISSUE]
        assert body["tracking_settings"] == {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
        }
        assert body["from"] == {"email": settings.sender.email, "name": settings.sender.name}
        assert body["reply_to"] == {"email": str(settings.reply_to)}
        assert (
            body["subject"]
            == "MS Research Monthly, December 2026: therapies in pregnancy, gut bacteria and repair"
        )
        assert "asm" not in body and "mail_settings" not in body and "send_at" not in body
        for p in body["personalizations"]:
            [to] = p["to"]
            subscriber = get_row_by_email(db, to["email"])
            assert p["custom_args"] == {
                "newsletter_issue": ISSUE,
                "newsletter_subscriber": str(subscriber.id),
            }
            subs = by_name(p["substitutions"])
            unsubscribe = subs["unsubscribe_url"]
            assert unsubscribe.startswith(f"{settings.preferences_base}/unsubscribe/")
            assert p["headers"] == {
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
            name = subscriber.name or "reader"
            assert subs["name"] == name
            assert subs["name|html"] == html.escape(name, quote=True)
            assert set(subs) == {
                f"{f}{h}" for f in ("name", "topics", "preferences_url", "unsubscribe_url")
                for h in ("", "|html")
            }  # fmt: skip
    by_email = {p["to"][0]["email"]: p for b in bodies for p in b["personalizations"]}
    assert by_email["tom.baptiste@example.com"]["to"][0]["name"] == "Baptiste Tom"  # no ","
    assert by_name(by_email["sofia.rossi@example.org"]["substitutions"])["name|html"] == (
        "Sofia &quot;Sofi&quot; Rossi"
    )
    assert build_report(db, ISSUE).state == "sent"


def test_suppressions_pulled_before_the_send_keep_those_people_out(workspace, fake):
    settings = configure(workspace, backend="sendgrid", batch_size=3)  # sync on by default
    db = database(settings)
    add_many(db, 4)
    fake.set_suppressions("bounces", [{"email": "user1@example.org", "created": 1700000000}])

    result = send(settings, db)

    assert "user1@example.org" not in fake.recipients()
    assert len(fake.recipients()) == 3
    assert result.report.not_planned == {"bounced": 1}


def test_asm_group_is_sent_when_set(workspace, fake):
    settings = configure(
        workspace, backend="sendgrid", sendgrid={"asm_group_id": 4242, "sync_suppressions": False}
    )
    db = database(settings)
    add_many(db, 2)
    send(settings, db)
    [request] = fake.accepted()
    assert request["payload"]["asm"] == {"group_id": 4242}


def test_sandbox_mode_is_validated_by_sendgrid_and_recorded_nowhere(sg_settings, db, fake):
    backend = RecordingSendGrid(sg_settings, sandbox=True)
    result = send(sg_settings, db, backend, sandbox=True)

    assert result.sandbox and result.run.sent == 6
    assert fake.stats()["responses"] == {200: 3}  # SendGrid checked 3 requests, sent nothing
    assert fake.accepted() == []
    assert all(b["mail_settings"] == {"sandbox_mode": {"enable": True}} for b in backend.bodies)
    assert store.counts(db, ISSUE) == {} and store.get_send(db, ISSUE) is None


def test_a_scheduled_send_carries_send_at_and_a_batch_id(run, sg_settings, db, fake):
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)).replace(second=0, microsecond=0)
    at = when.strftime("%Y-%m-%dT%H:%MZ")
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", ISSUE, "--at", at, "--yes", env=env)

    assert result.exit_code == 0, result.output
    bodies = [r["payload"] for r in fake.accepted()]
    assert {b["send_at"] for b in bodies} == {int(when.timestamp())}
    [batch_id] = {b["batch_id"] for b in bodies}  # one SendGrid batch for the whole send
    send_row = store.get_send(db, ISSUE)
    assert send_row["batch_id"] == batch_id
    assert send_row["send_at"] == when.isoformat().replace("+00:00", "Z")
    assert "scheduled for" in run("report", ISSUE).output


def test_429_then_success_honours_retry_after(sg_settings, db, fake):
    fake.script([{"status": 429, "headers": {"Retry-After": "3"}}])
    sleeps = []
    backend = RecordingSendGrid(sg_settings)
    result = send(sg_settings, db, backend, sleeps=sleeps)
    assert sleeps == [3.0]
    assert result.report.state == "sent" and duplicates(fake.recipients()) == []
    assert sorted(fake.recipients()) == sorted(
        ["women@example.org"] + [f"user{i}@example.org" for i in range(5)]
    )


def test_503_three_times_then_success(sg_settings, db, fake):
    fake.script([{"status": 503}] * 3)
    sleeps = []
    result = send(sg_settings, db, sleeps=sleeps)
    assert sleeps == [0.5, 1.0, 2.0]  # exponential, capped by backoff_max
    assert result.report.state == "sent"
    assert len(fake.recipients()) == 6 and duplicates(fake.recipients()) == []
    first = fake.accepted()[0]["payload"]["personalizations"][0]["custom_args"]
    entry = store.get_entry(db, ISSUE, int(first["newsletter_subscriber"]))
    assert entry.attempts == 4


def test_400_stops_with_sendgrids_message(run, sg_settings, db, fake):
    message = "The from email does not contain a valid address."
    body = {"errors": [{"message": message, "field": "from.email", "help": None}]}
    fake.script([{"status": 400, "body": body}])
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", ISSUE, "--yes", env=env)

    assert result.exit_code == 1
    assert message in result.stderr and "(field from.email)" in result.stderr
    assert fake.recipients() == [] and fake.stats()["requests"] == 1
    counts = store.counts(db, ISSUE)
    assert counts["failed"] == 3 and counts["pending"] == 3
    failed = next(store.iter_entries(db, ISSUE, state="failed"))
    assert message in failed.reason


def test_a_real_validation_error_from_the_fake_is_a_rejected_payload(sg_settings, db, fake):
    class BadFrom(RecordingSendGrid):
        def payload(self, batch):
            body = super().payload(batch)
            body["from"] = {"email": "not an address"}
            return body

    with pytest.raises(PayloadRejected, match="from email does not contain a valid address"):
        send(sg_settings, db, BadFrom(sg_settings))
    RecordingSendGrid.built.clear()  # deliberately invalid: not one for the schema check


def test_401_stops_and_marks_nothing_sent_and_never_shows_the_key(run, sg_settings, db, fake):
    key = "SG.wrong-key-that-must-never-be-printed"
    env = {"SENDGRID_API_KEY": key, "SENDGRID_API_HOST": fake.url}

    result = run("send", ISSUE, "--yes", env=env)

    assert result.exit_code == 1
    assert "SendGrid refused the API key (401" in result.stderr
    assert key not in result.stdout + result.stderr
    assert fake.recipients() == []
    assert store.counts(db, ISSUE) == {"pending": 6}
    assert store.get_send(db, ISSUE)["state"] == "stopped"
    assert key not in repr(SendGridBackend(sg_settings, api_key=key))


def test_403_unverified_sender_stops(sg_settings, db, fake):
    fake.set_mode(forbidden=True)
    with pytest.raises(AuthenticationError, match="403.*verified"):
        send(sg_settings, db)
    assert store.counts(db, ISSUE) == {"pending": 6}


def test_500_is_unknown_and_never_resent_automatically(sg_settings, db, fake):
    fake.script([{"status": 500}])
    with pytest.raises(DeliveryError, match="answered 500"):
        send(sg_settings, db)
    assert store.counts(db, ISSUE) == {"unknown": 3, "pending": 3}
    send(sg_settings, db)
    assert len(fake.recipients()) == 3
    assert store.counts(db, ISSUE) == {"unknown": 3, "sent": 3}


def test_a_hung_request_becomes_unknown_within_the_timeout(sg_settings, db, fake):
    fake.script([{"hang": True, "seconds": 30}])
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="no answer from SendGrid within 1 s"):
        send(sg_settings, db)
    assert time.monotonic() - started < 8  # timeout is 1 s; nowhere near the 30 s hang
    assert store.counts(db, ISSUE) == {"unknown": 3, "pending": 3}
    assert fake.wait_for("completed", timeout=10)  # the fake saw us hang up


@pytest.mark.parametrize("accepted", [False, True])
def test_a_dropped_connection_is_unknown_whether_or_not_sendgrid_took_it(
    sg_settings, db, fake, accepted
):
    fake.script([{"drop": True, "accept": accepted}])
    with pytest.raises(DeliveryError, match="may or may not have been accepted"):
        send(sg_settings, db)
    assert store.counts(db, ISSUE) == {"unknown": 3, "pending": 3}
    unknown = {e.email for e in store.iter_entries(db, ISSUE, state="unknown")}
    send(sg_settings, db)  # resume: the unknown ones are left alone
    assert duplicates(fake.recipients()) == []
    assert unknown.isdisjoint(fake.recipients()) is (not accepted)


def test_connection_refused_is_retried_then_stops_with_everyone_pending(
    sg_settings, db, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    backend = RecordingSendGrid(sg_settings, api_key="SG.x", host=f"http://127.0.0.1:{free_port()}")
    sleeps = []
    with pytest.raises(DeliveryError, match="gave up on batch 1 after 4 attempts: cannot connect"):
        send(sg_settings, db, backend, sleeps=sleeps)
    assert len(sleeps) == 3 and backend.requests == 4
    assert store.counts(db, ISSUE) == {"pending": 6}


def test_no_api_key_is_refused_before_anything(run, sg_settings, db):
    result = run("send", ISSUE, "--yes")  # the run fixture unsets SENDGRID_API_KEY
    assert result.exit_code == 1
    assert "SENDGRID_API_KEY is not set" in result.stderr
    assert store.counts(db, ISSUE) == {} and store.get_send(db, ISSUE) is None


def test_retry_after_headers():
    now = 1_000_000.0
    assert retry_after_seconds({"Retry-After": "7"}, now) == 7.0
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, now) == 0.0
    date = "Mon, 12 Jan 1970 13:46:50 GMT"  # 1_000_010 seconds after the epoch
    assert retry_after_seconds({"Retry-After": date}, now) == 10.0
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) + 12)}, now) == 12.0
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None


def test_batches_never_exceed_1000_recipients_or_the_batch_size(sg_settings, fake):
    assert RecordingSendGrid(sg_settings).max_batch == 3
    big = sg_settings.model_copy(
        update={"delivery": sg_settings.delivery.model_copy(update={"batch_size": 1000})}
    )
    assert SendGridBackend(big).max_batch == 1000


def test_proofs_through_sendgrid(run, sg_settings, db, fake):
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
    result = run(
        "send", ISSUE, "--proof", "editor@example.org", "--topics", "gut-microbiome", env=env
    )
    assert result.exit_code == 0, result.output
    [request] = fake.accepted()
    body = request["payload"]
    assert request["recipients"] == ["editor@example.org"]
    assert body["subject"].startswith("[PROOF] ")
    assert body["personalizations"][0]["custom_args"] == {
        "newsletter_issue": ISSUE,
        "newsletter_proof": "true",
    }
    assert titles_in(body["content"][0]["value"], sg_settings) == [
        "Certain gut bacteria linked to more MS activity"
    ]
    assert store.counts(db, ISSUE) == {}
