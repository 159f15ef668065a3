"""`newsletter serve`: the preference centre, one-click unsubscribe and SendGrid's event webhook.

The signed token in each URL is the only authority: no cookies, no sessions, no form tokens.
A GET never changes anything (mail scanners follow every link); changes are POSTs, and a forged
or misused token gets a 400 page with nothing changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, Response, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, InternalServerError

from ..config import Environment, Settings
from ..errors import NewsletterError, TokenError
from ..sendgrid.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PayloadInvalid,
    SignatureInvalid,
    WebhookNotConfigured,
    WebhookReceiver,
)
from ..signup import Clock, system_clock
from ..store import Database, location
from ..store import subscribers as store_subscribers
from ..store.subscribers import ALL, Subscriber
from ..templating import make_environment, render_template
from ..tokens import LinkSigner, Purpose
from . import preferences as prefs
from .archive import archive_blueprint

log = logging.getLogger(__name__)

# Scripts: none at all. Styles: only our own stylesheet file. Forms: only back to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The token in the URL must never reach another site through the Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
}
MAX_REQUEST_BYTES = 5 * 1024 * 1024  # SendGrid's webhook batches are far smaller

ONE_CLICK_BODY = ("List-Unsubscribe", "One-Click")


def create_app(
    settings: Settings,
    db_path: str | Path | None = None,
    environment: Environment | None = None,
    now: Clock = system_clock,
) -> Flask:
    """The web app, with the secrets of `environment` (default: the process's); raises
    ConfigError when NEWSLETTER_SECRET_KEY is not set (or is weak). `now` is the clock of the
    signup's time limits."""
    environment = environment or Environment.read()
    secret = environment.signing_key(required=True)
    signer = LinkSigner(secret)
    env = make_environment(settings.paths.templates)
    database = db_path if db_path is not None else location(settings, environment)
    contact = str(settings.reply_to or settings.sender.email)

    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["newsletter"] = {"settings": settings, "database": database}
    webhook = WebhookReceiver(settings, environment)
    app.register_blueprint(archive_blueprint(settings.paths.site))

    # Per request: each request opens the database, so any server (threads or processes)
    # works; WAL lets a `newsletter send` write at the same time.
    def db() -> Database:
        if "db" not in g:
            g.db = Database(database)
        return g.db

    @app.teardown_appcontext
    def close_db(_exc) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint not in ("static", "archive.page"):
            # Pages carry tokens (in their URL and their forms): keep them out of every cache.
            response.headers["Cache-Control"] = "no-store"
        return response

    def page(name: str, http_status: int = 200, **context) -> Response:
        html = render_template(
            env,
            f"web/{name}.html.j2",
            newsletter=settings.name,
            contact=contact,
            postal_address=settings.postal_address,
            css_url=url_for("static", filename="style.css"),
            icon_url=url_for("static", filename="favicon.svg"),
            **context,
        )
        return Response(html, status=http_status, mimetype="text/html")

    def subscriber_for(token: str, purpose: Purpose) -> Subscriber:
        subscriber_id = signer.verify(token, purpose)
        subscriber = store_subscribers.get_row(db(), subscriber_id)
        if subscriber is None:
            raise TokenError("this link names no subscriber")
        return subscriber

    def links(subscriber: Subscriber) -> dict[str, str]:
        """The subscriber's own links, signed here so every page can offer the other actions."""
        preferences_token = signer.sign(subscriber.id, "preferences")
        unsubscribe_token = signer.sign(subscriber.id, "unsubscribe")
        return {
            "preferences_url": url_for("preferences", token=preferences_token),
            "resubscribe_url": url_for("resubscribe", token=preferences_token),
            "unsubscribe_url": url_for("unsubscribe", token=unsubscribe_token),
        }

    def preferences_page(subscriber: Subscriber, http_status: int = 200, **extra) -> Response:
        topics = subscriber.topics
        context = {
            "email": subscriber.email,
            "status": subscriber.status,
            "wants_all": topics == ALL,
            "topics": prefs.topic_rows(settings, topics),
            "stopped_because": prefs.stopped_because(db(), subscriber),
            "can_resubscribe": prefs.can_resubscribe(db(), subscriber),
            "form_url": url_for("preferences", token=request.view_args["token"]),
            "saved": False,
            "saved_topics": None,
            "resubscribed": False,
            "error": None,
            "confirmed": request.args.get("confirmed") == "1",  # arriving from a signup
            **links(subscriber),
        }
        context.update(extra)
        return page("preferences", http_status, **context)

    if settings.signup.enabled:
        from .signup import install_signup

        install_signup(
            app,
            settings=settings,
            secret=secret,
            signer=signer,
            database=database,
            page=page,
            db=db,
            now=now,
        )

    # --- Errors ---------------------------------------------------------------------------

    @app.errorhandler(TokenError)
    def invalid_link(_exc):
        return page("invalid", 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/webhooks/"):
            return jsonify(error=exc.description), exc.code
        return page("message", exc.code or 500, heading=exc.name, message=_friendly(exc))

    @app.errorhandler(InternalServerError)
    def server_error(_exc: InternalServerError):
        # Flask has logged the exception already.
        message = "Something went wrong on our side. Nothing was changed; please try again later."
        if request.path.startswith("/webhooks/"):
            return jsonify(error="internal error"), 500
        try:
            return page("message", 500, heading="Something went wrong", message=message)
        except NewsletterError:  # the templates themselves are broken: still answer
            return Response(message, status=500, mimetype="text/plain")

    # --- Pages ----------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz():
        db().conn.execute("SELECT 1").fetchone()
        return Response("ok\n", mimetype="text/plain")

    @app.get("/preferences/<token>")
    def preferences(token: str):
        return preferences_page(subscriber_for(token, "preferences"))

    @app.post("/preferences/<token>")
    def save_preferences(token: str):
        subscriber = subscriber_for(token, "preferences")
        try:
            topics = prefs.chosen_topics(
                settings,
                subscriber.topics,
                request.form.get("choice"),
                request.form.getlist("topics"),
                request.form.get("shown"),
            )
        except prefs.NoTopicChosen as exc:
            return preferences_page(subscriber, 422, error=str(exc))
        prefs.save_topics(db(), subscriber, topics)
        # Only the explicit button resubscribes: a form from before a one-click unsubscribe
        # (still open in a tab) saves topics and nothing else.
        resubscribed = (
            bool(request.form.get("subscribe_again"))
            and prefs.resubscribe(db(), subscriber) == "changed"
        )
        subscriber = store_subscribers.get_row(db(), subscriber.id)
        labels = settings.topic_labels
        saved = ALL if topics == ALL else [labels[s] for s in settings.topic_slugs if s in topics]
        return preferences_page(
            subscriber, saved=True, saved_topics=saved, resubscribed=resubscribed
        )

    @app.get("/unsubscribe/<token>")
    def unsubscribe(token: str):
        subscriber = subscriber_for(token, "unsubscribe")
        if subscriber.status != "subscribed":
            return page(
                "unsubscribed",
                email=subscriber.email,
                already=True,
                status=subscriber.status,
                stopped_because=prefs.stopped_because(db(), subscriber),
                can_resubscribe=prefs.can_resubscribe(db(), subscriber),
                **links(subscriber),
            )
        return page(
            "unsubscribe",
            email=subscriber.email,
            form_url=url_for("unsubscribe", token=token),
            **links(subscriber),
        )

    # RFC 8058: the mail provider POSTs `List-Unsubscribe=One-Click` here, with no cookie and
    # no form token; the signed token in the URL is the whole authority. Any POST does it.
    @app.post("/unsubscribe/<token>")
    def unsubscribe_now(token: str):
        subscriber = subscriber_for(token, "unsubscribe")
        one_click = request.form.get(ONE_CLICK_BODY[0]) == ONE_CLICK_BODY[1]
        reason = "one-click unsubscribe" if one_click else "unsubscribe page"
        changed = prefs.unsubscribe(db(), subscriber, reason)
        subscriber = store_subscribers.get_row(db(), subscriber.id)
        return page(
            "unsubscribed",
            email=subscriber.email,
            already=not changed,
            status=subscriber.status,
            stopped_because=prefs.stopped_because(db(), subscriber),
            can_resubscribe=prefs.can_resubscribe(db(), subscriber),
            **links(subscriber),
        )

    @app.post("/resubscribe/<token>")
    def resubscribe(token: str):
        subscriber = subscriber_for(token, "preferences")
        outcome = prefs.resubscribe(db(), subscriber)
        subscriber = store_subscribers.get_row(db(), subscriber.id)
        return page(
            "resubscribed",
            409 if outcome == "refused" else 200,
            email=subscriber.email,
            status=subscriber.status,
            resubscribed=outcome == "changed",
            stopped_because=prefs.stopped_because(db(), subscriber),
            **links(subscriber),
        )

    # --- SendGrid's event webhook -----------------------------------------------------------

    @app.post("/webhooks/sendgrid")
    def sendgrid_webhook():
        try:
            # `db`, not `db()`: the database is opened only for a verified batch.
            report = webhook.receive(
                db,
                request.get_data(cache=False),
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
            )
        except WebhookNotConfigured as exc:
            # 503, not 4xx: SendGrid retries, so no event is lost while the key is set up.
            log.error("SendGrid webhook refused: %s", exc)
            return jsonify(error="webhook not configured"), 503
        except SignatureInvalid as exc:
            return jsonify(error=str(exc)), 403
        except PayloadInvalid as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(report.as_dict())

    return app


def _friendly(exc: HTTPException) -> str:
    return {
        404: "There is no page at this address.",
        405: "This page cannot be used that way.",
        413: "That request was too large.",
    }.get(exc.code or 0, exc.description or "")


def run_server(app: Flask, host: str, port: int, threads: int = 8) -> str:
    """Serve with waitress when it is installed (production-grade), else werkzeug's server."""
    try:
        import waitress
    except ImportError:
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True)
        return "werkzeug"
    waitress.serve(app, host=host, port=port, threads=threads)
    return "waitress"
