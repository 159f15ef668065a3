"""SendGrid's signed event webhook: verify a batch, then apply it once.

Bounces, drops for an invalid address, spam reports and unsubscribes change the subscriber's
status (source `sendgrid`); delivered, bounced and dropped are written on the issue's ledger row,
found through the custom args (`custom_args`) that the sender puts on every message (SendGrid
flattens custom args into each event); an event that proves SendGrid took the message makes an
`unknown` row `sent` (`acceptance`). Every event id applied is remembered, so a retried or
replayed batch changes nothing the second time.

A batch signed longer ago than `delivery.sendgrid.webhook_max_age` is refused (a captured batch
cannot be replayed later). In a signed batch each event is checked on its own: one that cannot be
read or applied (a subscriber id no database holds, a time past the year 9999, JSON nested
without end) is skipped and logged, and the others are applied: an error answer would have
SendGrid retry the whole batch for a day, to the same end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Environment, Settings
from ..errors import NewsletterError
from ..store import Database
from ..store import events as store_events
from ..store import subscribers as store_subscribers
from ..subscribers import rules
from . import clicks, custom_args
from .acceptance import ACCEPTED, resolve_unknown
from .suppressions import iso_from_epoch

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

HANDLED = ACCEPTED | {"spamreport", "unsubscribe", "group_unsubscribe", "click"}
DEFAULT_MAX_AGE = 600  # seconds; the setting is delivery.sendgrid.webhook_max_age
# SendGrid's events are flat objects with a list or two (categories): far below this.
MAX_EVENT_DEPTH = 16
MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z, the last second a date can hold

log = logging.getLogger(__name__)


class WebhookNotConfigured(NewsletterError):
    """No public key to verify SendGrid's signature with (or one that cannot be read)."""


class SignatureInvalid(NewsletterError):
    """The batch is not signed by SendGrid: a missing, malformed or wrong signature."""


class WebhookTooOld(SignatureInvalid):
    """Correctly signed, but too long ago (or ahead): a replayed capture, or a skewed clock."""


class PayloadInvalid(NewsletterError):
    """A correctly signed body that is not a JSON list of events."""


def public_key_text(settings: Settings, environment: Environment | None = None) -> str | None:
    """The verification key: `delivery.sendgrid.webhook_public_key`, else
    SENDGRID_WEBHOOK_PUBLIC_KEY of `environment` (default: the process's)."""
    key = settings.delivery.sendgrid.webhook_public_key
    if not key:
        key = (environment or Environment.read()).sendgrid_webhook_public_key
    return key.strip() if key and key.strip() else None


class WebhookVerifier:
    """Checks SendGrid's ECDSA signature over timestamp + body, with the `sendgrid` helper."""

    def __init__(self, public_key: str, max_age: float = DEFAULT_MAX_AGE):
        from sendgrid.helpers.eventwebhook import EventWebhook

        self.max_age = max_age
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
    def from_settings(
        cls, settings: Settings, environment: Environment | None = None
    ) -> WebhookVerifier:
        key = public_key_text(settings, environment)
        if key is None:
            raise WebhookNotConfigured(
                "no SendGrid webhook public key: set delivery.sendgrid.webhook_public_key in "
                "newsletter.yaml or SENDGRID_WEBHOOK_PUBLIC_KEY"
            )
        return cls(key, max_age=settings.delivery.sendgrid.webhook_max_age)

    def verify(
        self, body: bytes, signature: str | None, timestamp: str | None, now: float | None = None
    ) -> None:
        """Raise SignatureInvalid unless SendGrid signed exactly these bytes at this timestamp,
        and WebhookTooOld unless that timestamp is within `max_age` seconds of now."""
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
        now = time.time() if now is None else now
        signed_at = int(timestamp) if re.fullmatch(r"[0-9]{1,12}", timestamp) else None
        if signed_at is None or abs(now - signed_at) > self.max_age:
            raise WebhookTooOld(
                f"the webhook batch was not signed within the last {self.max_age:g} seconds"
            )


