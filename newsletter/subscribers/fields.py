"""The values a subscriber has, checked: address, name, topic choice, status.

Every entry point (CSV import, the admin's commands, the editor's `--topics`, the preference
form) takes these through here, so the list holds one kind of address and one kind of topic
choice. Addresses are checked with email-validator (syntax only, no DNS); topics come from the
settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from ..errors import SubscriberError
from ..store import subscribers as subscriber_rows
from ..store.migrations import SUBSCRIBER_STATUSES
from ..store.subscribers import ALL, TopicChoice

STATUSES = SUBSCRIBER_STATUSES
SUBSCRIBED = "subscribed"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 100  # characters; a longer name is refused at every entry point


def check_address(text: str) -> tuple[str | None, str | None]:
    """(normalised address, None) when valid, else (None, why): syntax only, no DNS.

    The one rule for every address the list takes in (import, `add`, proofs): what is stored is
    what goes on the wire. An internationalised domain is stored in its ASCII (IDNA, `xn--`)
    form, the form every backend writes and SendGrid's suppression lists report; a non-ASCII
    local part is refused, because delivering to it needs SMTPUTF8 end to end, which none of the
    backends offers (SendGrid's API refuses such addresses). Same verdict as email-validator's
    `validate_email` with `allow_smtputf8=False`, faster for lists: see `_fast_address`.
    """
    text = text.strip()
    fast = _fast_address(text)
    if fast is not None:
        return fast, None
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    # The store compares whole addresses case-insensitively: the local part is lower-cased too.
    return subscriber_rows.normalise_email(valid.ascii_email), None


# Plain ASCII addresses: a dot-atom local part (RFC 5322 atext, as email-validator's DOT_ATOM_TEXT)
# and a domain of letters, digits, dots and hyphens.
_PLAIN_ADDRESS = re.compile(
    r"([A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*)@([A-Za-z0-9.-]+)"
)
_MAX_ADDRESS = 254  # RFC 5321, as email-validator checks it
_MAX_LOCAL = 64


def _fast_address(text: str) -> str | None:
    """The normalised address when it is plainly valid; None means "ask email-validator".

    email-validator spends most of its time checking the domain, character by character, and a
    list has few distinct domains: a domain's verdict is cached (from validating `a@domain`).
    Only addresses whose every check is then known are answered here: an ASCII dot-atom local
    part (valid as it is), a cached valid domain whose ASCII form is its lower case, and a length
    within the limits (the same in every form for ASCII). Everything else, and every error
    message, comes from `validate_email` itself.
    """
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(text) > _MAX_ADDRESS or len(match[1]) > _MAX_LOCAL:
        return None
    domain = _domain_verdict(match[2])
    if domain is None:
        return None
    return subscriber_rows.normalise_email(match[1]) + "@" + domain


@lru_cache(maxsize=16384)
def _domain_verdict(domain: str) -> str | None:
    """The domain's ASCII form when email-validator accepts it unchanged but for case."""
    try:
        valid = validate_email("a@" + domain, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return valid.ascii_domain if valid.ascii_domain == domain.lower() else None


def normalise_address(text: str) -> str:
    """The address normalised for storage; SubscriberError when it is not a valid address."""
    email, why = check_address(text)
    if email is None:
        raise SubscriberError(f"email {text.strip()!r} is not a valid address: {why}")
    return email


def check_name(name: str) -> str:
    """The name without surrounding spaces; SubscriberError if it has a line break or control
    character, or is longer than MAX_NAME characters (a name goes into every email's `To:`)."""
    if "\r" in name or "\n" in name:
        raise SubscriberError(f"name {_shown(name)} contains a line break")
    if _CONTROL.search(name):
        raise SubscriberError(f"name {_shown(name)} contains a control character")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise SubscriberError(
            f"name {_shown(name)} is {len(name)} characters long; at most {MAX_NAME} are allowed"
        )
    return name


def _shown(name: str, width: int = 30) -> str:
    """The name as an error message shows it: quoted, cut short when long."""
    return repr(name if len(name) <= MAX_NAME else name[:width] + "…")


class UnknownTopics(SubscriberError):
    """Topics the settings do not name: `unknown` lists them, `known` the topics there are."""

    def __init__(self, unknown: list[str], known: tuple[str, ...]):
        self.unknown, self.known = unknown, known
        super().__init__(
            f"unknown topic {', '.join(map(repr, unknown))} "
            f"(known topics: {', '.join(known)}; or 'all')"
        )


def parse_topics(text: str | Iterable[str], known: Iterable[str]) -> TopicChoice:
    """`a;b` or `a,b` (or a list of slugs), `all`, or empty (= all) → a topic choice.

    The one topic parser: the CSV, the admin's `--topics`, the editor's `--topics` and the
    preference form all read topics here. Slugs are compared ignoring case and spaces.
    UnknownTopics (a SubscriberError) names the unknown topics and the known ones.
    """
    if isinstance(text, str):
        return _parse_topics_text(text, tuple(known))
    return _parse_topic_list(tuple(text), tuple(known))


@lru_cache(maxsize=4096)  # a list holds few distinct topic choices; 100,000 rows parse each once
def _parse_topics_text(text: str, known: tuple[str, ...]) -> TopicChoice:
    return _parse_topic_list(tuple(re.split(r"[;,]", text)), known)


def _parse_topic_list(items: tuple[str, ...], known: tuple[str, ...]) -> TopicChoice:
    slugs = list(dict.fromkeys(t.strip().lower() for t in items if t.strip()))
    if not slugs:
        return ALL
    if ALL in slugs:
        if len(slugs) > 1:
            raise SubscriberError("topics: 'all' cannot be combined with other topics")
        return ALL
    unknown = [s for s in slugs if s not in known]
    if unknown:
        raise UnknownTopics(unknown, known)
    return frozenset(slugs)


def parse_status(text: str) -> str:
    """A status from a CSV cell: empty means `subscribed`; SubscriberError names the valid ones."""
    status = text.strip().lower() or SUBSCRIBED
    if status not in STATUSES:
        raise SubscriberError(
            f"unknown status {text.strip()!r} (expected {', '.join(STATUSES[:-1])} or "
            f"{STATUSES[-1]}; empty means {SUBSCRIBED})"
        )
    return status
