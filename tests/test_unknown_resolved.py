"""Unknown rows resolved by the provider's own word (issue 12): a send killed with a request in
flight leaves its batch `unknown`; SendGrid's signed webhook events for those messages, posted
over HTTP to `newsletter serve`'s app, mark them `sent`; `send --retry-unknown` resends only what
is still unknown once `delivery.unknown_grace` has passed since the batch was submitted (at once
with `--now`); the report counts the rows so resolved. The SendGrid stand-in counts who got what.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time

import httpx
import pytest
import yaml

from newsletter.config import Settings
from newsletter.delivery import build_report, make_backend, send_issue, write_plan
from newsletter.delivery.unknowns import retry_unknown
from newsletter.sendgrid import custom_args
from newsletter.store import Database, open_database
from newsletter.store import ledger as store
from newsletter.store.migrations import MIGRATIONS
from newsletter.store.subscribers import insert
from newsletter.web import create_app
from tests.conftest import TEST_SECRET, serving
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, add_many, configure, duplicates, issue_summaries
from tests.support.paused_send import kill_with_a_request_in_flight
from tests.support.webhooks import make_key_pair, sign, signed_batch, signed_now

pytestmark = pytest.mark.both_engines

BATCH = 3
WAIT = 60  # a safety net for a broken test, never a means of synchronisation
EMAILS = [f"user{i}@example.org" for i in range(9)]  # three batches of three
HELD = re.compile(r"from (\S+Z)(?: \(all of them by (\S+Z)\))?, or at once with --now")


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
def keys():
    return make_key_pair()


@pytest.fixture
def settings(workspace, keys, monkeypatch):
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", keys[1])
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    # One request at a time: each crash here leaves exactly one batch in flight (several in
    # flight are test_resume's).
    return configure(
        workspace, backend="sendgrid", batch_size=BATCH, timeout=5, concurrency=1,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip


@pytest.fixture
def db(settings):
    database = open_database(settings)
    add_many(database, len(EMAILS))
    yield database
    database.close()


@pytest.fixture
def webhook(settings):
    """Post events to the webhook of `newsletter serve`'s app over HTTP, signed by `keys`."""
    with serving(create_app(settings)) as url, httpx.Client(trust_env=False) as client:

        def post(private, events, timestamp=None):
            body, headers = signed_batch(private, events, timestamp)
            return client.post(f"{url}/webhooks/sendgrid", content=body, headers=headers)

        post.client, post.url = client, url
        yield post


def sendgrid_env(fake) -> dict[str, str]:
    return {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}


def child_env(fake) -> dict[str, str]:
    """The environment of a send in another process: SendGrid's, the key, and the test's
    database when it is PostgreSQL (`database_url`)."""
    env = {**sendgrid_env(fake), "NEWSLETTER_SECRET_KEY": TEST_SECRET}
    if os.environ.get("NEWSLETTER_DATABASE_URL"):
        env["NEWSLETTER_DATABASE_URL"] = os.environ["NEWSLETTER_DATABASE_URL"]
    return env


def send(run, fake, *args):
    return run("send", ISSUE, "--yes", "--backend", "sendgrid", *args, env=sendgrid_env(fake))


def crash_and_resume(workspace, run, fake, accept: bool):
    """Kill a send with its second request in flight, then resume: that batch is `unknown`."""
    env = child_env(fake)
    kill_with_a_request_in_flight(workspace, fake, env, 1, accept)
    resumed = send(run, fake)
    assert resumed.exit_code == 0, resumed.output
    assert f"{BATCH} recipients were being submitted" in resumed.stderr


def unknown_rows(db) -> list[store.LedgerEntry]:
    return sorted(store.iter_entries(db, ISSUE, state="unknown"), key=lambda e: e.subscriber_id)


