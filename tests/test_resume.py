"""Kill the sending process with SIGKILL at several points of a send to the fake SendGrid, resume,
and count what the server received: nobody twice; everybody eligible once, except those reported
`unknown` (at most one batch a request in flight: `delivery.concurrency`). Ctrl-C with requests
in flight: exit 130, those requests recorded. Also: two concurrent sends of one issue, one
refuses.

The send runs in a subprocess (`newsletter send ... --yes`). To stop it at an exact point without
sleeping, the test runs it through `tests/support/paused_send.py`, which gives the send an
observer: once N batches are recorded the process says so on stderr and waits for a line on
stdin; the test then kills it, or scripts the fake and lets it go on.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import (
    ISSUE,
    add_many,
    configure,
    database,
    duplicates,
    schema_problems,
)
from tests.support.paused_send import PAUSE_MARK
from tests.support.processes import child_env

pytestmark = pytest.mark.both_engines

REPO = Path(__file__).resolve().parent.parent
SECRET = "k" * 40
BATCH = 3
WAIT = 60  # a safety net for a broken test, never a means of synchronisation


class SendProcess:
    """`newsletter send ISSUE --yes --backend sendgrid` in a child process, paused on request."""

    def __init__(self, workspace: Path, fake_url: str, pause_after: int | None = None):
        env = child_env(
            NEWSLETTER_SECRET_KEY=SECRET, SENDGRID_API_KEY=TEST_API_KEY, SENDGRID_API_HOST=fake_url
        )
        args = ["send", ISSUE, "--yes", "--backend", "sendgrid"]
        if pause_after is None:
            command = [sys.executable, "-c", "from newsletter.cli import main; main()", *args]
        else:
            command = [sys.executable, "-m", "tests.support.paused_send", str(pause_after), *args]
        self.process = subprocess.Popen(
            command,
            cwd=workspace,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_pause(self, batches: int) -> None:
        mark = PAUSE_MARK.format(batches)
        while True:
            line = self.lines.get(timeout=WAIT)
            if line is None:
                pytest.fail(f"the send ended before pausing: {''.join(self.stderr)}")
            if mark in line:
                return

    def wait_for_line(self, text: str) -> None:
        while True:
            line = self.lines.get(timeout=WAIT)
            if line is None:
                pytest.fail(f"the send ended before saying {text!r}: {''.join(self.stderr)}")
            if text in line:
                return

    def resume(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT)
        assert self.process.returncode == -signal.SIGKILL

    def finish(self) -> int:
        self.process.stdin.close()
        return self.process.wait(timeout=WAIT)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid() as server:
        yield server
        assert schema_problems([r["payload"] for r in server.accepted()]) == []


@pytest.fixture
def setup(workspace, fake):
    """10 subscribers with every topic and 2 with one (5 batches of ≤ 3), 1 unsubscribed; one
    request at a time (several in flight: the tests with `concurrent_setup`)."""
    settings = configure(
        workspace, backend="sendgrid", batch_size=BATCH, timeout=5, concurrency=1,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 10)
    insert(db, "women1@example.org", topics=["womens-health"])
    insert(db, "women2@example.org", topics=["womens-health"])
    insert(db, "gone@example.org", topics="all", status="unsubscribed")
    eligible = [f"user{i}@example.org" for i in range(10)] + [
        "women1@example.org",
        "women2@example.org",
    ]
    yield settings, db, eligible
    db.close()


def resume(run, fake, *args):
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
    return run("send", ISSUE, "--yes", "--backend", "sendgrid", *args, env=env)


def unknown_emails(db) -> set[str]:
    return {e.email for e in store.iter_entries(db, ISSUE, state="unknown")}


def assert_nobody_twice_everybody_once_but_unknown(fake, db, eligible, max_unknown):
    received = fake.recipients()
    assert duplicates(received) == []
    unknown = unknown_emails(db)
    assert len(unknown) <= max_unknown
    assert set(received) | unknown == set(eligible)
    assert "gone@example.org" not in received


@pytest.mark.parametrize("after", [0, 2], ids=["before-the-first-batch", "between-batches"])
def test_killed_before_or_between_batches_resumes_without_loss_or_repeat(
    run, workspace, fake, setup, after
):
    settings, db, eligible = setup
    child = SendProcess(workspace, fake.url, pause_after=after)
    child.wait_for_pause(after)
    child.kill()
    assert len(fake.recipients()) == after * BATCH
    assert store.counts(db, ISSUE).get("submitting", 0) == 0
    assert store.get_send(db, ISSUE)["lock_owner"]  # left behind by the killed process

    result = resume(run, fake)

    assert result.exit_code == 0, result.output
    assert_nobody_twice_everybody_once_but_unknown(fake, db, eligible, max_unknown=0)
    assert store.get_send(db, ISSUE)["state"] == "sent"


@pytest.mark.parametrize("accepted", [False, True], ids=["not-accepted", "accepted-answer-lost"])
def test_killed_while_a_request_is_in_flight(run, workspace, fake, setup, accepted):
    settings, db, eligible = setup
    child = SendProcess(workspace, fake.url, pause_after=2)
    child.wait_for_pause(2)
    fake.script([{"hang": True, "accept": accepted, "seconds": WAIT}])
    child.resume()
    assert fake.wait_for("in_flight", timeout=WAIT)
    child.kill()
    assert store.counts(db, ISSUE).get("submitting", 0) == BATCH  # claimed, outcome unknown

    result = resume(run, fake)

    assert result.exit_code == 0, result.output
    assert f"{BATCH} recipients were being submitted" in result.stderr  # reported
    assert_nobody_twice_everybody_once_but_unknown(fake, db, eligible, max_unknown=BATCH)
    assert len(unknown_emails(db)) == BATCH
    assert store.get_send(db, ISSUE)["state"] == "stopped"  # not sent in full: unknown rows
    if accepted:
        return  # SendGrid did take them: resending would be the editor's explicit choice
    assert unknown_emails(db).isdisjoint(fake.recipients())
    explicit = resume(run, fake, "--retry-unknown", "--now")
    assert explicit.exit_code == 0, explicit.output
    assert sorted(fake.recipients()) == sorted(eligible)
    assert store.get_send(db, ISSUE)["state"] == "sent"


@pytest.mark.sqlite_only(
    "on PostgreSQL a second send joins the first as a worker (tests/test_send_workers.py)"
)
def test_two_concurrent_sends_of_one_issue_one_refuses(run, workspace, fake, setup):
    settings, db, eligible = setup
    child = SendProcess(workspace, fake.url, pause_after=1)
    child.wait_for_pause(1)

    second = resume(run, fake)

    assert second.exit_code == 1
    assert "is being sent by another process" in second.stderr
    assert len(fake.recipients()) == BATCH  # the second one sent nothing
    child.resume()
    assert child.finish() == 0, "".join(child.stderr)
    assert sorted(fake.recipients()) == sorted(eligible)


# Several requests in flight (delivery.concurrency) -----------------------------------------------

CONCURRENCY = 3


@pytest.fixture
def concurrent_setup(workspace, fake):
    """18 subscribers with every topic (6 batches of 3), three requests in flight at once."""
    settings = configure(
        workspace, backend="sendgrid", batch_size=BATCH, timeout=5, concurrency=CONCURRENCY,
        sendgrid={"sync_suppressions": False},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 18)
    yield settings, db, [f"user{i}@example.org" for i in range(18)]
    db.close()


def held_in_flight(fake, accepted: bool) -> None:
    """The next CONCURRENCY requests are held unanswered (taken by the fake if `accepted`)."""
    fake.script([{"hang": True, "accept": accepted, "seconds": WAIT}] * CONCURRENCY)


@pytest.mark.parametrize("accepted", [False, True], ids=["not-accepted", "accepted-answer-lost"])
def test_killed_with_several_requests_in_flight(run, workspace, fake, concurrent_setup, accepted):
    settings, db, eligible = concurrent_setup
    held_in_flight(fake, accepted)
    child = SendProcess(workspace, fake.url)
    assert fake.wait_for("in_flight", timeout=WAIT, n=CONCURRENCY)
    child.kill()
    in_flight = CONCURRENCY * BATCH
    assert store.counts(db, ISSUE).get("submitting", 0) == in_flight  # marked before they left
    assert store.counts(db, ISSUE).get("pending", 0) == len(eligible) - in_flight

    result = resume(run, fake)

    assert result.exit_code == 0, result.output
    assert f"{in_flight} recipients were being submitted" in result.stderr
    assert_nobody_twice_everybody_once_but_unknown(fake, db, eligible, max_unknown=in_flight)
    assert len(unknown_emails(db)) == in_flight
    if not accepted:
        assert unknown_emails(db).isdisjoint(fake.recipients())


def test_ctrl_c_with_requests_in_flight_exits_130_and_records_them(
    run, workspace, fake, concurrent_setup
):
    settings, db, eligible = concurrent_setup
    held_in_flight(fake, accepted=True)
    child = SendProcess(workspace, fake.url)
    assert fake.wait_for("in_flight", timeout=WAIT, n=CONCURRENCY)

    child.process.send_signal(signal.SIGINT)
    child.wait_for_line("interrupted: no more batches are claimed")
    fake.release()  # the held requests end, unanswered

    assert child.finish() == 130
    assert child.stderr[-1].strip() == "interrupted"
    in_flight = CONCURRENCY * BATCH
    assert store.counts(db, ISSUE) == {"unknown": in_flight, "pending": len(eligible) - in_flight}
    assert fake.stats()["requests"] == CONCURRENCY  # nothing claimed after Ctrl-C
    assert store.get_send(db, ISSUE)["state"] == "stopped"

    result = resume(run, fake)

    assert result.exit_code == 0, result.output
    assert_nobody_twice_everybody_once_but_unknown(fake, db, eligible, max_unknown=in_flight)
