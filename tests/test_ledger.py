"""The ledger and the send loop, with a scripted backend: states, claims, retries, stops,
recovery after a crash, the lock, and the report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from newsletter.delivery import (
    OutcomeUnknown,
    RetryPolicy,
    SendLock,
    SendObserver,
    SendRefused,
    TemporaryFailure,
    build_report,
    list_entries,
    send_issue,
)
from newsletter.delivery import plan as planning
from newsletter.delivery.lock import abandoned
from newsletter.delivery.message import Personalizer
from newsletter.errors import (
    AuthenticationError,
    CheckFailed,
    DeliveryError,
    PayloadRejected,
    SendLocked,
)
from newsletter.store import ledger as store
from newsletter.store import open_database
from newsletter.store.events import record_delivery
from newsletter.store.subscribers import get_row_by_email, iter_subscribers, write_status
from newsletter.tokens import LinkSigner
from tests.support.delivery import (
    ELIGIBLE,
    ISSUE,
    ScriptedBackend,
    add_many,
    add_people,
    database,
    duplicates,
    ledger_states,
)

NO_JITTER = RetryPolicy(max_attempts=4, base=1.0, maximum=8.0, rand=lambda: 1.0)
EVERYONE = ELIGIBLE + [f"user{i}@example.org" for i in range(5)]

pytestmark = pytest.mark.both_engines


@pytest.fixture
def db(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    db = database(settings)
    add_people(db)
    add_many(db, 5)  # the "all" segment has 7 people: batches of 3, 3 and 1
    yield db
    db.close()


def send(settings, db, backend, **kw):
    kw.setdefault("sleep", kw.pop("sleeps", []).append if "sleeps" in kw else lambda s: None)
    kw.setdefault("retry", NO_JITTER)
    return send_issue(settings, db, ISSUE, backend=backend, **kw)


def emails(db, ids):
    rows = db.conn.execute("SELECT id, email FROM subscribers").fetchall()
    by_id = {r[0]: r[1] for r in rows}
    return [by_id[i] for i in ids]


def test_everyone_eligible_is_sent_once_in_batches_and_the_issue_is_marked_sent(settings, db):
    backend = ScriptedBackend(max_batch=3)
    result = send(settings, db, backend)

    assert sorted(emails(db, backend.received)) == sorted(EVERYONE)
    assert all(len(call) <= 3 for call in backend.calls) and len(backend.calls[0]) == 3
    assert backend.opened == backend.closed == 1
    states = ledger_states(db)
    assert {states[e] for e in EVERYONE} == {"sent"}
    assert states["retired@example.org"] == "skipped"
    assert result.run.sent == len(EVERYONE)
    assert result.report.state == "sent" and result.report.complete
    send_row = store.get_send(db, ISSUE)
    assert send_row["state"] == "sent" and send_row["lock_owner"] is None
    assert send_row["finished_at"]
    assert store.has_rows(db, ISSUE)
    # Each batch carries one segment's email; the provider id is kept per row.
    entry = next(list_entries(db, ISSUE, "sent"))
    assert entry.provider_id.startswith("msg-") and entry.attempts == 1


def test_a_sent_issue_is_not_sent_again(settings, db):
    send(settings, db, ScriptedBackend())
    backend = ScriptedBackend()
    with pytest.raises(DeliveryError, match="was sent in full"):
        send(settings, db, backend)
    assert backend.calls == []


def test_a_batch_is_committed_as_submitting_before_the_provider_is_called(settings, db):
    seen = []

    def look_from_another_connection(batch, result):
        other = open_database(settings)
        ids = [r.subscriber_id for r in batch.recipients]
        marks = ",".join("?" * len(ids))
        states = other.conn.execute(
            f"SELECT state FROM ledger WHERE issue_id = ? AND subscriber_id IN ({marks})",
            (ISSUE, *ids),
        ).fetchall()
        seen.extend(r[0] for r in states)
        other.close()
        backend.accept(batch, result)

    backend = ScriptedBackend([look_from_another_connection])
    send(settings, db, backend)
    assert seen and set(seen) == {"submitting"}


def test_someone_who_unsubscribes_during_the_send_is_not_sent_to(settings, db):
    late = get_row_by_email(db, "safety@example.org")

    def unsubscribe_someone_later(batch, result):
        assert late.id not in [r.subscriber_id for r in batch.recipients]
        write_status(db, late.id, "unsubscribed", source="web")
        backend.accept(batch, result)

    backend = ScriptedBackend([unsubscribe_someone_later], max_batch=1)
    result = send(settings, db, backend)

    assert late.id not in backend.received
    entry = store.get_entry(db, ISSUE, late.id)
    assert (entry.state, entry.reason) == ("skipped", "unsubscribed before sending")
    assert result.run.skipped == 1 and result.report.state == "sent"


def test_people_who_were_not_subscribed_have_no_ledger_entry(settings, db):
    backend = ScriptedBackend()
    send(settings, db, backend)
    gone = get_row_by_email(db, "gone@example.org")
    sent = get_row_by_email(db, "all1@example.org")
    assert store.get_entry(db, ISSUE, gone.id) is None
    assert store.get_entry(db, ISSUE, sent.id).state == "sent"


def test_temporary_failures_are_retried_with_backoff_then_succeed(settings, db):
    sleeps = []
    backend = ScriptedBackend(
        [TemporaryFailure("503"), TemporaryFailure("429", retry_after=5.0), None]
    )
    result = send(settings, db, backend, sleeps=sleeps)
    assert sleeps[:2] == [1.0, 5.0]  # backoff 1 s, then Retry-After wins over 2 s
    assert backend.calls[0] == backend.calls[1] == backend.calls[2]
    assert duplicates(backend.received) == []
    assert result.report.state == "sent"
    assert store.get_entry(db, ISSUE, backend.calls[0][0]).attempts == 3


def test_retry_delays_grow_exponentially_with_jitter_and_are_capped():
    policy = RetryPolicy(max_attempts=10, base=1.0, maximum=10.0, rand=lambda: 0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    policy.rand = lambda: 1.0
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.delay(1, retry_after=30) == 30


def test_giving_up_after_max_attempts_leaves_the_batch_pending_and_resumes(settings, db):
    backend = ScriptedBackend([TemporaryFailure("503 down")] * 4)
    with pytest.raises(DeliveryError, match="gave up on batch 1 after 4 attempts: 503 down"):
        send(settings, db, backend)
    assert len(backend.calls) == 4 and backend.received == []
    assert store.counts(db, ISSUE) == {"pending": 12, "skipped": 1}
    assert store.get_send(db, ISSUE)["state"] == "stopped"
    assert "gave up" in store.get_send(db, ISSUE)["last_error"]

    again = ScriptedBackend()
    send(settings, db, again)
    assert sorted(emails(db, again.received)) == sorted(EVERYONE)


def test_a_provider_asking_for_a_very_long_wait_stops_the_send(settings, db):
    backend = ScriptedBackend([TemporaryFailure("429", retry_after=7200)])
    with pytest.raises(DeliveryError, match="asks to wait 7200 s"):
        send(settings, db, backend)
    assert store.counts(db, ISSUE)["pending"] == 12


def test_partial_progress_is_kept_and_only_the_rest_is_retried(settings, db):
    def two_then_fail(batch, result):
        backend.accept(batch, result, batch.recipients[:2])
        raise TemporaryFailure("421 try later")

    backend = ScriptedBackend([two_then_fail, None], max_batch=3)
    send(settings, db, backend)
    assert len(backend.calls[1]) == 1 and backend.calls[1][0] == backend.calls[0][2]
    assert duplicates(backend.received) == []
    assert sorted(emails(db, backend.received)) == sorted(EVERYONE)


def test_an_unknown_outcome_is_never_resent_automatically(settings, db):
    backend = ScriptedBackend([None, OutcomeUnknown("no answer within 1 s")])
    with pytest.raises(OutcomeUnknown, match="batch 2: no answer within 1 s.*--retry-unknown"):
        send(settings, db, backend)
    unknown = backend.calls[1]
    assert {store.get_entry(db, ISSUE, i).state for i in unknown} == {"unknown"}
    assert store.get_entry(db, ISSUE, unknown[0]).reason == "no answer within 1 s"
    report = build_report(db, ISSUE)
    assert report.state == "stopped" and report.count("unknown") == 3

    resumed = ScriptedBackend()
    result = send(settings, db, resumed)
    assert set(resumed.received).isdisjoint(unknown)
    assert result.report.state == "stopped"  # unknown rows remain
    assert result.report.count("unknown") == 3

    explicit = ScriptedBackend()
    result = send(settings, db, explicit, retry_unknown=True, retry_unknown_now=True)
    assert sorted(explicit.received) == sorted(unknown)
    assert result.run.retried_unknown == 3 and result.report.state == "sent"


def test_an_unknown_outcome_for_one_message_leaves_the_rest_of_the_batch_pending(settings, db):
    def one_sent_one_unknown(batch, result):
        backend.accept(batch, result, batch.recipients[:1])
        raise OutcomeUnknown(
            "dropped after the body", recipients=[batch.recipients[1].subscriber_id]
        )

    backend = ScriptedBackend([one_sent_one_unknown], max_batch=3)
    with pytest.raises(OutcomeUnknown):
        send(settings, db, backend)
    first = backend.calls[0]
    assert [store.get_entry(db, ISSUE, i).state for i in first] == ["sent", "unknown", "pending"]


def test_a_rejected_payload_fails_the_batch_with_the_message_and_stops(settings, db):
    backend = ScriptedBackend([PayloadRejected("SendGrid refused the request (400): bad from")])
    with pytest.raises(PayloadRejected, match=r"\(400\): bad from.*failed"):
        send(settings, db, backend)
    assert len(backend.calls) == 1
    assert store.counts(db, ISSUE) == {"failed": 3, "pending": 9, "skipped": 1}
    assert build_report(db, ISSUE).reasons["failed"] == {
        "SendGrid refused the request (400): bad from": 3
    }
    # Failed rows were surely not accepted: the next send retries them.
    again = ScriptedBackend()
    result = send(settings, db, again)
    assert result.run.retried_failed == 3 and len(again.received) == 12


@pytest.mark.parametrize(
    "error", [AuthenticationError("401 bad key"), SendRefused("404 wrong host")]
)
def test_a_refusal_stops_at_once_and_marks_nothing_sent(settings, db, error):
    backend = ScriptedBackend([error])
    with pytest.raises(type(error)):
        send(settings, db, backend)
    assert len(backend.calls) == 1
    assert store.counts(db, ISSUE) == {"pending": 12, "skipped": 1}
    assert store.get_send(db, ISSUE)["lock_owner"] is None


def test_an_interrupt_mid_request_marks_the_batch_unknown(settings, db):
    backend = ScriptedBackend([None, KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        send(settings, db, backend)
    states = [store.get_entry(db, ISSUE, i) for i in backend.calls[1]]
    assert {s.state for s in states} == {"unknown"}
    assert "interrupted" in states[0].reason
    assert store.get_send(db, ISSUE)["lock_owner"] is None


def test_rows_left_submitting_by_a_crash_become_unknown_and_are_reported(settings, db):
    # A crash after the claim and before the answer: rows stay `submitting`, lock held by a
    # process that no longer exists.
    from newsletter.delivery import write_plan
    from tests.support.delivery import issue_summaries

    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}:gone"
    assert store.try_lock(db, ISSUE, owner, "scripted", lambda o, a: False) is None
    key = store.pending_segments(db, ISSUE)[0][0]
    claimed, _ = store.claim(db, ISSUE, key, 2, 1, owner)

    warnings = []

    class Collect(SendObserver):
        def warn(self, message):
            warnings.append(message)

    backend = ScriptedBackend()
    result = send(settings, db, backend, observer=Collect())
    crashed = [r.subscriber_id for r in claimed]
    assert result.run.recovered == 2
    assert any("2 recipients were being submitted" in w for w in warnings)
    assert set(backend.received).isdisjoint(crashed)
    assert {store.get_entry(db, ISSUE, i).state for i in crashed} == {"unknown"}


@pytest.mark.sqlite_only(
    "on PostgreSQL a second send joins the first as a worker (tests/test_send_workers.py)"
)
def test_a_second_send_of_the_same_issue_is_refused_while_one_runs(settings, db):
    refused = []

    def try_a_concurrent_send(batch, result):
        other_db = open_database(settings)
        other = ScriptedBackend()
        with pytest.raises(SendLocked, match="being sent by another process"):
            send_issue(settings, other_db, ISSUE, backend=other)
        refused.append(other.calls)
        other_db.close()
        backend.accept(batch, result)

    backend = ScriptedBackend([try_a_concurrent_send])
    send(settings, db, backend)
    assert refused == [[]]
    assert build_report(db, ISSUE).state == "sent"


def test_locks_of_dead_or_stale_owners_are_taken_over(settings, db):
    host = socket.gethostname()
    assert not abandoned(f"{host}:{os.getpid()}:x", store_now())
    assert abandoned(f"{host}:999999999:x", store_now())
    assert not abandoned("elsewhere:1:x", store_now())
    assert abandoned("elsewhere:1:x", "2000-01-01T00:00:00Z")

    lock = SendLock(db, ISSUE, "scripted")
    lock.acquire()
    with pytest.raises(SendLocked):
        SendLock(db, ISSUE, "scripted").acquire()
    stale = SendLock(db, ISSUE, "scripted", stale_after=-1)  # every lock counts as stale
    stale.acquire()
    assert store.get_send(db, ISSUE)["lock_owner"] == stale.owner
    # The one that lost its lock learns it at its next claim and cannot release another's.
    assert not lock.heartbeat()
    lock.release("stopped")
    assert store.get_send(db, ISSUE)["lock_owner"] == stale.owner


def store_now():
    from newsletter.store import now

    return now()


def test_a_failing_check_blocks_the_send_and_writes_nothing(settings, db):
    path = settings.paths.issues / f"{ISSUE}.yaml"
    path.write_text(path.read_text().replace("- gut-bacteria-disease-activity", "- no-such"))
    backend = ScriptedBackend()
    with pytest.raises(CheckFailed, match="no summary named 'no-such'"):
        send(settings, db, backend)
    assert backend.calls == [] and store.counts(db, ISSUE) == {}
    assert store.get_send(db, ISSUE) is None


def test_report_lists_who_got_it_who_did_not_and_why(settings, db):
    write_status(db, get_row_by_email(db, "vax@example.org").id, "unsubscribed", "web")
    backend = ScriptedBackend([None, None, PayloadRejected("bad")], max_batch=2)
    with pytest.raises(PayloadRejected):
        send(settings, db, backend)
    report = build_report(db, ISSUE)
    assert report.counts == {"sent": 4, "failed": 2, "pending": 5, "skipped": 1}
    assert report.reasons["skipped"] == {"no matching topics": 1}
    assert report.not_planned == {"unsubscribed": 2, "bounced": 1}
    assert not report.complete and report.open == 7
    sent = [e.email for e in list_entries(db, ISSUE, "sent")]
    assert sent == sorted(sent) and len(sent) == 4
    assert [e.email for e in list_entries(db, ISSUE, "skipped")] == ["retired@example.org"]
    segments = {s.summary_ids: sum(s.counts.values()) for s in report.segments}
    assert sum(segments.values()) == 11


def test_an_interrupt_while_waiting_to_retry_keeps_the_sent_and_the_rest_pending(settings, db):
    def two_then_fail(batch, result):
        backend.accept(batch, result, batch.recipients[:2])
        raise TemporaryFailure("421 try later")

    def interrupted_sleep(seconds):
        raise KeyboardInterrupt

    backend = ScriptedBackend([two_then_fail])
    with pytest.raises(KeyboardInterrupt):
        send(settings, db, backend, sleep=interrupted_sleep)
    first = backend.calls[0]
    assert [store.get_entry(db, ISSUE, i).state for i in first] == ["sent", "sent", "pending"]
    assert store.get_send(db, ISSUE)["lock_owner"] is None


# Two sends at once: one stalled long enough for another to take its lock over ---------------


def ledger_rows(settings, ids) -> list[tuple[str, int | None, str | None]]:
    """(state, batch_no, provider_id) of these subscribers' rows, read on a connection of its own."""
    other = open_database(settings)
    try:
        return [
            (e.state, e.batch_no, e.provider_id)
            for e in (store.get_entry(other, ISSUE, i) for i in ids)
        ]
    finally:
        other.close()


