"""Per-recipient parts: placeholder values (name, topics, signed links) and RFC 5322 messages.

A segment is rendered once; what differs per recipient is filled in here. Header values are
single-lined before use, so a subject or a name holding CR/LF can never inject a header.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from ..config import Settings
from ..render import RenderedEmail, fill, topics_phrase
from ..store.subscribers import TopicChoice
from ..tokens import LinkSigner, preferences_url, unsubscribe_url
from .backends.base import LIST_UNSUBSCRIBE_POST, Batch, BatchResult, Recipient

NAME_FALLBACK = "reader"  # "Hello reader," when a subscriber gave no name

# Bodies are encoded at the usual 78 columns; headers are written unfolded up to RFC 5322's
# 998-character limit, because Python folds a long List-Unsubscribe URL into RFC 2047 encoded
# words, which mail providers then fail to read as a one-click unsubscribe target.
BUILD_POLICY = policy.SMTP
WRITE_POLICY = policy.SMTP.clone(max_line_length=998)

_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def one_line(value: str) -> str:
    """A header-safe value: line breaks become spaces, other control characters go."""
    return " ".join(_CONTROL.sub("", _LINE_BREAKS.sub(" ", value)).split())


class Personalizer:
    """Computes each recipient's placeholder values; build one per send and reuse it.

    Signs two tokens per recipient (one HMAC each); the topics phrase is cached per choice.
    """

    def __init__(self, settings: Settings, signer: LinkSigner):
        self.settings = settings
        self.signer = signer
        self.base = settings.preferences_base
        self._phrases: dict[TopicChoice, str] = {}

    def topics(self, topics: TopicChoice) -> str:
        phrase = self._phrases.get(topics)
        if phrase is None:
            known = self.settings.topic_slugs
            chosen = topics if topics == "all" else [t for t in known if t in topics]
            phrase = self._phrases[topics] = topics_phrase(self.settings, chosen or "all")
        return phrase

    def recipient(
        self, subscriber_id: int, email: str, name: str, topics: TopicChoice
    ) -> Recipient:
        # Most names are plain: skip the regular expressions for them.
        name = name.strip() if name.isprintable() else one_line(name or "")
        values = {
            "name": name or NAME_FALLBACK,
            "topics": self.topics(topics),
            "preferences_url": preferences_url(self.base, self.signer, subscriber_id),
            "unsubscribe_url": unsubscribe_url(self.base, self.signer, subscriber_id),
        }
        return Recipient(subscriber_id, email, name, values)


def message_id(settings: Settings, issue_id: str, subscriber_id: int | None) -> str:
    """A list message's Message-ID is stable per (issue, subscriber): if a resend of an `unknown`
    one reaches someone twice, their mail provider can see it is the same message."""
    domain = settings.sender.email.rsplit("@", 1)[1]
    if subscriber_id is None:
        return make_msgid("proof", domain=domain)
    safe_issue = re.sub(r"[^A-Za-z0-9.-]", "-", issue_id)
    return f"<newsletter.{safe_issue}.{subscriber_id}@{domain}>"


def build_message(
    settings: Settings,
    email: RenderedEmail,
    recipient: Recipient,
    *,
    issue_id: str,
    subject: str | None = None,
    date=None,
) -> EmailMessage:
    """The recipient's complete message: multipart/alternative, text part first, then HTML."""
    subs = email.substitutions(recipient.values)
    msg = EmailMessage(policy=BUILD_POLICY)
    msg["Message-ID"] = message_id(settings, issue_id, recipient.subscriber_id)
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["From"] = Address(one_line(settings.sender.name), addr_spec=settings.sender.email)
    if settings.reply_to:
        msg["Reply-To"] = Address(addr_spec=str(settings.reply_to))
    msg["To"] = Address(one_line(recipient.name), addr_spec=one_line(recipient.email))
    msg["Subject"] = one_line(subject if subject is not None else email.subject)
    msg["List-Unsubscribe"] = f"<{one_line(recipient.unsubscribe_url)}>"
    msg["List-Unsubscribe-Post"] = LIST_UNSUBSCRIBE_POST
    msg.set_content(fill(email.text, subs))
    msg.add_alternative(fill(email.html, subs), subtype="html")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # only the top level carries it
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as sent and stored: CRLF line ends, headers unfolded (see WRITE_POLICY)."""
    return msg.as_bytes(policy=WRITE_POLICY)


def proof_recipients(settings: Settings, addresses: Iterable[str], values: dict) -> list[Recipient]:
    """Proof addressees get preview values: links that cannot act on any subscriber."""
    return [Recipient(None, address, "", dict(values)) for address in addresses]


def batch_messages(settings: Settings, batch: Batch, result: BatchResult):
    """(ledger key, recipient, message) for each recipient of a batch, for the backends that
    send one message per recipient; one whose message cannot be built is recorded as failed in
    `result` and left out."""
    for recipient in batch.recipients:
        key = recipient.subscriber_id if recipient.subscriber_id is not None else recipient.email
        try:
            msg = build_message(
                settings, batch.email, recipient, issue_id=batch.issue_id, subject=batch.subject
            )
        except (ValueError, TypeError, IndexError) as exc:
            result.failed[key] = f"cannot build a message to {recipient.email!r}: {exc}"
            continue
        yield key, recipient, msg
