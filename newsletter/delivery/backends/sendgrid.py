"""The SendGrid backend: one v3 mail-send request per batch of one segment (≤ 1000 recipients).

The segment's HTML and text go once in `content`; each personalization carries the recipient's
`substitutions` (a plain and an HTML-escaped key per value), their own List-Unsubscribe headers,
and `custom_args` naming the issue and subscriber, which is how delivery webhooks find the
ledger row. The API key comes only from SENDGRID_API_KEY and is never printed or logged.

SendGrid refuses a whole request for one bad personalization (400): the recipients it names are
failed alone and the request is sent again without them, so one recipient's problem never
stops the batch. Names go as JSON, as stored; SendGrid writes (and encodes) the headers.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error

import python_http_client
import sendgrid

from ...config import Settings
from ...errors import AuthenticationError, DeliveryError, PayloadRejected
from ..message import check_sender, list_id, one_line, wire_address
from .base import (
    LIST_UNSUBSCRIBE_POST,
    BaseBackend,
    Batch,
    BatchResult,
    OutcomeUnknown,
    SendRefused,
    TemporaryFailure,
)

DEFAULT_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000  # SendGrid's limit per request
CUSTOM_ARG_ISSUE = "newsletter_issue"  # the webhook handler finds ledger rows by these two keys
CUSTOM_ARG_SUBSCRIBER = "newsletter_subscriber"
CUSTOM_ARG_PROOF = "newsletter_proof"
RETRY_STATUSES = (429, 502, 503, 504)  # surely not accepted: worth another try

# The HTTP client logs every request's headers, the Authorization header included, at DEBUG:
# keep it quiet whatever the application's logging level, so the key never reaches a log.
logging.getLogger("python_http_client").setLevel(logging.WARNING)

_NAME_UNSAFE = re.compile(r"[;,\"]")
_PERSONALIZATION_FIELD = re.compile(r"personalizations\.(\d+)(?:\.(.+))?")


class RecipientsRefused(PayloadRejected):
    """SendGrid refused the request for some personalizations only: `refused` maps their index
    in the request to SendGrid's reason. Nothing of the request was accepted."""

    def __init__(self, message: str, refused: dict[int, str] | None = None):
        super().__init__(message)
        self.refused = refused or {}


def to_name(name: str) -> str:
    """SendGrid refuses `;` and `,` in a display name (and CR/LF would be header injection)."""
    if name.isprintable() and not _NAME_UNSAFE.search(name):
        return name.strip()  # the usual case, without the regular expressions
    return " ".join(_NAME_UNSAFE.sub(" ", one_line(name)).split())


