"""What one `deliver` call carries and reports: a batch of one segment's email to a few
recipients, and the outcome of each recipient by key.

The send loop builds them, backends (`backends/`) and message building (`message`) read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..render import RenderedEmail


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
    def key(self) -> int | str:
        """How outcomes name this recipient (`BatchResult`, the ledger): the subscriber id, or
        the address for a proof."""
        return self.subscriber_id if self.subscriber_id is not None else self.email

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
        return dataclasses.replace(self, recipients=recipients)


@dataclass
class BatchResult:
    """Filled in by the backend as it goes, so a failure half-way loses nothing already done.

    Keys are `Recipient.key`. A recipient's own problem (an address the backend cannot write, a
    recipient the server refuses) goes in `failed`, and the backend goes on with the others; it
    raises only for what concerns the whole batch.
    `in_flight` names the recipients whose message is being handed over right now: if anything
    unforeseen (an interrupt, a bug) stops the backend, those may have gone out and become
    `unknown`, the others were never tried and stay pending. None: the backend does not say,
    and every recipient not yet recorded is `unknown`.
    """

    sent: dict = field(default_factory=dict)  # key → provider message id
    failed: dict = field(default_factory=dict)  # key → reason (this recipient only, permanent)
    in_flight: list | None = None