def event(kind: str, row, n: int, **extra) -> dict:
    """One SendGrid event about the message to `row` (a LedgerEntry or a subscriber)."""
    data = {
        "email": row.email,
        "timestamp": int(time.time()) - 30 + n,
        "event": kind,
        "sg_event_id": f"evt-{kind}-{row.email}-{n}",
        "sg_message_id": f"msg-{n}.filter",
        custom_args.ISSUE: ISSUE,
        custom_args.SUBSCRIBER: str(getattr(row, "subscriber_id", None) or row.id),
    }
    data.update(extra)
    return data


def event_time(data: dict) -> str:
    return dt.datetime.fromtimestamp(data["timestamp"], dt.UTC).isoformat().replace("+00:00", "Z")


def states(db) -> dict[int, tuple[str, str | None]]:
    """subscriber id → (state, reason) of every ledger row of the issue."""
    return {e.subscriber_id: (e.state, e.reason) for e in store.iter_entries(db, ISSUE)}


def eligible_at(stderr: str) -> tuple[str, str]:
    """(first, last) time the held unknown rows may be resent, as the send said them."""
    match = HELD.search(" ".join(stderr.split()))
    assert match, stderr
    return match.group(1), match.group(2) or match.group(1)


# --- The whole story, against the SendGrid stand-in ----------------------------------------------


def test_events_resolve_a_crashed_batch_and_nobody_gets_the_issue_twice(
    run, workspace, fake, db, webhook, keys
):
    crash_and_resume(workspace, run, fake, accept=True)  # SendGrid took it; the answer was lost
    assert sorted(fake.recipients()) == sorted(EMAILS)  # each once: the stand-in counts
    first, second, third = unknown_rows(db)
    delivered, processed = event("delivered", first, 1), event("processed", second, 2)

    response = webhook(keys[0], [delivered, processed])

    assert response.status_code == 200, response.text
    assert response.json()["unknown_resolved"] == 2
    rows = states(db)
    assert rows[first.subscriber_id] == (
        "sent",
        f"accepted: SendGrid reported 'delivered' at {event_time(delivered)}",
    )
    assert rows[second.subscriber_id] == (
        "sent",
        f"accepted: SendGrid reported 'processed' at {event_time(processed)}",
    )
    assert rows[third.subscriber_id][0] == "unknown"
    report = run("report", ISSUE)
    assert report.exit_code == 0
    assert "unknown, then reported by SendGrid's webhook (so sent, not resent): 2" in report.stdout
    assert re.search(r"│ sent +│ +8 │", report.stdout), report.stdout
    assert re.search(r"│ unknown +│ +1 │", report.stdout), report.stdout

    # Within the grace, --retry-unknown resends nobody, and says until when it waits.
    submitted_from = utc_now()  # no later than now: the batch went out before
    held = send(run, fake, "--retry-unknown")
    assert held.exit_code == 0, held.output
    text = " ".join(held.stderr.split())
    assert "1 unknown recipient was submitted less than 1 h ago" in text
    first_at, last_at = eligible_at(held.stderr)
    assert first_at == last_at and utc(first_at) <= submitted_from + dt.timedelta(hours=1)
    assert utc(first_at) > submitted_from + dt.timedelta(minutes=59)  # submitted a moment ago
    assert sorted(fake.recipients()) == sorted(EMAILS)

    # SendGrid's word about the third arrives late (a blocked bounce: it had the message).
    late = webhook(keys[0], [event("bounce", third, 3, type="blocked", reason="421 try later")])
    assert late.json()["unknown_resolved"] == 1

    done = send(run, fake, "--retry-unknown")
    assert done.exit_code == 0, done.output
    received = fake.recipients()
    assert duplicates(received) == [] and sorted(received) == sorted(EMAILS)
    assert store.get_send(db, ISSUE)["state"] == "sent"
    assert "(so sent, not resent): 3" in done.stdout


