"""The SendGrid backend: one v3 mail-send request per batch of one segment (≤ 1000 recipients).

The segment's HTML and text go once in `content`; each personalization carries the recipient's
`substitutions` (a plain and an HTML-escaped key per value), their own List-Unsubscribe headers,
and `custom_args` naming the issue and subscriber, which is how delivery webhooks find the
ledger row. The client (key, host, timeout) and what SendGrid's answers mean are
`newsletter.sendgrid.client`'s; the key is never printed or logged.

Before a request leaves it is held to SendGrid's size limits (`newsletter.sendgrid.request_body`):
a recipient whose personalization SendGrid would refuse for its size fails alone, and a body of
30 MB or more goes as several requests. The body is encoded once, with orjson, and gzipped when
`delivery.sendgrid.compress` is on.

SendGrid refuses a whole request for one bad personalization (400): the recipients it names are
failed alone and the request is sent again without them, so one recipient's problem never
stops the batch. Names go as JSON, as stored; SendGrid writes (and encodes) the headers.
"""

from __future__ import annotations

import json
import re

from ...config import Environment, Settings
from ...errors import DeliveryError, OutcomeUnknown
from ...sendgrid import custom_args, request_body, tracking
from ...sendgrid.client import JsonPoster, RecipientsRefused, api_host, call, make_client
from ..batch import Batch, BatchResult, Recipient
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
        self.compress = settings.delivery.sendgrid.compress
        # SendGrid's limit; a test may lower it (with the fake's) to see a split at small sizes.
        self.max_request_bytes = request_body.MAX_REQUEST_BYTES
        self.mail_send = JsonPoster(self.client, "mail", "send")
        self.requests = 0

    def clone(self) -> SendGridBackend:
        """Another instance for another request in flight: its own client, with this one's key,
        host, sandbox flag and request limit."""
        other = SendGridBackend(
            self.settings, api_key=self.client.api_key, host=self.host, sandbox=self.sandbox
        )
        other.max_request_bytes = self.max_request_bytes
        return other

    def __repr__(self) -> str:  # never show the key
        return f"SendGridBackend(host={self.host!r}, sandbox={self.sandbox})"

    # The request body --------------------------------------------------------------------------

    def payload(self, batch: Batch) -> dict:
        """The mail-send body for one batch, as a dict (encoded once, by `request_body`)."""
        s = self.settings
        body: dict = {
            "personalizations": self.personalizations(batch),
            "from": {"email": s.sender.email, "name": one_line(s.sender.name)},
            "subject": one_line(batch.subject),
            "content": [
                {"type": "text/plain", "value": batch.email.text},
                {"type": "text/html", "value": batch.email.html},
            ],
            "categories": ["newsletter-proof" if batch.proof else "newsletter", batch.issue_id],
            "headers": {"List-Id": list_id(s)},  # the same for every recipient
            "tracking_settings": self.tracking_settings(),
        }
        if s.reply_to:
            body["reply_to"] = {"email": str(s.reply_to)}
        if s.delivery.sendgrid.asm_group_id is not None:
            body["asm"] = {"group_id": s.delivery.sendgrid.asm_group_id}
        mail_settings = self.mail_settings()
        if mail_settings:
            body["mail_settings"] = mail_settings
        if batch.send_at is not None:
            body["send_at"] = int(batch.send_at)
        if batch.schedule_id:
            body["batch_id"] = batch.schedule_id
        return body

    def personalizations(self, batch: Batch) -> list[dict]:
        """One personalization a recipient: address, values, List-Unsubscribe, custom args.
        Runs for every recipient of the send: names are looked up once, outside the loop."""
        substitutions = batch.email.substitutions
        args_for = self.custom_args
        post = LIST_UNSUBSCRIBE_POST
        out = []
        append = out.append
        for r in batch.recipients:
            to = {"email": r.email}
            name = to_name(r.name) if r.name else ""
            if name:
                to["name"] = name
            append(
                {
                    "to": [to],
                    "substitutions": substitutions(r.values),
                    "headers": {
                        "List-Unsubscribe": f"<{r.unsubscribe_url}>",  # our own URL: one line
                        "List-Unsubscribe-Post": post,
                    },
                    "custom_args": args_for(batch, r),
                }
            )
        return out

    def custom_args(self, batch: Batch, recipient: Recipient) -> dict[str, str]:
        """What ties this recipient's message to the ledger (copied into every event)."""
        if recipient.subscriber_id is None:
            return {custom_args.ISSUE: batch.issue_id, custom_args.PROOF: "true"}
        return {
            custom_args.ISSUE: batch.issue_id,
            custom_args.SUBSCRIBER: str(recipient.subscriber_id),
        }

    def tracking_settings(self) -> dict:
        """SendGrid's tracking for every message of the send: click and open tracking as the
        settings say, SendGrid's subscription footer never (`sendgrid/tracking.py`)."""
        return tracking.tracking_settings(self.settings.delivery.sendgrid)

    def mail_settings(self) -> dict:
        """SendGrid's mail settings for every message of the send (none by default)."""
        if self.sandbox:
            return {"sandbox_mode": {"enable": True}}
        return {}

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
        groups = [recipients]  # what is left to send, one request each, in order
        while groups:
            group = groups.pop(0)
            if not group:
                continue
            body = self.payload(batch.only(group))
            group = self._drop_oversized(body, group, result)
            if len(group) < len(body["personalizations"]):
                groups.insert(0, group)  # rebuilt without those that cannot go
                continue
            data = request_body.encode(body)
            if len(data) >= self.max_request_bytes:
                parts, alone = request_body.split(body, self.max_request_bytes)
                for index in alone:
                    result.failed[group[index].key] = (
                        "too large to send: its personalization alone would make a request of "
                        f"{self.max_request_bytes:,} bytes or more"
                    )
                groups[:0] = [[group[i] for i in part] for part in parts]
                continue
            result.in_flight = [r.key for r in group]
            try:
                response = self._send_mail(data, len(group))
            except RecipientsRefused as exc:
                # Nothing was accepted: fail those named, send the request again without them.
                for index, reason in exc.refused.items():
                    result.failed[group[index].key] = reason
                groups.insert(0, [r for i, r in enumerate(group) if i not in exc.refused])
                continue
            except OutcomeUnknown as exc:
                # Only this request's recipients may have gone out; later groups were not tried.
                if exc.recipients is None:
                    exc.recipients = list(result.in_flight)
                raise
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            if not message_id:
                message_id = "sandbox" if self.sandbox else f"sendgrid-{response.status_code}"
            for r in group:
                result.sent[r.key] = message_id
            result.in_flight = []
        result.in_flight = []

    @staticmethod
    def _drop_oversized(body: dict, group: list[Recipient], result: BatchResult) -> list:
        """`group` without the recipients whose personalization SendGrid would refuse for its
        size (each failed alone, with the reason)."""
        message_args = request_body.string_map_bytes(body.get("custom_args"))
        kept = []
        for recipient, personalization in zip(group, body["personalizations"], strict=True):
            problem = request_body.personalization_problem(personalization, message_args)
            if problem:
                result.failed[recipient.key] = f"cannot send to {recipient.email!r}: {problem}"
            else:
                kept.append(recipient)
        return kept

    def post_mail(self, body: dict) -> str:
        """One mail-send request made elsewhere (the signup form's emails): its message id.
        Raises as `deliver` does."""
        response = self._send_mail(request_body.encode(body), len(body["personalizations"]))
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        return message_id or f"sendgrid-{response.status_code}"

    def create_schedule_id(self) -> str:
        """A new SendGrid batch id, so a scheduled send can be paused or cancelled as one."""
        response = self._post(self.client.client.mail.batch, "the batch id request")
        try:
            return json.loads(response.body)["batch_id"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                "SendGrid did not return a batch id for the scheduled send"
            ) from None

    def _send_mail(self, data: bytes, personalizations: int):
        """One mail-send request of the encoded body `data` (gzipped when so configured)."""
        self.requests += 1
        gzipped = self.compress
        if gzipped:
            data = request_body.compress(data)
        return call(
            lambda: self.mail_send.post(data, gzipped=gzipped),
            host=self.host,
            timeout=self.timeout,
            action="the mail send",
            forbidden="check the key's permissions and that the sender address is verified",
            idempotent=False,
            personalizations=personalizations,
        )

    def _post(self, endpoint, action: str):
        """One POST without a body; what SendGrid's answer or silence means is `call`'s."""
        self.requests += 1
        return call(
            endpoint.post,
            host=self.host,
            timeout=self.timeout,
            action=action,
            forbidden="check the key's permissions and that the sender address is verified",
            idempotent=False,
        )