def answer(provider_id):
    """A backend script step that accepts the whole batch under one provider id."""

    def accept(batch, result):
        for r in batch.recipients:
            result.sent[r.subscriber_id] = provider_id

    return accept


def test_a_late_answer_to_a_taken_over_batch_leaves_the_batch_now_in_flight_alone(settings, db):
    """A send stalls on a request; another takes its lock over and, with --retry-unknown, submits
    the same people again as its own batch. When the stalled request's answer arrives, it must
    not settle the batch still in flight: the ledger keeps the answer of that batch's request."""
    taker_in_flight, stalled_recorded = threading.Event(), threading.Event()
    between, taker_errors = [], []

    def taker_batch(batch, result):
        taker_in_flight.set()
        if not stalled_recorded.wait(60):
            raise RuntimeError("the stalled send never recorded its answer")
        between.extend(ledger_rows(settings, [r.subscriber_id for r in batch.recipients]))
        answer("taker-1")(batch, result)

    def taker_send():
        other = open_database(settings)
        try:
            send(settings, other, taker, retry_unknown=True, retry_unknown_now=True, stale_after=-1)
        except BaseException as exc:  # reported by the main thread
            taker_errors.append(exc)
        finally:
            other.close()

    def stalled_batch(batch, result):
        thread.start()
        if not taker_in_flight.wait(60):
            raise RuntimeError("the other send never took over")
        answer("stalled-1")(batch, result)

    class SaysWhenRecorded(SendObserver):
        def batch_done(self, sent, skipped, failed, unknown):
            stalled_recorded.set()

    taker = ScriptedBackend([taker_batch])
    stalled = ScriptedBackend([stalled_batch])
    thread = threading.Thread(target=taker_send)
    with pytest.raises(DeliveryError, match="taken over by another process"):
        send(settings, db, stalled, observer=SaysWhenRecorded())
    thread.join(timeout=120)
    assert not thread.is_alive() and taker_errors == []

    people = stalled.calls[0]
    assert taker.calls[0] == people  # the same three people, resubmitted as batch 2
    assert between == [("submitting", 2, None)] * 3
    assert ledger_rows(settings, people) == [("sent", 2, "taker-1")] * 3
    assert build_report(db, ISSUE).state == "sent"


