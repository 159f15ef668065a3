"""One recipient's problem fails that recipient only: the rest of the batch is sent, nobody is
left `unknown` who was never tried, and the report says why the one failed.

The problem recipients here are rows stored before the list's address and name rules (a
non-ASCII address, a 20,000-character name): the rules keep new ones out, the backends must
still cope with what an older database holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from newsletter.delivery import RetryPolicy, send_issue
from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import (
    ISSUE,
    configure,
    database,
    duplicates,
    free_port,
    ledger_states,
    parse,
    text_part,
)
from tests.support.smtp import Recorder

pytestmark = pytest.mark.both_engines

QUICK = RetryPolicy(max_attempts=2, base=0.0, maximum=0.0)
REPO = Path(__file__).resolve().parent.parent
WAIT = 60  # a safety net for a broken test, never a means of synchronisation
NON_ASCII = ["ü@example.org", "user@bücher.example"]  # as stored before the address rule
FINE = [f"reader{i}@example.org" for i in range(6)]


def add_list(db, names=None) -> None:
    """Six good subscribers with the two old non-ASCII addresses among them (batches of 3)."""
    names = names or {}
    for address in FINE[:2] + NON_ASCII[:1] + FINE[2:4] + NON_ASCII[1:] + FINE[4:]:
        insert(db, address, name=names.get(address, "Reader"), topics="all")


def assert_only_these_failed(settings, failed: dict[str, str]) -> None:
    db = database(settings)
    states = ledger_states(db)
    assert {a: s for a, s in states.items() if s != "sent"} == dict.fromkeys(failed, "failed")
    reasons = {e.email: e.reason for e in store.iter_entries(db, ISSUE, state="failed")}
    for address, words in failed.items():
        assert words in reasons[address], reasons[address]


def test_outbox_fails_only_the_addresses_it_cannot_write(run, workspace):
    settings = configure(workspace, batch_size=3)
    add_list(database(settings))

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    written = {
        parse(p.read_bytes())["To"].addresses[0].addr_spec
        for p in (settings.paths.outbox / ISSUE).glob("*.eml")
    }
    assert written == set(FINE)
    assert_only_these_failed(settings, dict.fromkeys(NON_ASCII, "non-ASCII"))
    report = run("report", ISSUE, "--list", "failed")
    assert sorted(report.output.split("\n")[i].split()[0] for i in range(2)) == sorted(NON_ASCII)


@pytest.fixture
def smtp_server(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings = configure(
        workspace,
        backend="smtp",
        batch_size=3,
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5},
    )
    yield handler, settings
    controller.stop()


def test_smtp_sends_everyone_else_when_an_address_cannot_be_encoded(run, smtp_server):
    handler, settings = smtp_server
    add_list(database(settings))

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    assert sorted(handler.addresses()) == sorted(FINE)  # each once
    for rcpts, raw in handler.messages:
        assert parse(raw)["To"].addresses[0].addr_spec == rcpts[0]
        assert "Hello Reader," in text_part(parse(raw))
    assert_only_these_failed(settings, dict.fromkeys(NON_ASCII, "non-ASCII"))


@pytest.fixture
def sendgrid(workspace, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    settings = configure(
        workspace, backend="sendgrid", batch_size=3, sendgrid={"sync_suppressions": False}
    )
    with FakeSendGrid() as fake:
        monkeypatch.setenv("SENDGRID_API_HOST", fake.url)
        yield fake, settings


def test_sendgrid_sends_the_rest_of_a_batch_that_holds_an_address_it_refuses(run, sendgrid):
    fake, settings = sendgrid
    add_list(database(settings))

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    assert sorted(fake.recipients()) == sorted(FINE)
    assert_only_these_failed(settings, dict.fromkeys(NON_ASCII, "non-ASCII"))
    assert fake.stats()["responses"].get(400) is None  # never asked SendGrid to take them

    again = run("send", ISSUE, "--yes")  # the failed ones are tried again, and fail alone again
    assert again.exit_code == 0, again.output
    assert sorted(fake.recipients()) == sorted(FINE)
    assert_only_these_failed(settings, dict.fromkeys(NON_ASCII, "non-ASCII"))


def test_sendgrid_refusing_one_personalization_fails_that_recipient_only(sendgrid):
    """A name stored before names were limited makes SendGrid refuse its substitutions: that
    recipient fails with SendGrid's reason, the two others of the batch are sent."""
    fake, settings = sendgrid
    db = database(settings)
    insert(db, "a@example.org", name="A", topics="all")
    insert(db, "long@example.org", name="n" * 20_000, topics="all")
    insert(db, "b@example.org", name="B", topics="all")
    insert(db, "c@example.org", name="C", topics="all")

    result = send_issue(settings, db, ISSUE, retry=QUICK, sleep=lambda s: None)

    assert sorted(fake.recipients()) == ["a@example.org", "b@example.org", "c@example.org"]
    assert (result.run.sent, result.run.failed, result.run.unknown) == (3, 1, 0)
    assert_only_these_failed(settings, {"long@example.org": "substitutions"})
    assert fake.stats()["responses"][400] == 1