def retry_after_seconds(headers, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or X-RateLimit-Reset (Unix time)."""
    if headers is None:
        return None
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def _errors(body: bytes | str | None) -> list[dict]:
    """The `errors` list of SendGrid's JSON error body ([] when there is none)."""
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        errors = json.loads(text)["errors"]
    except (ValueError, KeyError, TypeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def refused_personalizations(body: bytes | str | None, count: int) -> dict[int, str] | None:
    """Index → reason when every error of a 400 names one of the request's `count`
    personalizations (a problem of those recipients only); None when any error is about the
    request as a whole, or names no personalization that was sent."""
    errors = _errors(body)
    refused: dict[int, list[str]] = {}
    for item in errors:
        match = _PERSONALIZATION_FIELD.fullmatch(str(item.get("field") or ""))
        if match is None or int(match[1]) >= count:
            return None
        message = " ".join(str(item.get("message") or "refused").split())
        where = f" (field {match[2]})" if match[2] else ""
        refused.setdefault(int(match[1]), []).append(message + where)
    if not refused:
        return None
    return {i: "refused by SendGrid: " + "; ".join(reasons) for i, reasons in refused.items()}


def error_messages(body: bytes | str | None) -> str:
    """SendGrid's own error text from its JSON error body (or the raw body, shortened)."""
    if not body:
        return "no details given"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        errors = json.loads(text)["errors"]
        parts = []
        for item in errors[:5]:
            message = " ".join(str(item.get("message") or "").split())
            field = item.get("field")
            parts.append(f"{message} (field {field})" if field else message)
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return "; ".join(parts) + more
    except (ValueError, KeyError, TypeError, AttributeError):
        return " ".join(text.split())[:300]


def _key(recipient):
    return recipient.subscriber_id if recipient.subscriber_id is not None else recipient.email


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
    ):
        self.settings = settings
        api_key = api_key or os.environ.get("SENDGRID_API_KEY")
        if not api_key:
            raise DeliveryError(
                "SENDGRID_API_KEY is not set: put the API key in the environment to send with "
                "SendGrid (it is never read from a file)"
            )
        self.host = (host or os.environ.get("SENDGRID_API_HOST") or DEFAULT_HOST).rstrip("/")
        self.client = sendgrid.SendGridAPIClient(api_key=api_key, host=self.host)
        # The client waits forever unless told otherwise (and never retries: we do that).
        self.timeout = settings.delivery.timeout
        self.client.client.timeout = self.timeout
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
            args = {CUSTOM_ARG_ISSUE: batch.issue_id}
            if r.subscriber_id is None:
                args[CUSTOM_ARG_PROOF] = "true"
            else:
                args[CUSTOM_ARG_SUBSCRIBER] = str(r.subscriber_id)
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
            # Our own List-Unsubscribe headers and footer links stand; SendGrid adds none.
            "tracking_settings": {"subscription_tracking": {"enable": False}},
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

    def before_send(self, db) -> list[str]:
        """Pull SendGrid's suppressions first (when the settings say so), so that nobody
        SendGrid would drop is planned; those already planned are skipped when claimed."""
        from ...suppressions import sync_before_send

        report = sync_before_send(self.settings, db, client=self.client)
        if report is None:
            return []
        return [f"suppressions synced: {report.changed} subscribers newly suppressed"]

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        check_sender(self.settings)
        recipients = []
        for r in batch.recipients:
            try:
                wire_address(r.email)
            except ValueError as exc:
                result.failed[_key(r)] = f"cannot send to {r.email!r}: {exc}"
                continue
            recipients.append(r)
        result.in_flight = []
        while recipients:
            body = self.payload(batch.only(recipients))
            result.in_flight = [_key(r) for r in recipients]
            try:
                response = self._post(self.client.client.mail.send, body)
            except RecipientsRefused as exc:
                # Nothing was accepted: fail those named, send the request again without them.
                for index, reason in exc.refused.items():
                    result.failed[_key(recipients[index])] = reason
                recipients = [r for i, r in enumerate(recipients) if i not in exc.refused]
                continue
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            if not message_id:
                message_id = "sandbox" if self.sandbox else f"sendgrid-{response.status_code}"
            for r in recipients:
                result.sent[_key(r)] = message_id
            break
        result.in_flight = []

    def post_mail(self, body: dict) -> str:
        """One mail-send request made elsewhere (the signup form's emails): its message id.
        Raises as `deliver` does."""
        response = self._post(self.client.client.mail.send, body)
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        return message_id or f"sendgrid-{response.status_code}"

    def create_schedule_id(self) -> str:
        """A new SendGrid batch id, so a scheduled send can be paused or cancelled as one."""
        response = self._post(self.client.client.mail.batch, None)
        try:
            return json.loads(response.body)["batch_id"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                "SendGrid did not return a batch id for the scheduled send"
            ) from None

    def _post(self, endpoint, body: dict | None):
        self.requests += 1
        try:
            if body is None:
                return endpoint.post()
            return endpoint.post(request_body=body)
        except python_http_client.exceptions.HTTPError as err:
            count = len(body.get("personalizations", ())) if body else 0
            raise self._classify(err, count) from None
        except urllib.error.URLError as err:
            # Raised while connecting or writing the request, before any answer.
            reason = err.reason
            if isinstance(reason, ConnectionRefusedError | socket.gaierror):
                raise TemporaryFailure(
                    f"cannot connect to SendGrid at {self.host}: {reason}"
                ) from None
            raise OutcomeUnknown(
                f"the connection to SendGrid failed while sending the request ({reason}): "
                "it may or may not have been accepted"
            ) from None
        except TimeoutError:
            raise OutcomeUnknown(
                f"no answer from SendGrid within {self.timeout:g} s: the request may or may not "
                "have been accepted"
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise OutcomeUnknown(
                f"the connection to SendGrid dropped before an answer "
                f"({type(err).__name__}: {err}): the request may or may not have been accepted"
            ) from None

    def _classify(self, err, personalizations: int = 0) -> DeliveryError:
        status = err.status_code
        detail = error_messages(err.body)
        refused = refused_personalizations(err.body, personalizations) if status == 400 else None
        if refused:
            return RecipientsRefused(
                f"SendGrid refused {len(refused)} recipients: {detail}", refused
            )
        if status in RETRY_STATUSES:
            return TemporaryFailure(
                f"SendGrid answered {status}: {detail}",
                retry_after=retry_after_seconds(err.headers),
            )
        if status in (400, 413):
            return PayloadRejected(f"SendGrid refused the request ({status}): {detail}")
        if status == 401:
            return AuthenticationError(
                f"SendGrid refused the API key (401: {detail}); check SENDGRID_API_KEY"
            )
        if status == 403:
            return AuthenticationError(
                f"SendGrid refused to send (403: {detail}); check the key's permissions and "
                "that the sender address is verified"
            )
        if status >= 500:
            return OutcomeUnknown(
                f"SendGrid answered {status} ({detail}): the request may or may not have been "
                "accepted"
            )
        return SendRefused(
            f"SendGrid answered {status} ({detail}); is SENDGRID_API_HOST ({self.host}) right?"
        )