@pytest.mark.sqlite_only(
    "on PostgreSQL a second send joins the first as a worker (tests/test_send_workers.py)"
)
def test_a_stalled_send_that_plans_late_never_resets_what_another_send_has_sent(
    settings, db, monkeypatch
):
    """A send stalls half-way through planning; another takes over and sends the whole issue.
    When the stalled one plans its remaining pages, the rows it finds there stay as they are:
    a sent row put back to pending would be mailed twice."""
    monkeypatch.setattr(planning, "PLAN_PAGE", 3)
    pages, taken_over = store.iter_subscribed, []
    taker = ScriptedBackend(max_batch=20)

    def another_send_takes_over_after_the_first_page(database_, page_size):
        for n, page in enumerate(pages(database_, page_size)):
            yield page
            if n == 0 and not taken_over:
                taken_over.append(True)
                other = open_database(settings)
                try:
                    send(settings, other, taker, stale_after=-1)
                finally:
                    other.close()

    monkeypatch.setattr(store, "iter_subscribed", another_send_takes_over_after_the_first_page)
    stalled = ScriptedBackend()
    result = send(settings, db, stalled)

    assert taken_over and stalled.calls == [] and result.run.sent == 0
    assert sorted(emails(db, taker.received)) == sorted(EVERYONE)
    assert store.counts(db, ISSUE) == {"sent": len(EVERYONE), "skipped": 1}
    taker_ids = {f"msg-{n}" for n in range(1, len(taker.calls) + 1)}
    assert {e.provider_id for e in list_entries(db, ISSUE, "sent")} == taker_ids
    assert build_report(db, ISSUE).state == "sent"