def test_sendgrid_still_stops_on_a_problem_with_the_whole_request(sendgrid):
    """A refusal that names no single recipient is the request's problem: stop, as before."""
    from newsletter.errors import PayloadRejected

    fake, settings = sendgrid
    db = database(settings)
    for address in FINE[:3]:
        insert(db, address, topics="all")
    fake.script(
        [{"status": 400, "body": {"errors": [{"message": "bad subject", "field": "subject"}]}}]
    )

    with pytest.raises(PayloadRejected, match="bad subject"):
        send_issue(settings, db, ISSUE, retry=QUICK, sleep=lambda s: None)

    assert store.counts(db, ISSUE) == {"failed": 3}


@pytest.mark.parametrize("backend", ["outbox", "sendgrid"])
def test_a_sender_address_that_cannot_be_written_stops_the_send_failing_nobody(
    run, workspace, sendgrid, backend
):
    """The settings' problem, not the recipients': nothing is sent and everyone stays pending."""
    import yaml

    fake, settings = sendgrid
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["sender"]["email"] = "news@bücher.example"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    for address in FINE[:3]:
        insert(database(settings), address, topics="all")
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", ISSUE, "--yes", "--backend", backend, env=env)

    assert result.exit_code == 1
    assert (
        "error: sender.email 'news@bücher.example' in the settings has non-ASCII" in result.stderr
    )
    assert store.counts(database(settings), ISSUE) == {"pending": 3}
    assert fake.recipients() == [] and not settings.paths.outbox.exists()


# Interrupted in the middle of a batch -----------------------------------------------------------


class HoldingRecorder(Recorder):
    """Keeps the answer to the Nth message's DATA until `release` is set."""

    def __init__(self, hold_at: int):
        super().__init__()
        self.hold_at = hold_at
        self.reached = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        if self.datas + 1 == self.hold_at:
            self.reached.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, WAIT)
        return await super().handle_DATA(server, session, envelope)


def test_ctrl_c_during_an_smtp_send_leaves_only_the_message_in_flight_unknown(workspace):
    """Interrupted while the server holds the answer to the 2nd message of a batch of 3: that
    one may have been taken (unknown), the 3rd was never tried (pending), and the next send
    sends it and the rest, never the unknown one."""
    handler = HoldingRecorder(hold_at=2)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = configure(
            workspace, backend="smtp", batch_size=3,
            smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": WAIT},
        )  # fmt: skip
        db = database(settings)
        for address in FINE[:5]:
            insert(db, address, topics="all")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(NEWSLETTER_SECRET_KEY="k" * 40, PYTHONPATH=str(REPO))
        if os.environ.get("NEWSLETTER_DATABASE_URL"):  # the test's PostgreSQL database
            env["NEWSLETTER_DATABASE_URL"] = os.environ["NEWSLETTER_DATABASE_URL"]
        command = [sys.executable, "-c", "from newsletter.cli import main; main()",
                   "send", ISSUE, "--yes"]  # fmt: skip
        process = subprocess.Popen(command, cwd=workspace, env=env, stderr=subprocess.PIPE)
        assert handler.reached.wait(WAIT), "the send never reached the second message"

        process.send_signal(signal.SIGINT)
        process.wait(timeout=WAIT)
        handler.release.set()

        assert process.returncode == 130
        assert process.stderr.read().decode().splitlines()[-1] == "interrupted"
        assert ledger_states(db) == {
            FINE[0]: "sent", FINE[1]: "unknown", FINE[2]: "pending",
            FINE[3]: "pending", FINE[4]: "pending",
        }  # fmt: skip
        again = subprocess.run(command, cwd=workspace, env=env, capture_output=True, timeout=WAIT)
        assert again.returncode == 0, again.stderr
        assert ledger_states(db) == {**dict.fromkeys(FINE[:5], "sent"), FINE[1]: "unknown"}
        # Nobody twice; everybody but the unknown one (whom the server may or may not keep).
        assert duplicates(handler.addresses()) == []
        assert set(handler.addresses()) | {FINE[1]} == set(FINE[:5])
    finally:
        handler.release.set()
        controller.stop()