@dataclass
class WebhookReport:
    received: int = 0
    applied: int = 0  # events acted on for the first time
    replayed: int = 0  # seen before: nothing done
    ignored: int = 0  # event types we do not act on, or entries that are not events
    unknown_resolved: int = 0  # `unknown` ledger rows now `sent`: SendGrid had the message
    noted_in_flight: int = 0  # the same word for `submitting` rows: kept until they are unknown
    invalid: int = 0  # events we act on that could not be read or checked: skipped, logged
    status_changes: int = 0
    ledger_updates: int = 0
    unmatched: list[str] = field(default_factory=list)  # why some events matched nothing

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "applied": self.applied,
            "replayed": self.replayed,
            "ignored": self.ignored,
            "invalid": self.invalid,
            "status_changes": self.status_changes,
            "ledger_updates": self.ledger_updates,
            "unknown_resolved": self.unknown_resolved,
            "noted_in_flight": self.noted_in_flight,
        }


@dataclass(frozen=True)
class Unreadable:
    """An entry of the batch that could not be parsed on its own, and why."""

    reason: str


def parse_events(body: bytes) -> list[Any]:
    """The batch's entries: parsed whole, or, when that fails, each on its own, an `Unreadable`
    standing for each entry that cannot be parsed (one nested thousands deep makes `json.loads`
    give up with RecursionError; a number of 5,000 digits with ValueError)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadInvalid("the webhook body is not UTF-8 JSON") from None
    try:
        events = json.loads(text)
    except (ValueError, RecursionError):
        return _entries_one_by_one(text)
    if not isinstance(events, list):
        raise PayloadInvalid("the webhook body is not a list of events")
    return events


# A JSON string (escapes included) or one of the characters that give the structure.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)


def _entries_one_by_one(text: str) -> list[Any]:
    """Split the top-level list at its commas without parsing it, then parse each entry."""
    if not text.lstrip(" \t\r\n").startswith("["):
        raise PayloadInvalid("the webhook body is not a list of events")
    entries: list[Any] = []
    depth, start, end = 0, None, None

    def add(stop: int, closing: bool) -> None:
        piece = text[start:stop]
        if closing and not entries and not piece.strip(" \t\r\n"):
            return  # an empty list
        try:
            entries.append(json.loads(piece))
        except RecursionError:
            entries.append(Unreadable("nested too deeply"))
        except ValueError:
            entries.append(Unreadable("not JSON"))

    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth == 1:
                start = match.end()
        elif token in "]}":
            depth -= 1
            if depth == 0:
                add(match.start(), closing=True)
                end = match.end()
                break
        elif depth == 1:  # a comma between entries
            add(match.start(), closing=False)
            start = match.end()
    if end is None or text[end:].strip(" \t\r\n"):
        raise PayloadInvalid("the webhook body is not JSON")
    return entries


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, list | dict))
    return deepest


def _coerced(max_length: int | None = None, pattern: str | None = None):
    """Text that SendGrid may also send as a number (ids), checked as text."""
    return Annotated[str, Field(coerce_numbers_to_str=True, max_length=max_length, pattern=pattern)]


class WebhookEvent(BaseModel):
    """The fields of a SendGrid event that are read here, each checked (the rest are not read):
    what a database column, a date or a lookup could not take is refused before it gets there."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: Annotated[str, Field(max_length=64)]
    email: Annotated[str, Field(max_length=320)] | None = None
    timestamp: (
        Annotated[float, Field(strict=True, ge=0, le=MAX_EPOCH, allow_inf_nan=False)] | None
    ) = None
    sg_event_id: Annotated[str, Field(max_length=256)] | None = None
    type: Annotated[str, Field(max_length=64)] | None = None
    reason: _coerced() | None = None
    asm_group_id: _coerced(max_length=20) | None = None
    issue: Annotated[str, Field(max_length=200)] | None = Field(None, alias=custom_args.ISSUE)
    # SQLite's INTEGER holds 19 digits: a 40-digit id would make the lookup itself fail.
    subscriber: _coerced(pattern=r"^[0-9]{1,18}$") | None = Field(
        None, alias=custom_args.SUBSCRIBER
    )


def event_problem(event: dict) -> str | None:
    """Why a handled event cannot be applied (None when it can)."""
    if _depth(event) > MAX_EVENT_DEPTH:  # its id is a hash of its JSON, which must be writable
        return f"nested more than {MAX_EVENT_DEPTH} levels deep"
    try:
        WebhookEvent.model_validate(event)
    except ValidationError as err:
        return "; ".join(
            f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in err.errors()
        )
    return None


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


