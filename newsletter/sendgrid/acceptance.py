"""SendGrid's word that it accepted a message, applied to the ledger: an event about a message
proves SendGrid had it, so an `unknown` row (its request's answer was lost) becomes `sent`, and
`send --retry-unknown` does not mail that person twice. Called by the webhook for each event.
"""

from __future__ import annotations

from ..store import Database
from ..store import events as store_events
from . import custom_args

# Events that SendGrid sends only for a message it accepted.
ACCEPTED = frozenset({"processed", "delivered", "deferred", "bounce", "dropped"})


def resolve_unknown(db: Database, event: dict, at: str | None) -> str | None:
    """Apply one accepting event (inside the webhook's transaction): an `unknown` row of its
    issue and subscriber becomes `sent` with the event as its reason ('resolved'). A row still
    `submitting` (a crashed send's, until the next send recovers it) keeps its state and the
    word is kept for when it turns `unknown` ('noted'). Other rows, and events without our
    custom args, change nothing (None)."""
    issue_id = event.get(custom_args.ISSUE)
    subscriber_id = str(event.get(custom_args.SUBSCRIBER) or "")
    if not isinstance(issue_id, str) or not subscriber_id.isdigit():
        return None
    reason = store_events.accepted_reason("SendGrid", event["event"], at or store_events.now())
    return store_events.accept_unknown(db, issue_id, int(subscriber_id), reason)
