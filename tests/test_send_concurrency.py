"""Several batches in flight at once (`delivery.concurrency`): each batch is `submitting` in the
ledger before its request leaves, nobody is in two batches or sent twice, a provider's "wait"
holds every sender back, a refused request stops the claims while the batches in flight land
and are recorded, and Ctrl-C records what is in flight.

In-process, with `SlotBackend` (one instance a slot, calls held until the test lets them go)
and with the local SendGrid stand-in and the real client. Waits go through the injected clock
and sleep; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from newsletter.delivery import Observers, RetryPolicy, SendObserver, send_issue
from newsletter.delivery.backends import in_flight_backends
from newsletter.errors import AuthenticationError, PayloadRejected, TemporaryFailure
from newsletter.store import ledger as store
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import (
    ISSUE,
    SlotBackend,
    add_many,
    configure,
    database,
    duplicates,
    ledger_states,
    schema_problems,
)

pytestmark = pytest.mark.both_engines

WAIT = 30  # a safety net for a broken test, never a means of synchronisation
NO_JITTER = RetryPolicy(max_attempts=5, base=1.0, maximum=60.0, rand=lambda: 0.0)
EVERYONE = [f"user{i}@example.org" for i in range(15)]  # 5 batches of 3


class FakeTime:
    """A monotonic clock that moves only when someone sleeps; every sleep is noted."""

    def __init__(self):
        self.now = 0.0
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


class Heard(SendObserver):
    """Sets events when the send tells something (the observer is called on the main thread)."""

    def __init__(self):
        self.retrying_batches: list[int] = []
        self.retry = threading.Event()
        self.refused = threading.Event()
        self.interrupted = threading.Event()
        self.recorded_counts: list[int] = []

    def retrying(self, batch_no, attempt, delay, reason):
        self.retrying_batches.append(batch_no)
        self.retry.set()

    def batch_done(self, sent, skipped, failed, unknown):
        if not sent and not skipped:  # a batch of which nothing was accepted has landed
            self.refused.set()

    def warn(self, message):
        if message.startswith("interrupted"):
            self.interrupted.set()

    def recorded(self, batches):
        self.recorded_counts.append(batches)


@pytest.fixture
def settings(workspace):
    return configure(workspace, batch_size=3, concurrency=3)


@pytest.fixture
def db(settings):
    db = database(settings)
    add_many(db, len(EVERYONE))
    yield db
    db.close()


def send(settings, db, backend, **kw):
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("retry", NO_JITTER)
    return send_issue(settings, db, ISSUE, backend=backend, **kw)


def states_by_batch(db) -> dict[int, set[str]]:
    """batch number → the states of its rows (rows never claimed have none)."""
    found: dict[int, set[str]] = {}
    for entry in store.iter_entries(db, ISSUE):
        if entry.batch_no is not None:
            found.setdefault(entry.batch_no, set()).add(entry.state)
    return found


def all_three_under_way(shared) -> bool:
    return shared.most_under_way >= 3


def test_three_batches_in_flight_each_submitting_first_and_everyone_sent_once(settings, db):
    seen_submitting = []
    looked = threading.Event()

    def act(backend, batch, attempt, result):
        if batch.number <= 3:  # hold the first three until all three are under way
            assert backend.wait_for(all_three_under_way, WAIT)
            if batch.number == 1:
                # What a crash now would leave: the three batches marked, committed.
                other = database(settings)
                seen_submitting.append(store.counts(other, ISSUE).get("submitting", 0))
                other.close()
                looked.set()
            else:  # answered only after that look, or their rows would already be `sent`
                assert looked.wait(WAIT)

    backend = SlotBackend(act)
    result = send(settings, db, backend)

    shared = backend.shared
    assert shared.most_under_way == 3  # never more than `concurrency`
    assert shared.instances == 3 and not shared.reentered  # one backend a slot
    assert seen_submitting == [9]
    received = [e for e in shared.received]
    assert duplicates(received) == [] and len(received) == len(EVERYONE)
    assert set(ledger_states(db).values()) == {"sent"}
    assert result.run.sent == len(EVERYONE) and result.run.batches == 5
    assert result.report.state == "sent"
    batch_nos = db.conn.execute(
        "SELECT batch_no, count(*) FROM ledger WHERE issue_id = ? GROUP BY batch_no", (ISSUE,)
    ).fetchall()
    assert sorted(tuple(r) for r in batch_nos) == [(n, 3) for n in range(1, 6)]


def test_concurrency_one_sends_one_batch_at_a_time_on_one_backend(workspace):
    settings = configure(workspace, batch_size=3, concurrency=1)
    db = database(settings)
    add_many(db, len(EVERYONE))
    backend = SlotBackend()
    send(settings, db, backend)
    assert backend.shared.most_under_way == 1 and backend.shared.instances == 1
    assert [b for b, _, _ in backend.shared.calls] == [1, 2, 3, 4, 5]
    assert set(ledger_states(db).values()) == {"sent"}
    db.close()


@pytest.mark.sqlite_only("which backends fill the slots: no database involved")
def test_slots_per_backend(workspace):
    settings = configure(workspace, concurrency=4, smtp={"connections": 2})
    from newsletter.delivery.backends.outbox import OutboxBackend
    from newsletter.delivery.backends.sendgrid import SendGridBackend
    from newsletter.delivery.backends.smtp import SmtpBackend

    assert len(in_flight_backends(SlotBackend(), settings)) == 4
    smtp = in_flight_backends(SmtpBackend(settings, password=""), settings)
    assert len(smtp) == 2 and len({id(b) for b in smtp}) == 2
    assert len(in_flight_backends(OutboxBackend(settings), settings)) == 1  # files: one at a time
    sendgrid = in_flight_backends(
        SendGridBackend(settings, api_key=TEST_API_KEY, host="http://127.0.0.1:9"), settings
    )
    assert len({id(b.client) for b in sendgrid}) == 4  # each its own client
    assert {(b.host, b.client.api_key) for b in sendgrid} == {("http://127.0.0.1:9", TEST_API_KEY)}
    fewer = configure(workspace, concurrency=1, smtp={"connections": 2})
    assert len(in_flight_backends(SmtpBackend(fewer, password=""), fewer)) == 1


def test_a_providers_wait_holds_back_every_sender(workspace):
    """Batch 1 is told to wait 30 s (429 with Retry-After); batch 2, in flight beside it, then
    fails with a plain 503 (its own backoff: 0.5 s). Batch 2 still tries again only once the
    30 s are over, and so does every later request."""
    settings = configure(workspace, batch_size=3, concurrency=2)
    db = database(settings)
    add_many(db, len(EVERYONE))
    clock = FakeTime()
    heard = Heard()
    batch2_retried = threading.Event()

    def act(backend, batch, attempt, result):
        if batch.number == 1 and attempt == 1:
            assert backend.wait_for(lambda s: any(b == 2 for b, _, _ in s.calls), WAIT)
            raise TemporaryFailure("429 too many requests", retry_after=30)
        if batch.number == 2 and attempt == 1:
            assert heard.retry.wait(WAIT)  # batch 1's wait was heard
            raise TemporaryFailure("503 service unavailable")
        if batch.number == 2 and attempt == 2:
            batch2_retried.set()

    def sleep(seconds):
        if seconds == 30:  # batch 1's own wait ends only after batch 2 tried again
            assert batch2_retried.wait(WAIT)
        clock.sleep(seconds)

    backend = SlotBackend(act, clock=clock.clock)
    result = send(settings, db, backend, sleep=sleep, monotonic=clock.clock, observer=heard)

    calls = backend.shared.calls
    later = [(b, a, t) for b, a, t in calls if (b, a) not in ((1, 1), (2, 1))]
    retry_of_2 = next(t for b, a, t in calls if (b, a) == (2, 2))
    assert retry_of_2 >= 30  # not after its own 0.5 s
    assert 0.5 in clock.sleeps and 30 in clock.sleeps
    assert all(t >= 30 for _, _, t in later), later
    assert sorted(heard.retrying_batches) == [1, 2]
    assert duplicates(backend.shared.received) == []
    assert len(backend.shared.received) == len(EVERYONE)
    assert result.report.state == "sent" and result.run.attempts == 7


@pytest.mark.parametrize(
    "refusal, state",
    [
        (PayloadRejected("SendGrid refused the request (400): bad from"), "failed"),
        (AuthenticationError("SendGrid refused the API key (401)"), "pending"),
    ],
    ids=["400", "401"],
)
def test_a_refused_request_stops_the_send_and_the_batches_in_flight_are_recorded(
    settings, db, refusal, state
):
    """Three batches in flight: batch 2 is refused; batch 1 is accepted after that, batch 3
    is waiting to retry (a 503) when the stop comes. Nothing more is claimed."""
    heard = Heard()

    def act(backend, batch, attempt, result):
        assert attempt > 1 or backend.wait_for(all_three_under_way, WAIT)
        if batch.number == 2:
            raise refusal
        assert heard.refused.wait(WAIT)  # batch 2's refusal is recorded
        if batch.number == 3 and attempt == 1:
            raise TemporaryFailure("503 service unavailable")

    stopped_waits = []

    def sleep(seconds):  # batch 3's wait: over once the send has stopped
        stopped_waits.append(seconds)

    backend = SlotBackend(act)
    with pytest.raises(type(refusal)) as raised:
        send(settings, db, backend, sleep=sleep, observer=heard)

    assert "the send stopped" in str(raised.value)
    by_batch = states_by_batch(db)
    assert by_batch[1] == {"sent"}
    assert by_batch[2] == {state}
    assert by_batch[3] in ({"pending"}, {"sent"})  # sent only if its retry began before the stop
    assert store.counts(db, ISSUE).get("submitting", 0) == 0
    assert {b for b, _, _ in backend.shared.calls} == {1, 2, 3}  # no claim after the stop
    counts = store.counts(db, ISSUE)
    assert counts["sent"] == len(backend.shared.received)
    assert counts.get("pending", 0) >= len(EVERYONE) - 9
    assert store.get_send(db, ISSUE)["state"] == "stopped"


def test_ctrl_c_stops_claiming_and_records_the_batches_in_flight(settings, db):
    """Ctrl-C arrives while three batches are in flight (here: when the main thread hears that
    batch 1 waits to retry a 503): no more claims; batches 2 and 3 land afterwards and are
    recorded sent; batch 1's wait ends at once and its recipients go back to pending."""
    heard = Heard()

    class CtrlC(Heard):
        def retrying(self, batch_no, attempt, delay, reason):
            raise KeyboardInterrupt

    def act(backend, batch, attempt, result):
        assert backend.wait_for(all_three_under_way, WAIT)
        if batch.number == 1:
            raise TemporaryFailure("503 service unavailable")
        assert heard.interrupted.wait(WAIT)  # they answer once the send has heard it

    backend = SlotBackend(act)
    observer = Observers(heard, CtrlC())
    with pytest.raises(KeyboardInterrupt):
        send(settings, db, backend, observer=observer, sleep=time.sleep)

    assert [(b, a) for b, a, _ in backend.shared.calls if b == 1] == [(1, 1)]  # not retried
    assert {b for b, _, _ in backend.shared.calls} == {1, 2, 3}  # no claim after Ctrl-C
    assert states_by_batch(db) == {1: {"pending"}, 2: {"sent"}, 3: {"sent"}}
    assert store.counts(db, ISSUE) == {"sent": 6, "pending": len(EVERYONE) - 6}
    assert store.get_send(db, ISSUE)["state"] == "stopped"
    again = send(settings, db, SlotBackend())
    assert again.run.sent == len(EVERYONE) - 6 and again.report.state == "sent"


