"""Several senders: `newsletter send ISSUE --workers N` on PostgreSQL, N processes sharing one
send through leases, one plan and SKIP LOCKED claims; refused on SQLite.

The 20,000-subscriber tests run the command in a child process against the SendGrid stand-in
(the real `sendgrid` client pointed at it through SENDGRID_API_HOST). The stand-in holds every
request (`latency_ms`) until each worker has its requests in flight, so that every worker is
known to take part, and, for the crash test, until the test has SIGKILLed one worker; then it
lets them all go (`release`). Nothing waits by sleeping.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from newsletter.delivery import prepare_send, run_send, send_issue, write_plan
from newsletter.delivery.lock import WorkerLease
from newsletter.store import ledger as store
from newsletter.store import open_database
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import (
    ISSUE,
    ScriptedBackend,
    add_many,
    configure,
    database,
    duplicates,
    issue_summaries,
)
from tests.support.processes import child_env

REPO = Path(__file__).resolve().parent.parent
SECRET = "k" * 40
WAIT = 120  # a safety net for a broken test, never a means of synchronisation
MANY = 20_000
WORKERS = 3
CONCURRENCY = 2  # requests in flight per worker


# SQLite: refused before anything happens ------------------------------------------------------


def test_more_than_one_worker_on_sqlite_is_refused_and_nothing_is_written(run, settings, db):
    add_many(db, 5)
    result = run("send", ISSUE, "--yes", "--workers", "3")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: newsletter.db: a SQLite database takes one writer at a time, so a send runs "
        "in one process: --workers 3 needs PostgreSQL (see README, PostgreSQL)"
    ]
    assert store.counts(db, ISSUE) == {} and store.get_send(db, ISSUE) is None
    assert not (settings.paths.outbox / ISSUE).exists()


def test_the_number_of_workers_is_limited(run, db):
    result = run("send", ISSUE, "--yes", "--workers", "33")
    assert result.exit_code == 2
    assert "'--workers': 33 is not in the range 1<=x<=32" in result.stderr
    assert store.get_send(db, ISSUE) is None


# 20,000 subscribers, 3 worker processes, the SendGrid stand-in ----------------------------------


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid(record="recipients") as server:
        yield server


@pytest.fixture
def many(workspace, database_url, fake):
    """20,000 subscribers with every topic (20 requests of 1,000) and one who left."""
    settings = configure(
        workspace, backend="sendgrid", timeout=WAIT, concurrency=CONCURRENCY,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, MANY)
    insert(db, "gone@example.org", topics="all", status="unsubscribed")
    yield settings, db, {f"user{i}@example.org" for i in range(MANY)}
    db.close()


def start_send(workspace: Path, fake_url: str, *args: str) -> subprocess.Popen:
    """`newsletter send ISSUE --yes --backend sendgrid ARGS` in a child process."""
    env = child_env(
        NEWSLETTER_SECRET_KEY=SECRET, SENDGRID_API_KEY=TEST_API_KEY, SENDGRID_API_HOST=fake_url
    )
    command = [sys.executable, "-m", "newsletter", "send", ISSUE, "--yes", "--backend", "sendgrid"]
    return subprocess.Popen(
        [*command, *args],
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hold_until_every_worker_has_requests_in_flight(fake) -> None:
    """Each worker has at most CONCURRENCY requests in flight: WORKERS × CONCURRENCY held at
    once means every worker has claimed and sent some."""
    assert fake.wait_for("in_flight", timeout=WAIT, n=WORKERS * CONCURRENCY), fake.stats()


def let_them_go(fake) -> None:
    fake.set_mode(latency_ms=0)
    fake.release()


def workers_in_flight(db) -> dict[str, int]:
    rows = db.conn.execute(
        "SELECT worker, count(*) AS n FROM ledger WHERE issue_id = ? AND state = 'submitting' "
        "GROUP BY worker",
        (ISSUE,),
    )
    return {r["worker"]: r["n"] for r in rows}


@pytest.mark.postgresql_only
def test_three_workers_send_20000_subscribers_each_exactly_once(engine, workspace, fake, many):
    settings, db, eligible = many
    fake.set_mode(latency_ms=WAIT * 1000)  # held until let go
    parent = start_send(workspace, fake.url, "--workers", str(WORKERS))
    try:
        hold_until_every_worker_has_requests_in_flight(fake)
        in_flight = workers_in_flight(db)
        assert len(in_flight) == WORKERS and set(in_flight.values()) == {CONCURRENCY * 1000}
        let_them_go(fake)
        out, err = parent.communicate(timeout=WAIT)
    finally:
        parent.kill()
    assert parent.returncode == 0, err

    received = fake.recipients()  # the stand-in's own record of the personalizations it took
    assert duplicates(received) == []
    assert set(received) == eligible and len(received) == MANY
    assert store.counts(db, ISSUE) == {"sent": MANY}
    by_worker = store.worker_rows(db, ISSUE)
    assert len(by_worker) == WORKERS
    assert all(states.get("sent", 0) >= CONCURRENCY * 1000 for states in by_worker.values())
    assert sum(states["sent"] for states in by_worker.values()) == MANY
    # Every request had a batch number of its own, whichever worker sent it.
    numbers = db.conn.execute(
        "SELECT count(DISTINCT batch_no), count(DISTINCT provider_id) FROM ledger "
        "WHERE issue_id = ?",
        (ISSUE,),
    ).fetchone()
    assert (
        tuple(numbers) == (MANY // 1000, MANY // 1000) == (fake.stats()["accepted_requests"],) * 2
    )
    send = store.get_send(db, ISSUE)
    assert send["state"] == "sent" and send["lock_owner"] is None
    assert [w for w in store.live_workers(db, ISSUE)] == []
    assert "issue 2026-12: sent" in out
    for n in range(1, WORKERS + 1):
        assert f"worker {n} (pid " in out


@pytest.mark.postgresql_only
def test_a_worker_killed_mid_send_leaves_only_its_batches_in_flight_then_resume(
    engine, run, workspace, fake, many
):
    settings, db, eligible = many
    fake.set_mode(latency_ms=WAIT * 1000)  # held until the victim is dead
    parent = start_send(workspace, fake.url, "--workers", str(WORKERS))
    try:
        hold_until_every_worker_has_requests_in_flight(fake)
        victim = sorted(workers_in_flight(db))[0]
        pid = int(victim.split(":")[1])
        handle = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            assert select.select([handle], [], [], WAIT)[0], "the worker did not die"
        finally:
            os.close(handle)
        let_them_go(fake)  # its requests are taken by the stand-in; its answers are lost
        out, err = parent.communicate(timeout=WAIT)
    finally:
        parent.kill()

    assert parent.returncode == 1
    failures = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(failures) == 1 and failures[0].endswith(f"(pid {pid}) failed: killed by SIGKILL")
    in_flight = CONCURRENCY * 1000  # the victim's requests in flight when it died
    assert workers_in_flight(db) == {victim: in_flight}  # only the victim's rows
    victim_batches = db.conn.execute(
        "SELECT DISTINCT batch_no FROM ledger WHERE issue_id = ? AND state = 'submitting'",
        (ISSUE,),
    ).fetchall()
    assert len(victim_batches) == CONCURRENCY
    assert store.counts(db, ISSUE) == {"sent": MANY - in_flight, "submitting": in_flight}
    received = fake.recipients()
    assert duplicates(received) == [] and set(received) == eligible
    requests = fake.stats()["requests"]
    assert store.get_send(db, ISSUE)["state"] == "stopped"  # by the last worker out

    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
    resumed = run("send", ISSUE, "--yes", "--backend", "sendgrid", env=env)

    assert resumed.exit_code == 0, resumed.output
    said = " ".join((resumed.stderr + resumed.stdout).split())
    assert f"{in_flight} recipients were being submitted when an earlier send stopped" in said
    assert store.counts(db, ISSUE) == {"sent": MANY - in_flight, "unknown": in_flight}
    assert {e.batch_no for e in store.iter_entries(db, ISSUE, state="unknown")} == {
        n for (n,) in victim_batches
    }
    assert fake.stats()["requests"] == requests  # nothing left to send, nobody resent
    assert f"unknown {in_flight}" in " ".join(said.replace("│", " ").split())  # reported
    assert "--retry-unknown` resends unknown ones" in said
    again = run("send", ISSUE, "--yes", "--backend", "sendgrid", env=env)
    assert again.exit_code == 0, again.output
    assert store.counts(db, ISSUE)["unknown"] == in_flight  # unknown stays unknown
    assert duplicates(fake.recipients()) == []


# Leases, recovery and the plan, in this process -------------------------------------------------


@pytest.fixture
def small(workspace, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    settings = configure(workspace, concurrency=1)
    db = database(settings)
    add_many(db, 30)
    yield settings, db
    db.close()


@pytest.mark.postgresql_only
def test_a_live_workers_rows_in_flight_are_never_marked_unknown_by_a_later_starter(engine, small):
    settings, db = small
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    [(key, _)] = store.pending_segments(db, ISSUE)
    first_db = open_database(settings)
    first = WorkerLease(first_db, ISSUE, "scripted", "run-a")
    with store.planning_lock(first_db, ISSUE):
        first.join()
    rows, _, _ = store.claim_for_worker(first_db, ISSUE, key, 3, first.owner)
    in_flight = {r.subscriber_id for r in rows}

    later = ScriptedBackend()
    result = send_issue(settings, db, ISSUE, backend=later)

    assert result.run.recovered == 0 and not result.run.planner  # it joined a send under way
    assert in_flight.isdisjoint(later.received) and len(later.received) == 27
    assert {store.get_entry(db, ISSUE, i).state for i in in_flight} == {"submitting"}
    assert result.report.state == "sending"  # the first worker is still at it

    first_db.close()  # its connection dies: the server lets go of its liveness lock
    last = ScriptedBackend()
    result = send_issue(settings, db, ISSUE, backend=last)

    assert result.run.recovered == 3 and last.calls == []
    assert {store.get_entry(db, ISSUE, i).state for i in in_flight} == {"unknown"}
    assert store.get_send(db, ISSUE)["state"] == "stopped"  # the unknown rows stay open


@pytest.mark.postgresql_only
def test_concurrent_starters_of_one_run_plan_exactly_once(engine, small):
    settings, db = small
    start = threading.Barrier(WORKERS)
    results, failures, backends = [], [], []

    def worker() -> None:
        own = open_database(settings)
        backend = ScriptedBackend()
        backends.append(backend)
        try:
            prepared = prepare_send(settings, own, ISSUE, backend=backend)
            start.wait()
            results.append(run_send(prepared, run_id="one-command"))
        except Exception as exc:  # reported below: a thread's exception would vanish
            failures.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert failures == []
    assert sorted(r.run.planner for r in results) == [False, False, True]
    assert sum(r.run.planned for r in results) == 30
    received = [key for b in backends for key in b.received]
    assert len(received) == len(set(received)) == 30
    assert store.counts(db, ISSUE) == {"sent": 30}
    assert store.get_send(db, ISSUE)["state"] == "sent"


@pytest.mark.postgresql_only
def test_joining_a_send_under_way_with_another_backend_is_refused(engine, small):
    settings, db = small
    first_db = open_database(settings)
    try:
        first = WorkerLease(first_db, ISSUE, "sendgrid", "run-a")
        with store.planning_lock(first_db, ISSUE):
            first.join()
        backend = ScriptedBackend()
        with pytest.raises(Exception, match="is being sent with sendgrid by another worker"):
            send_issue(settings, db, ISSUE, backend=backend)
        assert backend.calls == []
    finally:
        first_db.close()


@pytest.mark.postgresql_only
def test_ctrl_c_reaches_every_worker_which_records_its_requests_in_flight(
    engine, workspace, database_url, fake
):
    settings = configure(
        workspace, backend="sendgrid", batch_size=10, timeout=WAIT, concurrency=CONCURRENCY,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 200)
    fake.set_mode(latency_ms=WAIT * 1000)
    parent = start_send(workspace, fake.url, "--workers", str(WORKERS))
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in parent.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        hold_until_every_worker_has_requests_in_flight(fake)
        parent.send_signal(signal.SIGINT)  # as Ctrl-C does, to the command only
        stopping = set()
        while len(stopping) < WORKERS:
            line = lines.get(timeout=WAIT)
            assert line is not None, "the command ended before its workers stopped claiming"
            if "interrupted: no more batches are claimed" in line:
                stopping.add(line.split(":")[0])
        let_them_go(fake)  # the requests in flight are answered, and recorded
        assert parent.wait(timeout=WAIT) == 130
    finally:
        parent.kill()
        db.close()
    said = []
    while (line := lines.get(timeout=WAIT)) is not None:
        said.append(line)
    assert said[-1].strip() == "interrupted"
    in_flight = WORKERS * CONCURRENCY * 10
    assert fake.stats()["requests"] == WORKERS * CONCURRENCY  # nothing claimed after Ctrl-C
    with database(settings) as check:
        assert store.counts(check, ISSUE) == {"sent": in_flight, "pending": 200 - in_flight}
        assert store.get_send(check, ISSUE)["state"] == "stopped"


@pytest.mark.postgresql_only
def test_a_worker_stopped_by_an_error_leaves_the_others_going_on(
    engine, run, workspace, database_url, fake
):
    settings = configure(
        workspace, backend="sendgrid", batch_size=10, timeout=WAIT, concurrency=CONCURRENCY,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 200)
    fake.set_mode(latency_ms=WAIT * 1000)
    fake.script([{"status": 400}])  # the first request to come is refused
    parent = start_send(workspace, fake.url, "--workers", str(WORKERS))
    try:
        hold_until_every_worker_has_requests_in_flight(fake)
        let_them_go(fake)
        out, err = parent.communicate(timeout=WAIT)
    finally:
        parent.kill()
    assert parent.returncode == 1
    failures = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(failures) == 1 and "failed: " in failures[0] and "400" in failures[0]
    refused = {e.subscriber_id for e in store.iter_entries(db, ISSUE, state="failed")}
    assert len(refused) == 10
    counts = store.counts(db, ISSUE)
    assert counts == {"sent": 190, "failed": 10}  # the others sent everyone else
    assert duplicates(fake.recipients()) == []
    assert store.get_send(db, ISSUE)["state"] == "stopped"

    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
    resumed = run("send", ISSUE, "--yes", "--backend", "sendgrid", env=env)

    assert resumed.exit_code == 0, resumed.output
    received = fake.recipients()
    assert duplicates(received) == [] and len(received) == 200
    assert store.counts(db, ISSUE) == {"sent": 200}
    assert store.get_send(db, ISSUE)["state"] == "sent"
    db.close()