def test_a_row_recorded_as_sent_shows_no_failure_reason(settings, db):
    """Whatever a row said before (here: recovered as unknown by a send that took over while
    its batch was in flight), once the provider's answer records it sent, the report lists it
    as sent without a reason."""
    from newsletter.delivery import write_plan
    from tests.support.delivery import issue_summaries

    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    owner = "elsewhere:1:stalled"
    assert store.try_lock(db, ISSUE, owner, "smtp", lambda o, a: False) is None
    key = store.pending_segments(db, ISSUE)[0][0]
    claimed, _ = store.claim(db, ISSUE, key, 2, 1, owner)
    ids = [r.subscriber_id for r in claimed]
    store.move_state(db, ISSUE, store.SUBMITTING, store.UNKNOWN, "being submitted when it stopped")

    store.record(db, ISSUE, sent={i: f"<{i}@mail>" for i in ids})

    sent = {e.subscriber_id: e for e in list_entries(db, ISSUE, "sent")}
    assert sorted(sent) == sorted(ids)
    assert [sent[i].reason for i in ids] == [None, None]


def test_each_recipient_gets_their_own_address_name_topics_and_links(settings, db):
    backend = ScriptedBackend(max_batch=3)
    send(settings, db, backend)

    signer = LinkSigner("k" * 40)  # the fixture's NEWSLETTER_SECRET_KEY
    phrases = Personalizer(settings, signer)
    people = {s.id: s for s in iter_subscribers(db, "subscribed")}
    links = {
        purpose: f"{settings.preferences_base}/{purpose}/"
        for purpose in ("preferences", "unsubscribe")
    }
    got = [r for batch in backend.batches for r in batch.recipients]
    assert sorted(emails(db, [r.subscriber_id for r in got])) == sorted(EVERYONE)
    for r in got:
        person = people[r.subscriber_id]
        assert (r.email, r.name) == (person.email, person.name)
        assert r.values["topics"] == phrases.topics(person.topics)
        for purpose, prefix in links.items():
            url = r.values[f"{purpose}_url"]
            assert url.startswith(prefix)
            assert signer.verify(url.removeprefix(prefix), purpose) == person.id


