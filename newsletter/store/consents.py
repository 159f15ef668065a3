"""SQL of the consent record: append-only rows (triggers refuse any UPDATE or DELETE) and every
consent sentence ever shown, by its SHA-256. The rules are `newsletter.signup.consent`'s."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from . import Database
from .postgres import copy_rows


@dataclass(frozen=True)
class Consent:
    """One row of the record."""

    id: int | None
    email: str
    source: str  # 'signup', or 'import: FILE'
    requested_at: str | None
    confirmed_at: str
    ip: str | None
    user_agent: str | None
    form_id: str | None
    consent_version: str | None
    consent_sha256: str | None
    privacy_url: str | None
    topics: str


COLUMNS = tuple(f.name for f in fields(Consent))
_INSERT = (
    f"INSERT INTO consents ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * len(COLUMNS[1:]))})"
)


def add(db: Database, consents: Iterable[Consent]) -> None:
    """Append rows (their `id` is ignored). Joins the caller's transaction."""
    with db.transaction():
        db.conn.executemany(_INSERT, ([getattr(c, n) for n in COLUMNS[1:]] for c in consents))


def add_imported(
    db: Database, added: Iterable[tuple[str, str]], ids: Iterable[int], source: str, at: str
) -> None:
    """An admin's import: a row for each (address, topics) `added`, and for each subscriber id
    in `ids` with their address and topics as they are now; nothing else but the source and
    the time. Joins the caller's transaction. On PostgreSQL the new rows go in with COPY (one
    statement a page of the import, not one a row)."""
    rows = ((email, source, at, topics) for email, topics in added)
    with db.transaction():
        if db.engine == "postgresql":
            copy_rows(db.conn, "consents", ("email", "source", "confirmed_at", "topics"), rows)
        else:
            db.conn.executemany(
                "INSERT INTO consents (email, source, confirmed_at, topics) VALUES (?, ?, ?, ?)",
                rows,
            )
        db.conn.executemany(
            "INSERT INTO consents (email, source, confirmed_at, topics) "
            "SELECT email, ?, ?, topics FROM subscribers WHERE id = ?",
            ((source, at, sid) for sid in ids),
        )


def remember_text(db: Database, sha256: str, version: str, text: str, at: str) -> None:
    """Keep a consent sentence by its hash, the first time it is used."""
    with db.transaction():
        db.conn.execute(
            "INSERT INTO consent_texts (sha256, version, text, first_used_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO NOTHING",
            (sha256, version, text, at),
        )


def text(db: Database, sha256: str) -> str | None:
    row = db.conn.execute("SELECT text FROM consent_texts WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else row[0]


def for_email(db: Database, email: str) -> list[Consent]:
    rows = db.conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM consents WHERE email = ? ORDER BY id", (email,)
    )
    return [Consent(**dict(r)) for r in rows]


def iter_all(db: Database, page_size: int = 1000) -> Iterator[Consent]:
    """Every row, oldest first, in keyset pages (never the whole record in memory)."""
    last = 0
    while True:
        rows = db.conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM consents WHERE id > ? ORDER BY id LIMIT ?",
            (last, page_size),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield Consent(**dict(row))
        last = rows[-1]["id"]
