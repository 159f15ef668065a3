"""The small protocol every delivery backend speaks, and the outcomes it reports.

The send loop hands a backend one `Batch` (one segment's rendered email and up to `max_batch`
recipients with their values) and a `BatchResult` to fill in as messages are accepted. A backend
reports a failure by raising one of the exceptions below; each says what the loop may safely do
next, so the loop knows nothing about SMTP or HTTP:

- `TemporaryFailure`: surely not accepted (429, 503, connection refused...): retry later.
- `OutcomeUnknown`: maybe accepted (timeout after sending, dropped answer, 500): never resend.
- `PayloadRejected`: the request itself is wrong (400, 413): mark failed, stop.
- `AuthenticationError` / `SendRefused`: refused outright (401, 403...): nothing sent, stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ...errors import AuthenticationError, DeliveryError, PayloadRejected
from ...render import RenderedEmail

__all__ = [
    "AuthenticationError",
    "Backend",
    "BaseBackend",
    "Batch",
    "BatchResult",
    "OutcomeUnknown",
    "PayloadRejected",
    "Recipient",
    "SendRefused",
    "TemporaryFailure",
]

LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"  # RFC 8058 one-click unsubscribe


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee and the values filled into the segment's placeholders for them.

    `subscriber_id` is None for a proof (not a subscriber; never recorded in the ledger).
    `values` has every name in `render.RECIPIENT_FIELDS`.
    """

    subscriber_id: int | None
    email: str
    name: str
    values: dict[str, str]

    @property
    def unsubscribe_url(self) -> str:
        return self.values["unsubscribe_url"]


@dataclass(frozen=True)
class Batch:
    """What one `deliver` call sends: one segment's email to a few recipients."""

    issue_id: str
    number: int  # the ledger's batch_no (0 for a proof)
    email: RenderedEmail
    recipients: list[Recipient]
    subject: str
    proof: bool = False
    send_at: int | None = None  # Unix time to deliver at (SendGrid scheduling)
    schedule_id: str | None = None  # SendGrid batch_id of a scheduled send

    def only(self, recipients: list[Recipient]) -> Batch:
        """The same batch for fewer recipients (what is left to retry)."""
        return Batch(
            self.issue_id,
            self.number,
            self.email,
            recipients,
            self.subject,
            self.proof,
            self.send_at,
            self.schedule_id,
        )


@dataclass
class BatchResult:
    """Filled in by the backend as it goes, so a failure half-way loses nothing already done.

    Keys are subscriber ids (or, for proofs, email addresses). A recipient's own problem (an
    address the backend cannot write, a recipient the server refuses) goes in `failed`, and the
    backend goes on with the others; it raises only for what concerns the whole batch.
    `in_flight` names the recipients whose message is being handed over right now: if anything
    unforeseen (an interrupt, a bug) stops the backend, those may have gone out and become
    `unknown`, the others were never tried and stay pending. None: the backend does not say,
    and every recipient not yet recorded is `unknown`.
    """

    sent: dict = field(default_factory=dict)  # id → provider message id
    failed: dict = field(default_factory=dict)  # id → reason (this recipient only, permanent)
    in_flight: list | None = None


class TemporaryFailure(DeliveryError):
    """The request surely was not accepted and may be retried; `retry_after` in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(DeliveryError):
    """The request may or may not have been accepted: its recipients must not be sent again
    automatically. `recipients` are the ids concerned; None means every one not yet recorded."""

    def __init__(self, message: str, recipients: list | None = None):
        super().__init__(message)
        self.recipients = recipients


class SendRefused(DeliveryError):
    """Refused outright and surely not accepted (not a credentials problem): stop, resend later."""


@runtime_checkable
class Backend(Protocol):
    """What the send loop needs of a backend."""

    name: str
    requires_secret: bool  # refuse to send links signed with the development key
    max_batch: int  # most recipients one `deliver` call takes
    supports_send_at: bool

    def open(self) -> None:
        """Get ready to send (connect, check credentials); called once before the first batch."""

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        """Send `batch`, recording each acceptance in `result`; raise the exceptions above."""

    def create_schedule_id(self) -> str:
        """A provider id grouping a scheduled send (SendGrid batch_id)."""

    def close(self) -> None:
        """Release connections; called once, also after a failure."""


class BaseBackend:
    """Defaults for the optional parts of the protocol."""

    name = "base"
    requires_secret = True
    max_batch = 1000
    supports_send_at = False

    def open(self) -> None:
        pass

    def create_schedule_id(self) -> str:
        raise DeliveryError(f"the {self.name} backend cannot schedule a send (--at needs sendgrid)")

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
