"""Per-recipient parts: placeholder values (name, topics, signed links) and RFC 5322 messages.

A segment is rendered once; what differs per recipient is filled in here. Header values are
single-lined before use, so a subject or a name holding CR/LF can never inject a header; names
are written so that a mail client decodes exactly the stored text (see `mailbox`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from email import policy
from email.errors import MessageError
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from ..config import Settings
from ..errors import SendRefused
from ..render import RenderedEmail, fill, topics_phrase
from ..store.subscribers import TopicChoice
from ..tokens import LinkSigner, preferences_url, unsubscribe_url
from .batch import Batch, BatchResult, Recipient

NAME_FALLBACK = "reader"  # "Hello reader," when a subscriber gave no name
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"  # RFC 8058 one-click unsubscribe

# Bodies are encoded at the usual 78 columns. Headers are folded at 76: RFC 2047 allows encoded
# words of at most 75 characters, on lines of at most 76. The headers written as they are
# (`set_raw`: From, To, Reply-To, List-Unsubscribe) are left alone (`refold_source="none"`):
# Python would fold a long List-Unsubscribe URL into encoded words, which mail providers then
# fail to read as a one-click unsubscribe target, and the address headers are folded by
# `mailbox` itself.
BUILD_POLICY = policy.SMTP
WRITE_POLICY = policy.SMTP.clone(max_line_length=76, refold_source="none")
HEADER_WIDTH = 76
# A name in printable ASCII up to the list's name limit, without anything that looks like an
# encoded word, is written as it is (quoted when it needs to be): its line may pass 78 columns
# (RFC 5322's SHOULD) but stays far below the 998 it MUST. Any other name is encoded.
PLAIN_NAME_MAX = 100

_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def one_line(value: str) -> str:
    """A header-safe value: line breaks become spaces, other control characters go."""
    return " ".join(_CONTROL.sub("", _LINE_BREAKS.sub(" ", value)).split())


def wire_address(address: str) -> str:
    """The address as headers and the SMTP envelope carry it; ValueError when it cannot be
    written without SMTPUTF8, which no backend here uses (an address stored before the list's
    address rule, `subscribers.check_address`, which keeps such addresses out)."""
    if address.isascii() and address.isprintable() and " " not in address:
        return address
    raise ValueError(
        "non-ASCII characters in an address cannot be sent without SMTPUTF8; the list no longer "
        "takes such addresses (a domain is stored in its ASCII xn-- form, a non-ASCII part "
        "before the @ is refused): replace or remove this one"
    )


def mailbox(field: str, name: str, address: str) -> str:
    """The value of an address header (From, To) for one mailbox, folded, to write as it is.

    The email package's own `Address` header cannot be trusted with names (CPython 3.11): it
    parses the name back, decoding anything that looks like an RFC 2047 encoded word, so a name
    `=?utf-8?b?QmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?=` would reach readers as
    `Bcc: victim@evil.example`; and it writes a long name without spaces on one line of any
    length. So a plain name is written as a phrase (`formataddr` quotes it when needed), and any
    other is encoded whole as encoded words by `email.header.Header`, which clients decode to
    exactly the stored text.
    """
    address = wire_address(address)
    name = one_line(name)
    if not name:
        return address
    if name.isascii() and "=?" not in name and len(name) <= PLAIN_NAME_MAX:
        phrase = formataddr((name, address)).removesuffix(f" <{address}>")
    else:
        phrase = Header(name, "utf-8", HEADER_WIDTH, field).encode(linesep="\r\n")
    last = phrase.rsplit("\n", 1)[-1] if "\n" in phrase else f"{field}: {phrase}"
    if len(last) + len(address) + 3 > HEADER_WIDTH:
        return f"{phrase}\r\n <{address}>"
    return f"{phrase} <{address}>"


def check_sender(settings: Settings) -> None:
    """SendRefused when the sender or reply-to address cannot be written: that is the settings'
    problem, not any one recipient's, so nothing is sent."""
    addresses = {"sender.email": settings.sender.email, "reply_to": settings.reply_to}
    for setting, address in addresses.items():
        if address:
            try:
                wire_address(str(address))
            except ValueError:
                raise SendRefused(
                    f"{setting} {str(address)!r} in the settings has non-ASCII characters, which "
                    "cannot be sent without SMTPUTF8: write the domain in its ASCII (xn--) form"
                ) from None


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


def list_id(settings: Settings) -> str:
    """The List-Id header (RFC 2919): the newsletter's name, and a label under the sender's domain
    that stays the same from issue to issue, so that readers' filters and rules keep working."""
    label = re.sub(r"[^a-z0-9]+", "-", settings.name.lower()).strip("-") or "newsletter"
    domain = settings.sender.email.rsplit("@", 1)[1].lower().encode("idna").decode("ascii")
    return formataddr((one_line(settings.name), f"{label}.{domain}"))


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
    msg.set_raw("From", mailbox("From", settings.sender.name, settings.sender.email))
    if settings.reply_to:
        msg.set_raw("Reply-To", mailbox("Reply-To", "", str(settings.reply_to)))
    msg.set_raw("To", mailbox("To", recipient.name, recipient.email))
    subject = one_line(subject if subject is not None else email.subject)
    if "=?" in subject:  # the email package would decode it (see `mailbox`): encode it whole
        msg.set_raw("Subject", Header(subject, "utf-8", HEADER_WIDTH, "Subject").encode("\r\n"))
    else:
        msg["Subject"] = subject
    msg.set_raw("List-Unsubscribe", f"<{one_line(recipient.unsubscribe_url)}>")
    msg["List-Unsubscribe-Post"] = LIST_UNSUBSCRIBE_POST
    msg["List-Id"] = list_id(settings)
    msg.set_content(fill(email.text, subs))
    msg.add_alternative(fill(email.html, subs), subtype="html")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # only the top level carries it
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as sent and stored: CRLF line ends, headers folded per RFC 2047 and the
    raw ones as they are (see WRITE_POLICY)."""
    return msg.as_bytes(policy=WRITE_POLICY)


def proof_recipients(settings: Settings, addresses: Iterable[str], values: dict) -> list[Recipient]:
    """Proof addressees get preview values: links that cannot act on any subscriber."""
    return [Recipient(None, address, "", dict(values)) for address in addresses]


def batch_messages(settings: Settings, batch: Batch, result: BatchResult):
    """(ledger key, recipient, message, its bytes) for each recipient of a batch, for the
    backends that send one message per recipient. A recipient whose message cannot be built or
    written (an address that cannot be encoded...) is recorded as failed in `result` and left
    out: one recipient's problem never stops the others. SendRefused when the sender cannot be
    written."""
    check_sender(settings)
    for recipient in batch.recipients:
        key = recipient.key
        try:
            msg = build_message(
                settings, batch.email, recipient, issue_id=batch.issue_id, subject=batch.subject
            )
            data = message_bytes(msg)
        except (ValueError, TypeError, IndexError, MessageError) as exc:
            result.failed[key] = f"cannot write a message to {recipient.email!r}: {exc}"
            continue
        yield key, recipient, msg, data