def _handled(event: Any) -> bool:
    """An event of a type acted on (its type is text; `{"event": []}` is no event of ours)."""
    kind = event.get("event") if isinstance(event, dict) else None
    return isinstance(kind, str) and kind in HANDLED


def apply_events(settings: Settings, db: Database, events: list[Any]) -> WebhookReport:
    """Apply a verified batch in one transaction: all of it or (on an error) none, for a retry."""
    report = WebhookReport(received=len(events))
    with db.transaction():
        for number, event in enumerate(events, start=1):
            if isinstance(event, Unreadable):
                problem = event.reason
            elif not _handled(event):
                report.ignored += 1
                continue
            else:
                problem = event_problem(event)
            if problem is not None:
                # Logged without the event's content, which holds an email address.
                log.warning(
                    "SendGrid webhook: event %d of %d skipped: %s", number, len(events), problem
                )
                report.invalid += 1
                continue
            if not store_events.remember_event(db, event_id(event)):
                report.replayed += 1
                continue
            report.applied += 1
            _apply_one(settings, db, event, report)
    return report


def _apply_one(settings: Settings, db: Database, event: dict, report: WebhookReport) -> None:
    if event.get("event") == "click":  # counted in `sendgrid.clicks`, never per person by default
        unmatched = clicks.apply_click(settings, db, event)
        if unmatched:
            report.unmatched.append(unmatched)
        return
    at = _event_time(event)
    change = _status_for(event, settings)
    if change is not None:
        email = event.get("email")
        subscriber = (
            store_subscribers.get_row_by_email(db, email) if isinstance(email, str) else None
        )
        if subscriber is None:
            report.unmatched.append(f"{event.get('event')}: not a subscriber")
        elif rules.change(db, subscriber, rules.Source.WEBHOOK, *change, at=at) == "changed":
            report.status_changes += 1
    delivery = _delivery_for(event)
    if delivery is not None:
        issue_id = event.get(custom_args.ISSUE)
        subscriber_id = str(event.get(custom_args.SUBSCRIBER) or "")
        if not isinstance(issue_id, str) or not subscriber_id.isdigit():
            report.unmatched.append(f"{event.get('event')}: no newsletter custom args")
        elif store_events.record_delivery(
            db, issue_id, int(subscriber_id), delivery, at or store_events.now()
        ):
            report.ledger_updates += 1
    if event.get("event") in ACCEPTED:
        outcome = resolve_unknown(db, event, at)  # 'resolved', 'noted' or None
        report.unknown_resolved += outcome == "resolved"
        report.noted_in_flight += outcome == "noted"


class WebhookReceiver:
    """SendGrid's webhook as a server receives it: each request verified, then applied.

    The verifier is made on the first request and kept, so that a server started before the
    public key was set up answers WebhookNotConfigured (and SendGrid retries) rather than not
    starting at all.
    """

    def __init__(
        self,
        settings: Settings,
        environment: Environment | None = None,
        verifier: WebhookVerifier | None = None,
    ):
        self.settings = settings
        self.environment = environment
        self.verifier = verifier

    def receive(
        self,
        db: Database | Callable[[], Database],
        body: bytes,
        signature: str | None,
        timestamp: str | None,
        now: float | None = None,
    ) -> WebhookReport:
        """Verify a webhook request and apply its events. `db` may be a function that opens
        the database: it is called only once the batch is verified, so unsigned requests cost
        nothing.

        Raises WebhookNotConfigured (no key), SignatureInvalid (nothing is read or changed; its
        WebhookTooOld when signed too long ago) or PayloadInvalid (signed, but not a list of
        events).
        """
        if self.verifier is None:
            self.verifier = WebhookVerifier.from_settings(self.settings, self.environment)
        self.verifier.verify(body, signature, timestamp, now=now)
        database = db() if callable(db) else db
        return apply_events(self.settings, database, parse_events(body))


def handle_webhook(
    settings: Settings,
    db: Database,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    verifier: WebhookVerifier | None = None,
    now: float | None = None,
    environment: Environment | None = None,
) -> WebhookReport:
    """Verify one webhook request and apply its events (see `WebhookReceiver.receive`)."""
    receiver = WebhookReceiver(settings, environment, verifier)
    return receiver.receive(db, body, signature, timestamp, now=now)
