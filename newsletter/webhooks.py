"""SendGrid's signed event webhook: verify a batch, then apply it once.

Bounces, drops for an invalid address, spam reports and unsubscribes change the subscriber's
status (source `sendgrid`); delivered, bounced and dropped are written on the issue's ledger row,
found through the `newsletter_issue` and `newsletter_subscriber` custom args that the sender puts
on every message (SendGrid flattens custom args into each event). Every event id applied is
remembered, so a retried or replayed batch changes nothing the second time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from . import status_rules as rules
from .config import Settings
from .errors import NewsletterError
from .store import Database
from .store import events as store_events
from .store import subscribers as store_subscribers
from .suppressions import iso_from_epoch

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# The custom args the sender sets on every personalization.
ISSUE_ARG = "newsletter_issue"
SUBSCRIBER_ARG = "newsletter_subscriber"

HANDLED = frozenset(
    {"bounce", "dropped", "delivered", "spamreport", "unsubscribe", "group_unsubscribe"}
)


class WebhookNotConfigured(NewsletterError):
    """No public key to verify SendGrid's signature with (or one that cannot be read)."""


class SignatureInvalid(NewsletterError):
    """The batch is not signed by SendGrid: a missing, malformed or wrong signature."""


class PayloadInvalid(NewsletterError):
    """A correctly signed body that is not a JSON list of events."""


def public_key_text(settings: Settings) -> str | None:
    """The verification key: `delivery.sendgrid.webhook_public_key`, else SENDGRID_WEBHOOK_PUBLIC_KEY."""
    key = settings.delivery.sendgrid.webhook_public_key or os.environ.get(
        "SENDGRID_WEBHOOK_PUBLIC_KEY"
    )
    return key.strip() if key and key.strip() else None


class WebhookVerifier:
    """Checks SendGrid's ECDSA signature over timestamp + body, with the `sendgrid` helper."""

    def __init__(self, public_key: str):
        from sendgrid.helpers.eventwebhook import EventWebhook

        # SendGrid shows the key as base64 DER; accept a pasted PEM block as well.
        body = "".join(
            line.strip() for line in public_key.strip().splitlines() if "-----" not in line
        )
        try:
            self._helper = EventWebhook(body)
        except (ValueError, TypeError) as exc:
            raise WebhookNotConfigured(
                f"the SendGrid webhook public key cannot be read: {exc}"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookVerifier:
        key = public_key_text(settings)
        if key is None:
            raise WebhookNotConfigured(
                "no SendGrid webhook public key: set delivery.sendgrid.webhook_public_key in "
                "newsletter.yaml or SENDGRID_WEBHOOK_PUBLIC_KEY"
            )
        return cls(key)

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        """Raise SignatureInvalid unless SendGrid signed exactly these bytes at this timestamp."""
        if not signature or not timestamp:
            raise SignatureInvalid("the webhook request is not signed")
        try:
            # The helper signs text; decoding strictly keeps the bytes exactly as they came.
            payload = body.decode("utf-8")
            base64.b64decode(signature, validate=True)
            valid = self._helper.verify_signature(payload, signature, timestamp)
        except (UnicodeDecodeError, binascii.Error, ValueError, TypeError):
            valid = False
        if not valid:
            raise SignatureInvalid("the webhook signature does not match")


@dataclass
class WebhookReport:
    received: int = 0
    applied: int = 0  # events acted on for the first time
    replayed: int = 0  # seen before: nothing done
    ignored: int = 0  # event types we do not act on, or malformed entries
    status_changes: int = 0
    ledger_updates: int = 0
    unmatched: list[str] = field(default_factory=list)  # why some events matched nothing

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "applied": self.applied,
            "replayed": self.replayed,
            "ignored": self.ignored,
            "status_changes": self.status_changes,
            "ledger_updates": self.ledger_updates,
        }


def parse_events(body: bytes) -> list[Any]:
    try:
        events = json.loads(body)
    except ValueError:
        raise PayloadInvalid("the webhook body is not JSON") from None
    if not isinstance(events, list):
        raise PayloadInvalid("the webhook body is not a list of events")
    return events