def test_the_report_counts_and_lists_what_the_webhooks_said(settings, db):
    send(settings, db, ScriptedBackend())
    sent = list(list_entries(db, ISSUE, "sent"))  # by address
    outcomes = {sent[0].subscriber_id: "delivered", sent[1].subscriber_id: "delivered"}
    outcomes[sent[2].subscriber_id] = "bounced"
    with db.transaction():
        for subscriber_id, outcome in outcomes.items():
            assert record_delivery(db, ISSUE, subscriber_id, outcome, store_now())

    assert build_report(db, ISSUE).delivery == {"delivered": 2, "bounced": 1}
    delivered = [e.email for e in list_entries(db, ISSUE, "delivered")]
    assert delivered == [sent[0].email, sent[1].email]
    assert [e.email for e in list_entries(db, ISSUE, "bounced")] == [sent[2].email]
    assert [e.email for e in list_entries(db, ISSUE, "dropped")] == []


def test_report_lists_every_row_past_the_first_page(settings, db):
    from newsletter.delivery import write_plan
    from tests.support.delivery import issue_summaries

    add_many(db, 1000, start=5)  # 1,012 to send, more than one page of 1,000
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)

    listed = [e.email for e in list_entries(db, ISSUE, "pending")]
    assert len(listed) == len(set(listed)) == 1012
    assert listed == sorted(listed)


