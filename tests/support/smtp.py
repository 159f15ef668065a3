"""A real SMTP server's handler for the tests (aiosmtpd): keeps every message, misbehaves on request."""

from __future__ import annotations

import threading

from tests.support.delivery import parse, text_part


class Recorder:
    """An aiosmtpd handler that keeps every message, and can misbehave on request."""

    def __init__(self):
        self.messages: list[tuple[list[str], bytes]] = []
        self.ehlos = 0
        self.drop_at_mail: set[int] = set()  # drop the connection at the Nth MAIL FROM
        self.drop_after_data: set[int] = set()  # keep the Nth message, then drop unanswered
        self.rcpt_replies: dict[str, str] = {}  # address → reply for RCPT TO
        self.mails = self.datas = 0
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        with self.lock:
            self.mails += 1
            drop = self.mails in self.drop_at_mail
        if drop:
            server.transport.close()
            return "421 closing"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_replies.get(address)
        if reply:
            if reply.startswith("4"):
                del self.rcpt_replies[address]  # a temporary problem: fine next time
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.datas += 1
            self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
            drop = self.datas in self.drop_after_data
        if drop:
            server.transport.close()  # the message arrived; its answer never will
        return "250 Message accepted"

    def received(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rcpts, data in self.messages:
            for rcpt in rcpts:
                out.setdefault(rcpt, []).append(text_part(parse(data)))
        return out

    def addresses(self) -> list[str]:
        return [r for rcpts, _ in self.messages for r in rcpts]