def test_events_that_come_before_the_resume_are_applied_when_it_recovers_the_batch(
    run, workspace, fake, db, webhook, keys
):
    """SendGrid reports a crashed send's messages within seconds, while their rows are still
    `submitting` (nobody has run `send` again): the word is kept, and the resume that recovers
    the batch records those rows `sent` instead of `unknown`."""
    env = child_env(fake)
    kill_with_a_request_in_flight(workspace, fake, env, 1, accept=True)
    first, second, third = sorted(
        store.iter_entries(db, ISSUE, state="submitting"), key=lambda e: e.subscriber_id
    )
    events = [event("processed", first, 1), event("delivered", first, 2)]
    events.append(event("deferred", second, 3))
    before = states(db)

    response = webhook(keys[0], events)

    assert response.json()["noted_in_flight"] == 2 and response.json()["unknown_resolved"] == 0
    assert states(db) == before  # a submitting row keeps its state
    resumed = send(run, fake)
    assert resumed.exit_code == 0, resumed.output
    rows = states(db)
    assert rows[first.subscriber_id] == (
        "sent",
        f"accepted: SendGrid reported 'processed' at {event_time(events[0])}",
    )
    assert rows[second.subscriber_id][0] == "sent"
    assert rows[third.subscriber_id][0] == "unknown"
    assert "(so sent, not resent): 2" in resumed.stdout
    done = send(run, fake, "--retry-unknown", "--now")
    assert [r["recipients"] for r in fake.accepted()[-1:]] == [[third.email]]
    assert duplicates(fake.recipients()) == [third.email]  # SendGrid had it: --now's price
    assert done.exit_code == 0 and store.get_send(db, ISSUE)["state"] == "sent"


def test_retry_unknown_now_resends_only_what_is_still_unknown(
    run, workspace, fake, db, webhook, keys
):
    crash_and_resume(workspace, run, fake, accept=True)
    first, second, third = unknown_rows(db)
    webhook(keys[0], [event("deferred", first, 1), event("dropped", second, 2, reason="x")])
    requests_before = len(fake.accepted())

    result = send(run, fake, "--retry-unknown", "--now")

    assert result.exit_code == 0, result.output
    assert "held" not in result.stderr and "unknown_grace" not in result.stderr
    new = fake.accepted()[requests_before:]
    assert [r["recipients"] for r in new] == [[third.email]]
    received = fake.recipients()
    # The ones SendGrid vouched for got the issue once; the third, still unknown, is resent
    # at once because the editor asked for it with --now (SendGrid had in fact taken it).
    assert duplicates(received) == [third.email]
    assert store.get_send(db, ISSUE)["state"] == "sent"


def test_after_the_grace_the_rest_is_resent_and_not_a_second_before(
    run, workspace, fake, db, settings, monkeypatch
):
    crash_and_resume(workspace, run, fake, accept=False)  # SendGrid never took the batch
    unknown = [e.email for e in unknown_rows(db)]
    assert len(unknown) == BATCH and set(unknown).isdisjoint(fake.recipients())
    held = send(run, fake, "--retry-unknown")
    _, last = eligible_at(held.stderr)
    requests = len(fake.accepted())
    for name, value in sendgrid_env(fake).items():
        monkeypatch.setenv(name, value)

    def send_at(moment: dt.datetime):
        backend = make_backend("sendgrid", settings)
        return send_issue(
            settings, db, ISSUE, backend=backend, retry_unknown=True, clock=lambda: moment
        )

    early = send_at(utc(last) - dt.timedelta(seconds=1))
    assert early.run.retried_unknown == 0 and len(fake.accepted()) == requests

    on_time = send_at(utc(last))

    assert on_time.run.retried_unknown == BATCH
    received = fake.recipients()
    assert duplicates(received) == [] and sorted(received) == sorted(EMAILS)
    assert on_time.report.state == "sent"