def test_a_claim_starts_after_the_senders_last_claimed_id(settings, db):
    from newsletter.delivery import write_plan
    from tests.support.delivery import issue_summaries

    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    key, pending = store.pending_segments(db, ISSUE)[0]
    assert pending == 7
    ids = sorted(
        r[0]
        for r in db.conn.execute(
            "SELECT subscriber_id FROM ledger WHERE issue_id = ? AND segment = ?", (ISSUE, key)
        )
    )
    owner = "host:1:x"
    assert store.try_lock(db, ISSUE, owner, "scripted", lambda o, a: False) is None
    claimed, _ = store.claim(db, ISSUE, key, 3, 1, owner, after=ids[1])
    assert [r.subscriber_id for r in claimed] == ids[2:5]  # the first two are passed by
    claimed, _ = store.claim(db, ISSUE, key, 3, 2, owner, after=ids[-1])
    assert claimed == []  # nothing pending after the last id
    claimed, _ = store.claim(db, ISSUE, key, 9, 3, owner)
    assert [r.subscriber_id for r in claimed] == ids[:2] + ids[5:]  # from the start again


@pytest.mark.postgresql_only
def test_rows_another_worker_held_while_the_send_passed_them_are_sent_before_it_ends(settings, db):
    # Another worker is claiming the first two rows of the largest segment when this send
    # claims it (FOR UPDATE SKIP LOCKED passes them by), then its claim rolls back: the two rows
    # are pending behind this send's claims, which look once more from the segment's start
    # before leaving it.
    from newsletter.delivery import write_plan
    from tests.support.delivery import issue_summaries

    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    key = store.pending_segments(db, ISSUE)[0][0]
    other = open_database(settings)
    other.conn.execute("BEGIN")
    held = [
        r[0]
        for r in other.conn.execute(
            "SELECT subscriber_id FROM ledger WHERE issue_id = ? AND segment = ? "
            "ORDER BY subscriber_id LIMIT 2 FOR UPDATE",
            (ISSUE, key),
        )
    ]

    def the_other_claim_rolls_back(batch, result):
        other.conn.execute("ROLLBACK")
        backend.accept(batch, result)

    backend = ScriptedBackend([the_other_claim_rolls_back], max_batch=3)
    try:
        result = send(settings, db, backend)
    finally:
        other.close()
    assert set(held).isdisjoint(backend.calls[0])
    assert backend.calls[2] == held  # after the segment's other 5 rows (3 + 2)
    assert sorted(emails(db, backend.received)) == sorted(EVERYONE)
    assert duplicates(backend.received) == []
    assert result.report.state == "sent" and result.report.complete
