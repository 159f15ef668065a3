"""Double opt-in: what a signup does, what its link does, and the purge of what has run out.

A signup never touches `subscribers`: it waits in `signups` with the SHA-256 of a random token,
which only the confirmation email carries. Whatever the address's state, the form's answer is
the same; what happens behind it:

| the address is | the form does (at most one email a day per address) |
| --- | --- |
| new, or unsubscribed | a pending signup and a confirmation email |
| pending | the confirmation again, with a new link (the old one stops working) |
| subscribed | a "you are already subscribed" email with their preferences link |
| bounced, complained, invalid, or unsubscribed over one of them | nothing |

The per-client limit (`signup.per_ip_per_hour`) and the per-address one are checked and recorded
in the same transaction as the signup, so they hold across processes and servers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from ..config import Settings
from ..errors import NewsletterError
from ..store import Database
from ..store import signups as store
from ..store import subscribers as store_subscribers
from ..store.consents import Consent
from ..store.signups import PendingSignup, Purged
from ..store.subscribers import Subscriber, TopicChoice, decode_topics, encode_topics
from ..subscribers import rules
from . import consent, iso
from .clients import IPAddress, client_key, recorded_ip
from .forms import SignupEntry, Stamp

ADDRESS_WINDOW = dt.timedelta(hours=24)  # at most one email a day to an address
CLIENT_WINDOW = dt.timedelta(hours=1)  # `signup.per_ip_per_hour` counts within this
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
CONFIRMED_REASON = "confirmed the link in the signup email"


class TooManySignups(NewsletterError):
    """This client has made `signup.per_ip_per_hour` signups in the last hour."""


class LinkNotUsable(NewsletterError):
    """A confirmation link that cannot be used: `state` is unknown, used or expired."""

    def __init__(self, state: LinkState):
        self.state = state
        super().__init__(f"this confirmation link is {state}")


LinkState = Literal["valid", "unknown", "used", "expired"]


@dataclass(frozen=True)
class Mailing:
    """An email the form asks for (sent after the answer, by `newsletter.signup.mail`)."""

    kind: Literal["confirm", "already"]
    email: str
    mailed_at: str  # the per-address mark it took (given back if the email cannot be sent)
    token: str | None = None  # confirm: the link's token (never stored)
    topics: TopicChoice | None = None  # confirm: what they chose
    subscriber_id: int | None = None  # already: whose preferences link


@dataclass(frozen=True)
class Visitor:
    """Where a signup came from, as far as the request says."""

    address: IPAddress | None
    user_agent: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def request_signup(
    db: Database,
    settings: Settings,
    entry: SignupEntry,
    stamp: Stamp,
    visitor: Visitor,
    secret: str,
    now: dt.datetime,
) -> Mailing | None:
    """Do what the table above says for this valid signup; the email to send, if any.

    Raises TooManySignups (nothing else written) when the client is over its limit.
    """
    at = iso(now)
    client = client_key(secret, visitor.address)
    with db.transaction():
        if store.attempts_since(db, client, iso(now - CLIENT_WINDOW)) >= (
            settings.signup.per_ip_per_hour
        ):
            raise TooManySignups("too many signups from this network in the last hour")
        store.add_attempt(db, client, at)
        subscriber = store_subscribers.get_row_by_email(db, entry.email)
        kind = _what_to_send(db, subscriber)
        if kind is None:
            return None
        last = store.last_mailed(db, entry.email)
        if last is not None and last > iso(now - ADDRESS_WINDOW):
            return None  # mailed in the last day: a pending link still works, or it waits
        store.set_mailed(db, entry.email, at)
        if kind == "already":
            return Mailing("already", entry.email, at, subscriber_id=subscriber.id)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = iso(now + dt.timedelta(hours=settings.signup.confirm_hours))
        text = consent.ConsentText.from_settings(settings)
        text.remember(db, at)
        store.put(
            db,
            PendingSignup(
                id=None,
                email=entry.email,
                token_hash=token_hash(token),
                name=entry.name,
                topics=encode_topics(entry.topics),
                requested_at=at,
                expires_at=expires_at,
                confirmed_at=None,
                ip=recorded_ip(visitor.address, settings.signup.record_ip),
                user_agent=visitor.user_agent,
                form_id=stamp.form_id,
                consent_version=text.version,
                consent_sha256=text.sha256,
                privacy_url=str(settings.privacy_url) if settings.privacy_url else None,
            ),
        )
    return Mailing("confirm", entry.email, at, token, entry.topics)


def _what_to_send(db: Database, subscriber: Subscriber | None) -> str | None:
    if subscriber is None:
        return "confirm"
    if subscriber.status == rules.SUBSCRIBED:
        return "already"
    # Whoever the rules would let a confirmation resubscribe gets one; a bounce, a complaint or
    # an invalid address (even under a later unsubscribe) gets nothing.
    if rules.may(db, subscriber, rules.Source.SIGNUP_CONFIRM, rules.SUBSCRIBED):
        return "confirm"
    return None


def give_back(db: Database, mailing: Mailing) -> None:
    """The email could not be sent: forget the per-address mark it took, so a new try can."""
    with db.transaction():
        if store.last_mailed(db, mailing.email) == mailing.mailed_at:
            store.set_mailed(db, mailing.email, None)


def look_up(db: Database, token: str, now: dt.datetime) -> tuple[LinkState, PendingSignup | None]:
    """What a confirmation link is now: valid, unknown (forged, cut short, purged), used or
    expired; and its signup (None when unknown). Reads only."""
    if not _TOKEN.fullmatch(token):
        return "unknown", None
    signup = store.by_token_hash(db, token_hash(token))
    if signup is None:
        return "unknown", None
    if signup.confirmed_at is not None:
        return "used", signup
    if signup.expires_at <= iso(now):
        return "expired", signup
    return "valid", signup


@dataclass(frozen=True)
class Confirmed:
    subscriber: Subscriber
    outcome: Literal["added", "resubscribed", "already subscribed"]


def confirm(db: Database, settings: Settings, token: str, now: dt.datetime) -> Confirmed:
    """Confirm a signup, in one transaction: the link is used up, the subscriber is added (or
    resubscribed, as `status_rules` allows a signup confirmation) with the chosen topics, and
    the consent record gets its row.

    Raises LinkNotUsable (nothing changed), or StatusRefused when the address has bounced,
    complained or is invalid since the signup (nothing changed; the link still works once that
    is cleared).
    """
    at = iso(now)
    with db.transaction():
        state, signup = look_up(db, token, now)
        if state != "valid" or not store.mark_confirmed(db, signup.id, at):
            raise LinkNotUsable("used" if state == "valid" else state)
        topics = decode_topics(signup.topics)
        subscriber = store_subscribers.get_row_by_email(db, signup.email)
        if subscriber is None:
            subscriber = rules.create(
                db,
                rules.Source.SIGNUP_CONFIRM,
                signup.email,
                signup.name,
                topics,
                reason=CONFIRMED_REASON,
            )
            outcome = "added"
        else:
            changed = rules.change(
                db, subscriber, rules.Source.SIGNUP_CONFIRM, rules.SUBSCRIBED, CONFIRMED_REASON
            )
            outcome = "resubscribed" if changed == "changed" else "already subscribed"
            store_subscribers.write_topics(db, subscriber.id, topics, "signup")
            if signup.name and signup.name != subscriber.name:
                store_subscribers.write_name(db, subscriber.id, signup.name, "signup")
            subscriber = store_subscribers.get_row(db, subscriber.id)
        consent.record(
            db,
            Consent(
                id=None,
                email=signup.email,
                source=consent.SIGNUP,
                requested_at=signup.requested_at,
                confirmed_at=at,
                ip=signup.ip,
                user_agent=signup.user_agent,
                form_id=signup.form_id,
                consent_version=signup.consent_version,
                consent_sha256=signup.consent_sha256,
                privacy_url=signup.privacy_url,
                topics=signup.topics,
            ),
        )
    return Confirmed(subscriber, outcome)


def purge_pending(db: Database, now: dt.datetime) -> Purged:
    """Delete signups whose link has expired (confirmed or not), and the limits' rows that have
    run out: nothing of an unconfirmed signup is kept past its link."""
    return store.purge(db, iso(now), iso(now - ADDRESS_WINDOW), iso(now - CLIENT_WINDOW))