def test_the_grace_is_a_setting(run, workspace, fake, db):
    crash_and_resume(workspace, run, fake, accept=False)
    configure(workspace, unknown_grace="90m")
    before = utc_now()

    held = send(run, fake, "--retry-unknown")

    assert "submitted less than 90 min ago" in " ".join(held.stderr.split())
    first, _ = eligible_at(held.stderr)
    assert utc(first) <= before + dt.timedelta(minutes=90)
    configure(workspace, unknown_grace=0)
    assert send(run, fake, "--retry-unknown").exit_code == 0
    assert sorted(fake.recipients()) == sorted(EMAILS)


@pytest.mark.sqlite_only("the setting and the command line: no database involved")
@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 3600), (600, 600), ("90m", 5400), ("1h30m", 5400), ("2d", 172800), ("0", 0)],
)
def test_the_grace_reads_as_seconds_or_a_duration(settings, value, seconds):
    data = settings.model_dump() | {"base_dir": settings.base_dir}
    if value is not None:
        data["delivery"] = data["delivery"] | {"unknown_grace": value}
    read = Settings(**data)
    assert read.delivery.unknown_grace == dt.timedelta(seconds=seconds)
    again = Settings(**(read.model_dump() | {"base_dir": settings.base_dir}))  # validated again
    assert again.delivery.unknown_grace == read.delivery.unknown_grace


@pytest.mark.sqlite_only("the setting and the command line: no database involved")
@pytest.mark.parametrize("value", ["soon", "-5", "8d", "1h and a bit"])
def test_a_bad_grace_is_named(run, workspace, value):
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["delivery"]["unknown_grace"] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    result = run("report", ISSUE)

    assert result.exit_code == 1
    assert f"newsletter.yaml: field 'delivery.unknown_grace': {value!r} is" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.sqlite_only("the setting and the command line: no database involved")
def test_now_needs_retry_unknown(run):
    result = run("send", ISSUE, "--now", "--yes")
    assert result.exit_code == 2
    assert "use it with --retry-unknown" in result.stderr


# --- Only unknown rows, only our own, only signed ---------------------------------------------


@pytest.fixture
def ledger(settings, db):
    """Rows of the issue in each state, made as a send makes them: subscriber → its row."""
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    owner = "elsewhere:1:running"  # a send in another process
    assert store.try_lock(db, ISSUE, owner, "sendgrid", lambda o, a: False) is None
    key = store.pending_segments(db, ISSUE)[0][0]
    claimed = []
    for batch_no in (1, 2, 3):
        rows, _ = store.claim(db, ISSUE, key, 2, batch_no, owner)
        claimed.append([r.subscriber_id for r in rows])
    store.move_state(db, ISSUE, store.SUBMITTING, store.UNKNOWN, "in flight when it stopped")
    unknown, sent, failed = claimed
    store.record(db, ISSUE, sent={sent[0]: "msg-a", sent[1]: "msg-b"})
    store.record(db, ISSUE, failed={failed[0]: "550 refused", failed[1]: "550 refused"})
    rows, _ = store.claim(db, ISSUE, key, 1, 4, owner)  # in flight now
    entries = {e.subscriber_id: e for e in store.iter_entries(db, ISSUE)}
    by_state: dict[str, list] = {}
    for entry in entries.values():
        by_state.setdefault(entry.state, []).append(entry)
    assert {k: len(v) for k, v in by_state.items()} == {
        "unknown": 2,
        "sent": 2,
        "failed": 2,
        "submitting": 1,
        "pending": 2,
    }
    return by_state


