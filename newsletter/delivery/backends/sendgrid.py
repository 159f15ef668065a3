"""The SendGrid backend: one v3 mail-send request per batch of one segment (≤ 1000 recipients).

The segment's HTML and text go once in `content`; each personalization carries the recipient's
`substitutions` (a plain and an HTML-escaped key per value), their own List-Unsubscribe headers,
and `custom_args` naming the issue and subscriber, which is how delivery webhooks find the
ledger row. The client (key, host, timeout) and what SendGrid's answers mean are
`newsletter.sendgrid.client`'s; the key is never printed or logged.

SendGrid refuses a whole request for one bad personalization (400): the recipients it names are
failed alone and the request is sent again without them, so one recipient's problem never
stops the batch. Names go as JSON, as stored; SendGrid writes (and encodes) the headers.
"""

from __future__ import annotations

import json
import re

from ...config import Environment, Settings
from ...errors import DeliveryError
from ...sendgrid import custom_args, tracking
from ...sendgrid.client import RecipientsRefused, api_host, call, make_client
from ..batch import Batch, BatchResult
from ..message import LIST_UNSUBSCRIBE_POST, check_sender, list_id, one_line, wire_address
from .base import BaseBackend

MAX_PERSONALIZATIONS = 1000  # SendGrid's limit per request

_NAME_UNSAFE = re.compile(r"[;,\"]")


def to_name(name: str) -> str:
    """SendGrid refuses `;` and `,` in a display name (and CR/LF would be header injection)."""
    if name.isprintable() and not _NAME_UNSAFE.search(name):
        return name.strip()  # the usual case, without the regular expressions
    return " ".join(_NAME_UNSAFE.sub(" ", one_line(name)).split())


class SendGridBackend(BaseBackend):
    name = "sendgrid"
    requires_secret = True
    supports_send_at = True

    def __init__(
        self,
        settings: Settings,
        api_key: str | None = None,
        host: str | None = None,
        sandbox: bool = False,
        environment: Environment | None = None,
    ):
        """`api_key` and `host` default to those of `environment` (default: the process's)."""
        self.settings = settings
        environment = environment or Environment.read()
        self.host = (host or api_host(environment)).rstrip("/")
        self.client = make_client(
            settings,
            environment,
            api_key=api_key,
            host=self.host,
            needed_for="put the API key in the environment to send with SendGrid (it is never "
            "read from a file)",
        )
        self.timeout = settings.delivery.timeout
        self.max_batch = min(settings.delivery.batch_size, MAX_PERSONALIZATIONS)
        self.sandbox = sandbox
        self.requests = 0

    def __repr__(self) -> str:  # never show the key
        return f"SendGridBackend(host={self.host!r}, sandbox={self.sandbox})"

    # The request body --------------------------------------------------------------------------

    def payload(self, batch: Batch) -> dict:
        """The mail-send body for one batch, as a dict (the client JSON-encodes it once)."""
        s = self.settings
        personalizations = []
        for r in batch.recipients:
            to = {"email": r.email}
            name = to_name(r.name)
            if name:
                to["name"] = name
            args = {custom_args.ISSUE: batch.issue_id}
            if r.subscriber_id is None:
                args[custom_args.PROOF] = "true"
            else:
                args[custom_args.SUBSCRIBER] = str(r.subscriber_id)
            personalizations.append(
                {
                    "to": [to],
                    "substitutions": batch.email.substitutions(r.values),
                    "headers": {
                        "List-Unsubscribe": f"<{r.unsubscribe_url}>",  # our own URL: one line
                        "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST,
                    },
                    "custom_args": args,
                }
            )
        body: dict = {
            "personalizations": personalizations,
            "from": {"email": s.sender.email, "name": one_line(s.sender.name)},
            "subject": one_line(batch.subject),
            "content": [
                {"type": "text/plain", "value": batch.email.text},
                {"type": "text/html", "value": batch.email.html},
            ],
            "categories": ["newsletter-proof" if batch.proof else "newsletter", batch.issue_id],
            "headers": {"List-Id": list_id(s)},  # the same for every recipient
            # Click and open tracking as the settings say; SendGrid's subscription footer never.
            "tracking_settings": tracking.tracking_settings(s.delivery.sendgrid),
        }
        if s.reply_to:
            body["reply_to"] = {"email": str(s.reply_to)}
        if s.delivery.sendgrid.asm_group_id is not None:
            body["asm"] = {"group_id": s.delivery.sendgrid.asm_group_id}
        if self.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        if batch.send_at is not None:
            body["send_at"] = int(batch.send_at)
        if batch.schedule_id:
            body["batch_id"] = batch.schedule_id
        return body

    # Calls ----------------------------------------------------------------------------------

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        check_sender(self.settings)
        recipients = []
        for r in batch.recipients:
            try:
                wire_address(r.email)
            except ValueError as exc:
                result.failed[r.key] = f"cannot send to {r.email!r}: {exc}"
                continue
            recipients.append(r)
        result.in_flight = []
        while recipients:
            body = self.payload(batch.only(recipients))
            result.in_flight = [r.key for r in recipients]
            try:
                response = self._post(self.client.client.mail.send, body, "the mail send")
            except RecipientsRefused as exc:
                # Nothing was accepted: fail those named, send the request again without them.
                for index, reason in exc.refused.items():
                    result.failed[recipients[index].key] = reason
                recipients = [r for i, r in enumerate(recipients) if i not in exc.refused]
                continue
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            if not message_id:
                message_id = "sandbox" if self.sandbox else f"sendgrid-{response.status_code}"
            for r in recipients:
                result.sent[r.key] = message_id
            break
        result.in_flight = []

    def post_mail(self, body: dict) -> str:
        """One mail-send request made elsewhere (the signup form's emails): its message id.
        Raises as `deliver` does."""
        response = self._post(self.client.client.mail.send, body, "the mail send")
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        return message_id or f"sendgrid-{response.status_code}"

    def create_schedule_id(self) -> str:
        """A new SendGrid batch id, so a scheduled send can be paused or cancelled as one."""
        response = self._post(self.client.client.mail.batch, None, "the batch id request")
        try:
            return json.loads(response.body)["batch_id"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                "SendGrid did not return a batch id for the scheduled send"
            ) from None

    def _post(self, endpoint, body: dict | None, action: str):
        """One POST; what SendGrid's answer or silence means is `sendgrid.client.call`'s."""
        self.requests += 1
        return call(
            lambda: endpoint.post() if body is None else endpoint.post(request_body=body),
            host=self.host,
            timeout=self.timeout,
            action=action,
            forbidden="check the key's permissions and that the sender address is verified",
            idempotent=False,
            personalizations=len(body.get("personalizations", ())) if body else 0,
        )