def event_id(event: dict) -> str:
    """SendGrid's `sg_event_id`; some events (a drop for an invalid address) have none, so
    those are known by a hash of their content, which a replay repeats exactly."""
    sg_id = event.get("sg_event_id")
    if isinstance(sg_id, str) and sg_id:
        return sg_id
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _status_for(event: dict, settings: Settings) -> tuple[str, str] | None:
    """(status, reason) that the event sets, or None when it leaves the status alone."""
    kind = event.get("event")
    reason = str(event.get("reason") or "").strip()
    if kind == "bounce":
        # A "blocked" bounce is a temporary refusal (SendGrid lists it under blocks, not
        # bounces): the address may work next month.
        if str(event.get("type") or "bounce") == "blocked":
            return None
        return "bounced", f"SendGrid bounce: {reason}" if reason else "SendGrid bounce"
    if kind == "dropped":
        # Only a drop for the address itself; "Bounced Address", "Unsubscribed Address" and
        # the like come from SendGrid's suppression lists, which the sync reads, and
        # "Invalid SMTPAPI header" is our own fault, not the address's.
        lowered = reason.lower()
        if lowered.startswith("invalid") and "smtpapi" not in lowered and "header" not in lowered:
            return "invalid", f"SendGrid dropped: {reason}"
        return None
    if kind == "spamreport":
        return "complained", "SendGrid spam report"
    if kind == "unsubscribe":
        return "unsubscribed", "SendGrid unsubscribe"
    if kind == "group_unsubscribe":
        ours = settings.delivery.sendgrid.asm_group_id
        group = event.get("asm_group_id")
        # Another unsubscribe group of the same account is another mailing, not this one.
        if ours is not None and group is not None and str(group) != str(ours):
            return None
        return "unsubscribed", "SendGrid group unsubscribe"
    return None


def _delivery_for(event: dict) -> str | None:
    return {"delivered": "delivered", "bounce": "bounced", "dropped": "dropped"}.get(
        event.get("event")
    )


def _event_time(event: dict) -> str | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and stamp >= 0:
        return iso_from_epoch(stamp)
    return None


def apply_events(settings: Settings, db: Database, events: list[Any]) -> WebhookReport:
    """Apply a verified batch in one transaction: all of it or (on an error) none, for a retry."""
    report = WebhookReport(received=len(events))
    with db.transaction():
        for event in events:
            if not isinstance(event, dict) or event.get("event") not in HANDLED:
                report.ignored += 1
                continue
            if not store_events.remember_event(db, event_id(event)):
                report.replayed += 1
                continue
            report.applied += 1
            _apply_one(settings, db, event, report)
    return report


def _apply_one(settings: Settings, db: Database, event: dict, report: WebhookReport) -> None:
    at = _event_time(event)
    change = _status_for(event, settings)
    if change is not None:
        email = event.get("email")
        subscriber = store_subscribers.get_by_email(db, email) if isinstance(email, str) else None
        if subscriber is None:
            report.unmatched.append(f"{event.get('event')}: not a subscriber")
        elif rules.change(db, subscriber, rules.Source.WEBHOOK, *change, at=at) == "changed":
            report.status_changes += 1
    delivery = _delivery_for(event)
    if delivery is not None:
        issue_id = event.get(ISSUE_ARG)
        subscriber_id = str(event.get(SUBSCRIBER_ARG) or "")
        if not isinstance(issue_id, str) or not subscriber_id.isdigit():
            report.unmatched.append(f"{event.get('event')}: no newsletter custom args")
        elif store_events.record_delivery(
            db, issue_id, int(subscriber_id), delivery, at or store_events.now()
        ):
            report.ledger_updates += 1


def handle_webhook(
    settings: Settings,
    db: Database,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    verifier: WebhookVerifier | None = None,
) -> WebhookReport:
    """Verify a webhook request and apply its events.

    Raises WebhookNotConfigured (no key), SignatureInvalid (nothing is read or changed) or
    PayloadInvalid (signed, but not a list of events).
    """
    verifier = verifier or WebhookVerifier.from_settings(settings)
    verifier.verify(body, signature, timestamp)
    return apply_events(settings, db, parse_events(body))