def test_events_for_rows_that_are_not_unknown_change_nothing(db, ledger, webhook, keys):
    stranger = insert(db, "stranger@example.org")  # on the list, but no row for this issue
    events = []
    for n, entry in enumerate(ledger["sent"] + ledger["failed"] + ledger["submitting"]):
        events.append(event("delivered", entry, n))
    for n, entry in enumerate(ledger["pending"]):
        events.append(event("processed", entry, 10 + n))
    events.append(event("delivered", stranger, 20))
    other_issue = event("delivered", ledger["unknown"][0], 21, newsletter_issue="2026-11")
    nobody = event("processed", ledger["unknown"][0], 22, newsletter_subscriber="987654")
    no_args = {
        k: v
        for k, v in event("delivered", ledger["unknown"][1], 23).items()
        if "newsletter" not in k
    }
    not_proof = [event(kind, ledger["unknown"][0], 30 + n) for n, kind in enumerate(
        ["open", "click", "spamreport", "unsubscribe", "group_unsubscribe"]
    )]  # fmt: skip
    before = states(db)

    response = webhook(keys[0], events + [other_issue, nobody, no_args] + not_proof)

    assert response.status_code == 200, response.text
    assert response.json()["unknown_resolved"] == 0
    assert states(db) == before
    assert store.get_entry(db, ISSUE, ledger["sent"][0].subscriber_id).reason is None


def test_word_for_a_row_in_flight_applies_if_its_request_ends_unknown(db, ledger, webhook, keys):
    """A request that times out (outcome unknown) after SendGrid already reported it."""
    row = ledger["submitting"][0]
    response = webhook(keys[0], [event("delivered", row, 1)])
    assert response.json()["noted_in_flight"] == 1
    assert store.get_entry(db, ISSUE, row.subscriber_id).state == "submitting"

    store.record(db, ISSUE, unknown={row.subscriber_id: "no answer within 30 s"})

    entry = store.get_entry(db, ISSUE, row.subscriber_id)
    assert entry.state == "sent"
    assert entry.reason.startswith("accepted: SendGrid reported 'delivered' at ")
    assert build_report(db, ISSUE).unknown_resolved == 1


def test_a_replay_is_harmless(db, ledger, webhook, keys):
    row = ledger["unknown"][0]
    events = [event("processed", row, 1), event("delivered", row, 2)]
    first = webhook(keys[0], events)
    assert (
        first.json()["unknown_resolved"] == 1
    )  # the first proof resolves it; the second finds it sent
    after_first = states(db)
    assert after_first[row.subscriber_id][1].startswith("accepted: SendGrid reported 'processed'")

    again = webhook(keys[0], events, timestamp=signed_now(30))  # SendGrid's retry

    assert again.status_code == 200
    assert again.json()["replayed"] == 2 and again.json()["unknown_resolved"] == 0
    assert states(db) == after_first
    later = webhook(keys[0], [event("deferred", row, 3)])  # another event, same message
    assert later.json()["unknown_resolved"] == 0 and states(db) == after_first
    assert build_report(db, ISSUE).unknown_resolved == 1


@pytest.mark.parametrize("forgery", ["unsigned", "other key", "body changed"])
def test_unsigned_or_forged_events_are_refused(db, ledger, webhook, keys, forgery):
    row = ledger["unknown"][0]
    body, headers = signed_batch(keys[0], [event("delivered", row, 1)])
    if forgery == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif forgery == "other key":
        other, _ = make_key_pair()
        headers["X-Twilio-Email-Event-Webhook-Signature"] = sign(
            other, body, headers["X-Twilio-Email-Event-Webhook-Timestamp"]
        )
    else:
        body = json.dumps([event("delivered", ledger["unknown"][1], 1)]).encode()
    before = states(db)

    response = webhook.client.post(
        f"{webhook.url}/webhooks/sendgrid", content=body, headers=headers
    )

    assert response.status_code == 403
    assert states(db) == before


# --- The submit time, and databases from before it was kept ---------------------------------------


