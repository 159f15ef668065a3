"""The signup's emails (the confirmation, "you are already subscribed", the welcome), rendered
from `templates/email/signup-*.j2` (a text part and an HTML part through MJML) and sent one at a
time through the configured backend: a file under `outbox/signup/`, one SMTP transaction, or one
SendGrid request.

They hold no text the visitor typed: not the name (the `To:` header is the bare address), only
our own words, the topic labels from the settings and our links. `SignupMailer` sends them on a
background thread after the page has answered, so that the answer takes as long whether or not
an email goes out.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from ..archive.urls import view_in_browser_url
from ..config import Settings
from ..content import Issue, Summary, load_issue, load_summaries, resolve_summaries
from ..delivery.backends import make_backend
from ..delivery.backends.outbox import safe_name
from ..delivery.message import (
    BUILD_POLICY,
    HEADER_WIDTH,
    LIST_UNSUBSCRIBE_POST,
    check_sender,
    list_id,
    mailbox,
    message_bytes,
    one_line,
)
from ..errors import NewsletterError, SendRefused
from ..render import mjml_to_html, select_summaries, tidy_text, topics_phrase
from ..store import Database, ledger
from ..store import subscribers as store_subscribers
from ..store.subscribers import Subscriber, TopicChoice
from ..templating import make_environment, render_template
from ..tokens import LinkSigner, preferences_url, unsubscribe_url
from . import Clock, system_clock
from .pending import Mailing, give_back

log = logging.getLogger(__name__)

OUTBOX_FOLDER = "signup"  # outbox/signup/<time>-<kind>-<address>.eml
TEXT_WIDTH = 78
CATEGORY = "newsletter-signup"
KIND_ARG = "newsletter_signup"  # SendGrid custom arg: which signup email (webhooks ignore it)


@dataclass(frozen=True)
class OneEmail:
    """One finished email to one address."""

    kind: str  # confirm, already, welcome
    to: str
    subject: str
    text: str
    html: str
    unsubscribe_url: str | None = None  # a subscriber's email (welcome): the list's headers


# Rendering ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatestIssue:
    """The latest sent issue, as far as one subscriber's topics go (for the welcome email)."""

    issue: Issue
    summaries: list[Summary]
    url: str | None  # its archive page


class SignupEmails:
    """Renders the signup's emails with the workspace's templates."""

    def __init__(self, settings: Settings, signer: LinkSigner):
        self.settings = settings
        self.signer = signer
        self.env = make_environment(settings.paths.templates)

    def _render(self, kind: str, subject: str, **context) -> tuple[str, str]:
        context = {"settings": self.settings, "subject": subject, "width": TEXT_WIDTH, **context}
        text = render_template(self.env, f"email/signup-{kind}.txt.j2", **context)
        name = f"email/signup-{kind}.mjml.j2"
        html = mjml_to_html(render_template(self.env, name, **context), name)
        return tidy_text(text), html

    def _topics(self, topics: TopicChoice) -> str:
        """The chosen topics' labels in the settings' order (topics no longer there left out)."""
        chosen = [slug for slug in self.settings.topic_slugs if topics == "all" or slug in topics]
        return topics_phrase(self.settings, "all" if topics == "all" or not chosen else chosen)

    def confirmation(self, mailing: Mailing) -> OneEmail:
        s = self.settings
        subject = f"Please confirm your subscription to {s.name}"
        text, html = self._render(
            "confirm",
            subject,
            confirm_url=f"{s.preferences_base}/confirm/{mailing.token}",
            topics=self._topics(mailing.topics),
            hours=s.signup.confirm_hours,
            subscribe_url=f"{s.preferences_base}/subscribe",
        )
        return OneEmail("confirm", mailing.email, subject, text, html)

    def already(self, subscriber: Subscriber) -> OneEmail:
        s = self.settings
        subject = f"You are already subscribed to {s.name}"
        text, html = self._render(
            "already",
            subject,
            preferences_url=preferences_url(s.preferences_base, self.signer, subscriber.id),
        )
        return OneEmail("already", subscriber.email, subject, text, html)

    def welcome(self, subscriber: Subscriber, latest: LatestIssue | None) -> OneEmail:
        s = self.settings
        subject = f"Welcome to {s.name}"
        unsubscribe = unsubscribe_url(s.preferences_base, self.signer, subscriber.id)
        text, html = self._render(
            "welcome",
            subject,
            topics=self._topics(subscriber.topics),
            preferences_url=preferences_url(s.preferences_base, self.signer, subscriber.id),
            unsubscribe_url=unsubscribe,
            latest=latest,
        )
        return OneEmail("welcome", subscriber.email, subject, text, html, unsubscribe)


def latest_issue(settings: Settings, db: Database, topics: TopicChoice) -> LatestIssue | None:
    """The issue sent last, with its summaries on these topics; None when there is none, it
    has none on these topics, or its files cannot be read (the welcome goes without it)."""
    sent = ledger.sent_issues(db)
    if not sent:
        return None
    issue_id = max(sent, key=lambda i: (sent[i], i))
    try:
        issue = load_issue(settings, issue_id)
        summaries = select_summaries(resolve_summaries(issue, load_summaries(settings)), topics)
    except NewsletterError as exc:
        log.warning("welcome email: the latest issue %s is left out: %s", issue_id, exc)
        return None
    if not summaries:
        return None
    return LatestIssue(issue, summaries, view_in_browser_url(settings, issue))


# Sending -------------------------------------------------------------------------------------------


