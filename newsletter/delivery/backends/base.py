"""The small protocol every delivery backend speaks, and what its failures mean.

The send loop hands a backend one `Batch` (one segment's rendered email and up to `max_batch`
recipients with their values) and a `BatchResult` to fill in as messages are accepted (both in
`delivery/batch.py`). A backend reports a failure by raising one of these exceptions (from
`newsletter.errors`); each says what the loop may safely do next, so the loop knows nothing
about SMTP or HTTP:

- `TemporaryFailure`: surely not accepted (429, 503, connection refused...): retry later.
- `OutcomeUnknown`: maybe accepted (timeout after sending, dropped answer, 500): never resend.
- `PayloadRejected`: the request itself is wrong (400, 413): mark failed, stop.
- `AuthenticationError` / `SendRefused`: refused outright (401, 403...): nothing sent, stop.

A list send may keep several batches in flight (`delivery.concurrency`), each on its own thread
with its own backend instance (`clone`): no instance is ever used by two threads at once. A
backend that cannot make another instance of itself sends one batch at a time.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ...errors import DeliveryError
from ..batch import Batch, BatchResult

__all__ = ["Backend", "BaseBackend"]


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

    def clone(self) -> Backend | None:
        """Another instance configured like this one, for another batch in flight at the same
        time (its own connection); None when this backend sends one batch at a time."""

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

    def clone(self) -> Backend | None:
        return None

    def create_schedule_id(self) -> str:
        raise DeliveryError(f"the {self.name} backend cannot schedule a send (--at needs sendgrid)")

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
