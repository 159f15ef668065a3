"""`delivery.smtp.connections`: several SMTP connections at once to a relay that allows it, each
message delivered once. The aiosmtpd server holds the first message's answer until a message
arrives on another connection, so the test passes only if two batches really go out at once."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiosmtpd.controller import Controller

from newsletter.store import ledger as store
from tests.support.delivery import (
    ISSUE,
    add_many,
    check_deliveries,
    configure,
    database,
    duplicates,
    free_port,
)
from tests.support.smtp import Recorder

pytestmark = pytest.mark.both_engines

WAIT = 30  # a safety net for a broken test, never a means of synchronisation


class Overlapping(Recorder):
    """Holds each message's answer until two messages were being received at the same time
    (then lets everything through); notes whether that happened and over which connections."""

    def __init__(self):
        super().__init__()
        self.receiving = 0
        self.both = threading.Event()
        self.peers: set = set()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.peers.add(session.peer)
            self.receiving += 1
            if self.receiving >= 2:
                self.both.set()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.both.wait, WAIT)
        finally:
            with self.lock:
                self.receiving -= 1
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def relay(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    handler = Overlapping()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    handler.both.set()
    controller.stop()


def test_two_connections_send_two_batches_at_once_each_message_once(run, workspace, relay):
    handler, port = relay
    settings = configure(
        workspace, backend="smtp", batch_size=3,
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": WAIT,
              "connections": 2},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 9)

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    assert handler.both.is_set()  # two messages were being received at once
    assert handler.ehlos == 2 and len(handler.peers) == 2  # over two connections
    assert duplicates(handler.addresses()) == []
    check_deliveries(settings, db, handler.received())
    assert store.counts(db, ISSUE) == {"sent": 9}
    db.close()


def test_one_connection_by_default(run, workspace, relay):
    handler, port = relay
    handler.both.set()  # nothing to wait for: one message at a time
    settings = configure(
        workspace, backend="smtp", batch_size=3,
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": WAIT},
    )  # fmt: skip
    db = database(settings)
    add_many(db, 9)

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    assert handler.ehlos == 1 and len(handler.peers) == 1
    check_deliveries(settings, db, handler.received())
    db.close()
