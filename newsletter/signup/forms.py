"""What the signup form sends, checked: the signed stamp (which form, and when it was shown),
the honeypot, the address, the name and the topics. The same rules as an import (`check_address`,
`check_name`); every problem is a sentence for the visitor, never their own text echoed back.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from itsdangerous import BadSignature, Signer

from ..config import Settings
from ..errors import NewsletterError, SubscriberError
from ..store.subscribers import ALL, TopicChoice
from ..subscribers import MAX_NAME, check_address, check_name

PAGE_FORM = "subscribe-page"  # the form id of our own page; `signup-form` prints others
FORM_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
HONEYPOT = "website"  # a field people never see, so never fill in
MAX_FORM_AGE = dt.timedelta(hours=24)  # a stamp older than this is shown a fresh form
MAX_FIELD = 1000  # characters of any one field read at all (the body is capped before this)
_NOT_TIMED = "embed"  # a stamp printed once into another site's page: no time in it

ALL_TOPICS_LABEL = "All topics, including new ones"


class FormRejected(NewsletterError):
    """The form cannot be used at all (no stamp, a forged one, the honeypot filled)."""


@dataclass(frozen=True)
class Stamp:
    """Which form was sent, and when it was shown (None: a form embedded in another site,
    printed once by `newsletter signup-form`, has no time of its own)."""

    form_id: str
    shown_at: dt.datetime | None


class FormStamps:
    """Signs and reads the form's hidden stamp (itsdangerous, its own salt): a visitor can
    neither make the form look older than it is nor name a form of their own."""

    def __init__(self, secret: str):
        self._signer = Signer(secret, salt="newsletter.signup-form", sep=".")

    def make(self, form_id: str, now: dt.datetime) -> str:
        millis = int(now.timestamp() * 1000)
        return self._signer.sign(f"{form_id}~{millis}").decode("ascii")

    def embedded(self, form_id: str) -> str:
        if not FORM_ID.fullmatch(form_id):
            raise NewsletterError(
                f"form id {form_id!r}: use 1 to 40 lower-case letters, digits and hyphens"
            )
        return self._signer.sign(f"{form_id}~{_NOT_TIMED}").decode("ascii")

    def read(self, value: str | None) -> Stamp:
        if not value or len(value) > 200:
            raise FormRejected("the form has no stamp")
        try:
            text = self._signer.unsign(value.encode("ascii")).decode("ascii")
        except (BadSignature, UnicodeError):
            raise FormRejected("the form's stamp is not ours") from None
        form_id, _, when = text.partition("~")
        if when == _NOT_TIMED:
            return Stamp(form_id, None)
        return Stamp(form_id, dt.datetime.fromtimestamp(int(when) / 1000, dt.UTC))


@dataclass(frozen=True)
class SignupEntry:
    """A valid signup: the address normalised, the name checked, the topics chosen."""

    email: str
    name: str
    topics: TopicChoice


@dataclass
class FormValues:
    """What the form held, to show it again with the problems (only known topics are kept)."""

    email: str = ""
    name: str = ""
    topics: list[str] = field(default_factory=list)


class FormInvalid(NewsletterError):
    """The form has problems: field → a sentence for the visitor."""

    def __init__(self, problems: dict[str, str], values: FormValues):
        self.problems = problems
        self.values = values
        super().__init__("; ".join(problems.values()))


def honeypot_filled(form: Mapping[str, str]) -> bool:
    return bool((form.get(HONEYPOT) or "").strip())


def form_values(settings: Settings, form) -> FormValues:
    """What the form held, bounded, to show it again (unknown topics are left out)."""
    known = settings.topic_slugs
    ticked = list(itertools.islice(form.getlist("topics"), len(known) + 2))
    return FormValues(
        email=(form.get("email") or "")[:MAX_FIELD].strip(),
        name=(form.get("name") or "")[:MAX_FIELD],
        topics=[slug for slug in ticked if slug == ALL or slug in known],
    )


def read_entry(settings: Settings, form) -> SignupEntry:
    """The signup the form (a MultiDict) asks for; FormInvalid names every problem."""
    known = settings.topic_slugs
    raw_email = (form.get("email") or "")[: MAX_FIELD + 1]
    raw_name = (form.get("name") or "")[: MAX_FIELD + 1]
    # No more values than there are boxes: a form with thousands costs nothing more.
    ticked = list(itertools.islice(form.getlist("topics"), len(known) + 2))
    problems: dict[str, str] = {}

    email = None
    if not raw_email.strip():
        problems["email"] = "Please enter your email address."
    else:
        email, why = check_address(raw_email)
        if email is None:
            problems["email"] = f"This is not an email address we can send to. {why}"

    name = ""
    try:
        name = check_name(raw_name)
    except SubscriberError:
        if len(raw_name.strip()) > MAX_NAME:
            problems["name"] = f"Please shorten your name to at most {MAX_NAME} characters."
        else:
            problems["name"] = "Your name cannot hold line breaks or control characters."

    topics: TopicChoice | None = None
    if any(slug != ALL and slug not in known for slug in ticked):
        problems["topics"] = (
            "The form sent a topic that is not on our list. Please tick topics from the list, "
            f"or “{ALL_TOPICS_LABEL}”."
        )
    elif ALL in ticked:
        topics = ALL
    elif ticked:
        topics = frozenset(ticked)
    else:
        problems["topics"] = f"Please tick at least one topic, or “{ALL_TOPICS_LABEL}”."

    if problems:
        raise FormInvalid(problems, form_values(settings, form))
    return SignupEntry(email, name, topics)
