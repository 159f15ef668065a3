"""`/subscribe` and `/confirm/<token>`: the signup form and its confirmation, served when
`signup.enabled` is set (`newsletter.signup` holds the rules).

The form's POST answers the same page, byte for byte, whatever the address's state; emails go
out afterwards, on a background thread. `GET /confirm/<token>` only shows a button (mail
scanners follow links); the POST confirms. Every POST goes through the same checks in the same
order, whichever site's page the form was on: body size, origin, honeypot, the signed stamp,
the fields, the minimum fill time, the per-client limit. There is no other way in (no JSON).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, redirect, request, url_for

from ..config import Settings
from ..signup import Clock
from ..signup import pending as signups
from ..signup.clients import client_address, user_agent
from ..signup.forms import (
    ALL_TOPICS_LABEL,
    MAX_FORM_AGE,
    PAGE_FORM,
    FormInvalid,
    FormRejected,
    FormStamps,
    FormValues,
    form_values,
    honeypot_filled,
    read_entry,
)
from ..signup.mail import SignupMailer
from ..store import Database
from ..store import subscribers as store_subscribers
from ..store.subscribers import ALL, decode_topics
from ..subscribers.rules import StatusRefused
from ..tokens import LinkSigner
from . import preferences as prefs

MAX_SIGNUP_BYTES = 16 * 1024  # a filled-in form is under 2 KB
PURGE_EVERY = dt.timedelta(minutes=10)  # expired signups are deleted this often while serving
NOTICES = {
    "embedded": "One more step: please check your details and press “Subscribe”.",
    "too-fast": (
        "That was quicker than a person fills in the form, so nothing was sent yet. Please "
        "check your details and press “Subscribe” again."
    ),
    "too-old": (
        "This form was open for a long time, so nothing was sent yet. Please check your details "
        "and press “Subscribe” again."
    ),
}
LINK_STATUS = {"unknown": 400, "expired": 410, "used": 410}


def install_signup(
    app: Flask,
    *,
    settings: Settings,
    secret: str,
    signer: LinkSigner,
    database: Path,
    page: Callable[..., Response],
    db: Callable[[], Database],
    now: Clock,
) -> SignupMailer:
    """Register the signup routes on `app`; purges expired signups at once. The mailer is
    returned (and kept in `app.extensions`) so that tests can wait for its emails."""
    stamps = FormStamps(secret)
    mailer = SignupMailer(settings, signer, database, now)
    labels = settings.topic_labels
    own_origins = {_origin_of(settings.preferences_base)}
    bp = Blueprint("signup", __name__)
    purged = {"at": now()}
    with Database(database) as conn:
        signups.purge_pending(conn, purged["at"])

    def purge_now_and_then(moment: dt.datetime) -> None:
        if moment - purged["at"] >= PURGE_EVERY:
            purged["at"] = moment
            signups.purge_pending(db(), moment)

    def form_page(
        status: int,
        form_id: str = PAGE_FORM,
        values: FormValues | None = None,
        problems: dict[str, str] | None = None,
        notice: str | None = None,
    ) -> Response:
        return page(
            "subscribe",
            status,
            form_url=url_for(".subscribe"),
            stamp=stamps.make(form_id, now()),
            values=values or FormValues(),
            problems=problems or {},
            notice=NOTICES.get(notice),
            topics=settings.topics,
            all_label=ALL_TOPICS_LABEL,
            consent_text=settings.signup.consent_text,
            privacy_url=str(settings.privacy_url),
        )

    def refused(reason: str, status: int) -> Response:
        response = page(
            "signup-refused",
            status,
            reason=reason,
            subscribe_url=url_for(".subscribe_form"),
            per_hour=settings.signup.per_ip_per_hour,
        )
        if status == 429:
            response.headers["Retry-After"] = str(int(signups.CLIENT_WINDOW.total_seconds()))
        return response

    def origin_allowed() -> bool:
        # Sec-Fetch-Site is what browsers say about where the form was (our pages send no
        # Referer, and so an Origin of "null" on their own POSTs); without it (older browsers,
        # programs), a real Origin must be ours or allowed.
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if site in ("same-origin", "none"):
            return True
        if site is None and (origin is None or origin == "null"):
            return True
        allowed = set(settings.signup.allowed_origins)
        if site is None:
            allowed |= own_origins | {_origin_of(request.host_url)}
        return origin in allowed

    @bp.get("/subscribe")
    def subscribe_form():
        return form_page(200)

    @bp.post("/subscribe")
    def subscribe():
        request.max_content_length = MAX_SIGNUP_BYTES  # 413 before the form is read
        if not origin_allowed():
            return refused("origin", 403)
        form = request.form
        if honeypot_filled(form):
            return refused("honeypot", 400)
        try:
            stamp = stamps.read(form.get("stamp"))
        except FormRejected:
            return refused("stamp", 400)
        try:
            entry = read_entry(settings, form)
        except FormInvalid as exc:
            return form_page(422, stamp.form_id, exc.values, exc.problems)
        moment = now()
        if stamp.shown_at is None:  # another site's copy of the form: shown here once more
            return form_page(200, stamp.form_id, form_values(settings, form), notice="embedded")
        if moment - stamp.shown_at < dt.timedelta(seconds=settings.signup.min_fill_seconds):
            return form_page(422, stamp.form_id, form_values(settings, form), notice="too-fast")
        if moment - stamp.shown_at > MAX_FORM_AGE:
            return form_page(422, stamp.form_id, form_values(settings, form), notice="too-old")
        purge_now_and_then(moment)
        visitor = signups.Visitor(
            client_address(
                request.remote_addr,
                request.headers.getlist("X-Forwarded-For"),
                settings.signup.trusted_proxies,
            ),
            user_agent(request.headers.get("User-Agent")),
        )
        try:
            mailing = signups.request_signup(db(), settings, entry, stamp, visitor, secret, moment)
        except signups.TooManySignups:
            return refused("too-many", 429)
        if mailing is not None:
            mailer.submit(mailing)
        # The same bytes whatever happened behind, and whoever asked: nothing from the request.
        return page("subscribe-sent", 200)

    def topic_names(encoded: str) -> list[str]:
        topics = decode_topics(encoded)
        if topics == ALL:
            return [ALL_TOPICS_LABEL]
        return [labels[slug] for slug in settings.topic_slugs if slug in topics]

    def link_problem(state: str) -> Response:
        return page(
            "confirm-link",
            LINK_STATUS[state],
            state=state,
            subscribe_url=url_for(".subscribe_form"),
        )

    @bp.get("/confirm/<token>")
    def confirm_form(token: str):
        state, signup = signups.look_up(db(), token, now())
        if state != "valid":
            return link_problem(state)
        return page(
            "confirm",
            email=signup.email,
            topics=topic_names(signup.topics),
            form_url=url_for(".confirm", token=token),
        )

    @bp.post("/confirm/<token>")
    def confirm(token: str):
        request.max_content_length = MAX_SIGNUP_BYTES
        moment = now()
        response = confirm_now(token, moment)
        purge_now_and_then(moment)  # after: an expired link is told so, not "unknown"
        return response

    def confirm_now(token: str, moment: dt.datetime) -> Response:
        try:
            done = signups.confirm(db(), settings, token, moment)
        except signups.LinkNotUsable as exc:
            return link_problem(exc.state)
        except StatusRefused:
            _, signup = signups.look_up(db(), token, moment)
            subscriber = store_subscribers.get_row_by_email(db(), signup.email)
            return page(
                "confirm-refused",
                409,
                email=subscriber.email,
                stopped_because=prefs.stopped_because(db(), subscriber),
            )
        if settings.signup.welcome_email and done.outcome != "already subscribed":
            mailer.submit_welcome(done.subscriber.id)
        token = signer.sign(done.subscriber.id, "preferences")
        return redirect(url_for("preferences", token=token, confirmed="1"), 303)

    app.register_blueprint(bp)
    app.extensions["newsletter"]["signup_mailer"] = mailer
    return mailer


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