def test_ctrl_c_marks_unknown_what_does_not_answer_within_the_timeout(workspace):
    settings = configure(workspace, batch_size=3, concurrency=2, timeout=0.2)
    db = database(settings)
    add_many(db, 9)
    main = threading.main_thread().ident
    release = threading.Event()

    def act(backend, batch, attempt, result):
        assert backend.wait_for(lambda s: s.most_under_way >= 2, WAIT)
        if batch.number == 1:
            signal.pthread_kill(main, signal.SIGINT)
        release.wait(WAIT)  # held past the send's wait for them

    backend = SlotBackend(act)
    try:
        with pytest.raises(KeyboardInterrupt):
            send(settings, db, backend)
    finally:
        release.set()
    assert store.counts(db, ISSUE) == {"unknown": 6, "pending": 3}
    reasons = store.reasons(db, ISSUE, "unknown")
    assert list(reasons) == [
        "no answer within 0.2 s after the send was stopped: may or may not have been sent"
    ]
    db.close()


# With the SendGrid stand-in and the real client ---------------------------------------------


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid() as server:
        yield server
        assert schema_problems([r["payload"] for r in server.accepted()]) == []


@pytest.fixture
def sendgrid(workspace, fake, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", fake.url)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    settings = configure(
        workspace, backend="sendgrid", batch_size=3, concurrency=3, timeout=5,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 30)
    yield settings, db
    db.close()


