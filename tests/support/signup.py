"""Helpers of the signup tests: a clock the app reads (no sleeps), filling in and posting the
form the way a browser does, the emails written under `outbox/signup/`, and a dump of the whole
database to compare before and after."""

from __future__ import annotations

import datetime as dt
import email
import re
from email import policy
from pathlib import Path

import yaml

from newsletter.config import Settings, load_settings
from newsletter.store import Database
from newsletter.web import create_app

START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
FILL_TIME = dt.timedelta(seconds=20)  # how long our test visitor takes over the form
STAMP_RE = re.compile(r'name="stamp" value="([^"]+)"')
CONFIRM_RE = re.compile(r"/confirm/([A-Za-z0-9_-]+)")


class Clock:
    """The app's `now`: moves only when a test moves it."""

    def __init__(self, start: dt.datetime = START):
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


def configure_signup(workspace: Path, **signup) -> Settings:
    """Rewrite the workspace's `signup:` settings (the example enables signup) and load them."""
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("signup", {}).update(signup)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_settings(path)


def make_app(settings: Settings, clock: Clock):
    """The app (`newsletter serve`'s) reading `clock`; NEWSLETTER_SECRET_KEY must be set."""
    return create_app(settings, now=clock)


def mailer(app):
    return app.extensions["newsletter"]["signup_mailer"]


def stamp_of(html: str) -> str:
    match = STAMP_RE.search(html)
    assert match, "no stamp in the form"
    return match.group(1)


def fresh_stamp(client, clock: Clock) -> str:
    """The stamp of the form as GET /subscribe shows it now; the clock then moves on by the
    time a person takes to fill it in."""
    response = client.get("/subscribe")
    assert response.status_code == 200
    stamp = stamp_of(response.get_data(as_text=True))
    clock.advance(seconds=FILL_TIME.total_seconds())
    return stamp


def form(stamp: str, address: str, name: str = "", topics=("genetics",), **extra) -> dict:
    data = {"stamp": stamp, "email": address, "name": name, "topics": list(topics), "website": ""}
    data.update(extra)
    return data


def sign_up(client, clock: Clock, address: str, *, ip: str = "192.0.2.10", headers=None, **fields):
    """Open the form, fill it in (taking FILL_TIME), send it; the response."""
    stamp = fresh_stamp(client, clock)
    return client.post(
        "/subscribe",
        data=form(stamp, address, **fields),
        headers=headers or {},
        environ_base={"REMOTE_ADDR": ip},
    )


def signup_emails(workspace: Path) -> list[tuple[Path, email.message.EmailMessage]]:
    """Every email under outbox/signup/, oldest first."""
    folder = workspace / "outbox" / "signup"
    paths = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [(p, email.message_from_bytes(p.read_bytes(), policy=policy.default)) for p in paths]


def emails_to(workspace: Path, address: str) -> list[email.message.EmailMessage]:
    return [m for _, m in signup_emails(workspace) if m["To"] == address]


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def confirm_token(message) -> str:
    """The token of the confirmation link, from the text part (the same as the HTML's)."""
    tokens = set(CONFIRM_RE.findall(text_of(message))) | set(CONFIRM_RE.findall(html_of(message)))
    assert len(tokens) == 1, tokens
    return tokens.pop()


def dump(db: Database) -> str:
    """The whole database as text: every table, every row (sorted), on either engine."""
    from newsletter.store.copy import tables

    lines = []
    for table in tables(db):
        rows = sorted(repr(tuple(r)) for r in db.conn.execute(f'SELECT * FROM "{table}"'))
        lines += [f"{table}: {row}" for row in rows]
    return "\n".join(lines)
