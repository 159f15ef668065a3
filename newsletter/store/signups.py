"""SQL of the signup form: pending signups (waiting for their confirmation) and the limits that
hold across processes (when an address was last mailed, signups per client network).

The rules (what a signup does, when a link works) live in `newsletter.signup`; times are ISO text
in UTC (`YYYY-MM-DDTHH:MM:SSZ`), given by the caller, so that a test can set the clock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from . import Database

_COLUMNS = (
    "id, email, token_hash, name, topics, requested_at, expires_at, confirmed_at, ip, "
    "user_agent, form_id, consent_version, consent_sha256, privacy_url"
)


@dataclass(frozen=True)
class PendingSignup:
    """One row of `signups`: a signup and what its consent record will say once confirmed."""

    id: int | None
    email: str
    token_hash: str
    name: str
    topics: str  # encoded: 'all' or ';'-joined slugs
    requested_at: str
    expires_at: str
    confirmed_at: str | None
    ip: str | None
    user_agent: str | None
    form_id: str
    consent_version: str
    consent_sha256: str
    privacy_url: str | None


def _row(row: sqlite3.Row | None) -> PendingSignup | None:
    return None if row is None else PendingSignup(**dict(row))


def by_token_hash(db: Database, token_hash: str) -> PendingSignup | None:
    row = db.conn.execute(f"SELECT {_COLUMNS} FROM signups WHERE token_hash = ?", (token_hash,))
    return _row(row.fetchone())


def by_email(db: Database, email: str) -> PendingSignup | None:
    row = db.conn.execute(f"SELECT {_COLUMNS} FROM signups WHERE email = ?", (email,))
    return _row(row.fetchone())


def put(db: Database, signup: PendingSignup) -> None:
    """Insert the signup, or replace the one for the same address (its old link stops working)."""
    values = (
        signup.email,
        signup.token_hash,
        signup.name,
        signup.topics,
        signup.requested_at,
        signup.expires_at,
        signup.ip,
        signup.user_agent,
        signup.form_id,
        signup.consent_version,
        signup.consent_sha256,
        signup.privacy_url,
    )
    with db.transaction():
        db.conn.execute(
            "INSERT INTO signups (email, token_hash, name, topics, requested_at, expires_at, "
            "ip, user_agent, form_id, consent_version, consent_sha256, privacy_url) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (email) DO UPDATE SET token_hash = excluded.token_hash, "
            "name = excluded.name, topics = excluded.topics, "
            "requested_at = excluded.requested_at, expires_at = excluded.expires_at, "
            "confirmed_at = NULL, ip = excluded.ip, user_agent = excluded.user_agent, "
            "form_id = excluded.form_id, consent_version = excluded.consent_version, "
            "consent_sha256 = excluded.consent_sha256, privacy_url = excluded.privacy_url",
            values,
        )


def mark_confirmed(db: Database, signup_id: int, at: str) -> bool:
    """Use the signup's link up: True only for the one call that does (a link works once)."""
    with db.transaction():
        cur = db.conn.execute(
            "UPDATE signups SET confirmed_at = ? WHERE id = ? AND confirmed_at IS NULL",
            (at, signup_id),
        )
    return cur.rowcount == 1


# Per-address limit: when the form last made us email an address --------------------------------


def last_mailed(db: Database, email: str) -> str | None:
    row = db.conn.execute("SELECT sent_at FROM signup_mailed WHERE email = ?", (email,))
    found = row.fetchone()
    return None if found is None else found[0]


def set_mailed(db: Database, email: str, at: str | None) -> None:
    """Record when the address was mailed; None forgets it (the email could not be sent)."""
    with db.transaction():
        if at is None:
            db.conn.execute("DELETE FROM signup_mailed WHERE email = ?", (email,))
        else:
            db.conn.execute(
                "INSERT INTO signup_mailed (email, sent_at) VALUES (?, ?) "
                "ON CONFLICT (email) DO UPDATE SET sent_at = excluded.sent_at",
                (email, at),
            )


# Per-client limit ---------------------------------------------------------------------------------


def attempts_since(db: Database, client: str, since: str) -> int:
    row = db.conn.execute(
        "SELECT count(*) FROM signup_attempts WHERE client = ? AND at > ?", (client, since)
    )
    return row.fetchone()[0]


def add_attempt(db: Database, client: str, at: str) -> None:
    with db.transaction():
        db.conn.execute("INSERT INTO signup_attempts (client, at) VALUES (?, ?)", (client, at))


# Purge ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    signups: int  # expired pending signups (confirmed or not)
    mailed: int  # addresses whose one-a-day mark has run out
    attempts: int  # signups older than the per-client window


def purge(db: Database, now: str, mailed_before: str, attempts_before: str) -> Purged:
    """Delete what has run out: signups whose link expired at or before `now`, and the limits'
    rows older than their windows."""
    with db.transaction():
        signups = db.conn.execute("DELETE FROM signups WHERE expires_at <= ?", (now,)).rowcount
        mailed = db.conn.execute(
            "DELETE FROM signup_mailed WHERE sent_at <= ?", (mailed_before,)
        ).rowcount
        attempts = db.conn.execute(
            "DELETE FROM signup_attempts WHERE at <= ?", (attempts_before,)
        ).rowcount
    return Purged(signups, mailed, attempts)