def test_stand_in_everyone_once_with_three_in_flight(sendgrid, fake):
    settings, db = sendgrid
    result = send_issue(settings, db, ISSUE, backend="sendgrid", retry=NO_JITTER)
    received = fake.recipients()
    assert duplicates(received) == []
    assert sorted(received) == sorted(f"user{i}@example.org" for i in range(30))
    assert fake.stats()["requests"] == 10
    assert result.report.state == "sent"
    ids = db.conn.execute("SELECT DISTINCT provider_id FROM ledger").fetchall()
    assert len(ids) == 10  # each batch under its own request's X-Message-Id


def test_stand_in_429_with_retry_after_waits_and_sends_everyone_once(sendgrid, fake):
    settings, db = sendgrid
    fake.script([{"status": 429, "headers": {"Retry-After": "7"}}])
    fake_time = FakeTime()
    heard = Heard()
    result = send_issue(
        settings, db, ISSUE, backend="sendgrid", retry=NO_JITTER,
        sleep=fake_time.sleep, monotonic=fake_time.clock, observer=heard,
    )  # fmt: skip
    assert fake_time.sleeps[0] == 7 and sum(fake_time.sleeps) >= 7
    assert len(heard.retrying_batches) == 1
    received = fake.recipients()
    assert duplicates(received) == [] and len(received) == 30
    assert fake.stats()["requests"] == 11 and result.report.state == "sent"


def test_stand_in_400_stops_and_the_other_batches_in_flight_are_recorded(sendgrid, fake):
    settings, db = sendgrid
    fake.script([{"status": 400}])
    with pytest.raises(PayloadRejected):
        send_issue(settings, db, ISSUE, backend="sendgrid", retry=NO_JITTER)
    counts = store.counts(db, ISSUE)
    requests = fake.stats()["requests"]
    # The send stopped before the end: batches that were answered before the 400 landed may
    # have freed their slots for others, so how many went out depends on the threads' timing.
    assert 1 <= requests < 10
    assert counts["failed"] == 3
    assert counts.get("sent", 0) == len(fake.recipients()) == (requests - 1) * 3
    assert counts["pending"] == 30 - 3 * requests
    assert "submitting" not in counts and "unknown" not in counts