@pytest.mark.sqlite_only("a SQLite file from an earlier release upgrades itself on opening")
def test_a_database_from_before_submit_times_upgrades_and_its_unknown_rows_still_wait(
    tmp_path, monkeypatch
):
    """Migration 4 adds `ledger.submitted_at`: every row survives; an `unknown` row from before
    has no submit time and waits the grace from when it became unknown (no earlier)."""
    import newsletter.store as store_package

    path = tmp_path / "old.db"
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS[:3])
    with Database(path) as old:
        ids = [insert(old, f"p{i}@example.org").id for i in range(3)]
        with old.transaction():
            old.conn.executemany(
                "INSERT INTO ledger (issue_id, subscriber_id, segment, state, reason, "
                "provider_id, batch_no, updated_at) VALUES ('2026-12', ?, 'a', ?, ?, ?, 1, ?)",
                [
                    (ids[0], "sent", None, "msg-1", "2026-11-30T08:00:00Z"),
                    (ids[1], "unknown", "in flight", None, "2026-11-30T08:00:00Z"),
                    (ids[2], "unknown", "in flight", None, "2026-11-30T09:30:00Z"),
                ],
            )
        columns = (
            "issue_id, subscriber_id, segment, state, reason, provider_id, batch_no, updated_at"
        )
        before = old.conn.execute(f"SELECT {columns} FROM ledger ORDER BY subscriber_id").fetchall()
        before = [tuple(r) for r in before]
    monkeypatch.setattr(store_package, "MIGRATIONS", MIGRATIONS)
    with Database(path) as new:
        assert new.schema_version() == len(MIGRATIONS) >= 4
        after = new.conn.execute(f"SELECT {columns} FROM ledger ORDER BY subscriber_id")
        assert [tuple(r) for r in after] == before

        result = retry_unknown(new, ISSUE, dt.timedelta(hours=1), now=utc("2026-11-30T10:00:00Z"))

        assert (result.retried, result.held) == (1, 1)
        assert result.first_eligible == result.last_eligible == "2026-11-30T10:30:00Z"
        assert store.get_entry(new, ISSUE, ids[1]).state == "pending"
        assert store.get_entry(new, ISSUE, ids[2]).state == "unknown"
        assert store.get_entry(new, ISSUE, ids[0]).state == "sent"


def test_the_grace_runs_from_the_last_submission_not_from_when_the_row_became_unknown(
    settings, db, monkeypatch
):
    """The claim stamps the submit time, a retry stamps it again, and recovering the row as
    `unknown` later does not move it. The store's clock is set by hand for each step."""
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    owner = "elsewhere:1:x"
    store.try_lock(db, ISSUE, owner, "sendgrid", lambda o, a: False)
    key = store.pending_segments(db, ISSUE)[0][0]
    clock = {"now": "2026-11-30T09:00:00Z"}
    monkeypatch.setattr(store, "now", lambda: clock["now"])
    first, _ = store.claim(db, ISSUE, key, 2, 1, owner)
    second, _ = store.claim(db, ISSUE, key, 2, 2, owner)
    clock["now"] = "2026-11-30T09:20:00Z"
    store.add_attempt(db, ISSUE, [r.subscriber_id for r in second])  # submitted again: a retry
    clock["now"] = "2026-11-30T09:40:00Z"
    store.move_state(db, ISSUE, store.SUBMITTING, store.UNKNOWN, "in flight when it stopped")
    grace = dt.timedelta(hours=1)

    held = retry_unknown(db, ISSUE, grace, now=utc("2026-11-30T09:59:59Z"))

    assert (held.retried, held.held) == (0, 4)
    assert (held.first_eligible, held.last_eligible) == (
        "2026-11-30T10:00:00Z",
        "2026-11-30T10:20:00Z",
    )
    on_time = retry_unknown(db, ISSUE, grace, now=utc("2026-11-30T10:00:00Z"))
    assert (on_time.retried, on_time.held) == (2, 2)
    assert {store.get_entry(db, ISSUE, r.subscriber_id).state for r in first} == {"pending"}
    assert {store.get_entry(db, ISSUE, r.subscriber_id).state for r in second} == {"unknown"}
    rest = retry_unknown(db, ISSUE, grace, now=utc("2026-11-30T10:20:00Z"))
    assert (rest.retried, rest.held) == (2, 0)