def build_message(settings: Settings, email: OneEmail, now: dt.datetime) -> EmailMessage:
    """The RFC 5322 message: From and Reply-To as the newsletter's, To the bare address."""
    check_sender(settings)
    msg = EmailMessage(policy=BUILD_POLICY)
    msg["Message-ID"] = make_msgid(
        f"signup-{email.kind}", domain=settings.sender.email.rsplit("@", 1)[1]
    )
    msg["Date"] = format_datetime(now)
    msg.set_raw("From", mailbox("From", settings.sender.name, settings.sender.email))
    if settings.reply_to:
        msg.set_raw("Reply-To", mailbox("Reply-To", "", str(settings.reply_to)))
    msg.set_raw("To", mailbox("To", "", email.to))
    subject = one_line(email.subject)
    if "=?" in subject:  # as `delivery.message.build_message`: never decoded as an encoded word
        msg.set_raw("Subject", Header(subject, "utf-8", HEADER_WIDTH, "Subject").encode("\r\n"))
    else:
        msg["Subject"] = subject
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    if email.unsubscribe_url:
        msg.set_raw("List-Unsubscribe", f"<{one_line(email.unsubscribe_url)}>")
        msg["List-Unsubscribe-Post"] = LIST_UNSUBSCRIBE_POST
        msg["List-Id"] = list_id(settings)
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    return msg


def sendgrid_body(settings: Settings, email: OneEmail) -> dict:
    """One mail-send request for one address. Click tracking is off: SendGrid would otherwise
    put the confirmation token into a link through its own servers."""
    headers = {"Auto-Submitted": "auto-generated"}
    if email.unsubscribe_url:
        headers |= {
            "List-Unsubscribe": f"<{email.unsubscribe_url}>",
            "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST,
            "List-Id": list_id(settings),
        }
    body = {
        "personalizations": [{"to": [{"email": email.to}], "custom_args": {KIND_ARG: email.kind}}],
        "from": {"email": settings.sender.email, "name": one_line(settings.sender.name)},
        "subject": one_line(email.subject),
        "content": [
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": email.html},
        ],
        "categories": [CATEGORY],
        "headers": headers,
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
        },
    }
    if settings.reply_to:
        body["reply_to"] = {"email": str(settings.reply_to)}
    return body


def send_one(
    settings: Settings, email: OneEmail, backend: str | None = None, now: dt.datetime | None = None
) -> str:
    """Send one email through the backend (default: the settings'); where it went (the file,
    or the provider's answer). DeliveryError (and its kinds) when it did not go."""
    now = now or system_clock()
    sender = make_backend(backend, settings)
    if sender.name == "outbox":
        data = message_bytes(build_message(settings, email, now))
        stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{email.kind}-{safe_name(email.to)}-{secrets.token_hex(3)}.eml"
        return str(_write_atomically(Path(sender.folder) / OUTBOX_FOLDER / name, data))
    if sender.name == "smtp":
        data = message_bytes(build_message(settings, email, now))
        with sender:
            return sender.send_message(email.to, data)
    if sender.name == "sendgrid":
        return sender.post_mail(sendgrid_body(settings, email))
    raise SendRefused(f"the {sender.name} backend cannot send the signup's emails")


def _write_atomically(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise SendRefused(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


class SignupMailer:
    """Renders and sends the signup's emails on one background thread, in order.

    A failure is logged (without the address) and the per-address mark is given back, so that
    the visitor may ask again; the page they saw said nothing either way. `wait()` returns when
    everything submitted has been sent or has failed (tests; the thread also finishes its work
    when the process exits).
    """

    def __init__(
        self,
        settings: Settings,
        signer: LinkSigner,
        database: Path,
        clock: Clock = system_clock,
    ):
        self.settings = settings
        self.emails = SignupEmails(settings, signer)
        self.database = database
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signup-mail")
        self._futures: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, mailing: Mailing) -> None:
        self._submit(self._send_mailing, mailing)

    def submit_welcome(self, subscriber_id: int) -> None:
        self._submit(self._send_welcome, subscriber_id)

    def wait(self, timeout: float | None = 60) -> None:
        with self._lock:
            futures = set(self._futures)
        wait_for(futures, timeout=timeout)

    def _submit(self, work, arg) -> None:
        future = self._pool.submit(work, arg)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def _send_mailing(self, mailing: Mailing) -> None:
        with Database(self.database) as db:
            try:
                if mailing.kind == "confirm":
                    email = self.emails.confirmation(mailing)
                else:
                    subscriber = store_subscribers.get_row(db, mailing.subscriber_id)
                    email = self.emails.already(subscriber)
                send_one(self.settings, email, now=self.clock())
            except Exception as exc:
                self._log_failure(mailing.kind, exc)
                give_back(db, mailing)

    def _send_welcome(self, subscriber_id: int) -> None:
        with Database(self.database) as db:
            try:
                subscriber = store_subscribers.get_row(db, subscriber_id)
                latest = None
                if self.settings.signup.welcome_latest_issue:
                    latest = latest_issue(self.settings, db, subscriber.topics)
                send_one(self.settings, self.emails.welcome(subscriber, latest), now=self.clock())
            except Exception as exc:
                self._log_failure("welcome", exc)

    @staticmethod
    def _log_failure(kind: str, exc: Exception) -> None:
        if isinstance(exc, NewsletterError):
            log.error("the signup's %s email could not be sent: %s", kind, exc)
        else:  # a bug: keep the traceback
            log.exception("the signup's %s email could not be sent", kind)
