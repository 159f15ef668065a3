"""The consent record (GDPR Art. 7(1): being able to show when and to what each person
consented): one append-only row per confirmed signup, and per address an admin's import adds or
resubscribes, kept in the database (`newsletter.store.consents`).

A signup's row says when the form was sent and when the link was confirmed, the client's
address as `signup.record_ip` says, the user agent, which form, the consent sentence's version
and SHA-256 (the sentence itself is kept once, by its hash), the privacy notice's address and
the topics chosen. An import's row says "import: FILE" and when.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..config import Settings, display_path
from ..errors import SubscriberError
from ..store import Database
from ..store import consents as store
from ..store.consents import COLUMNS, Consent
from ..store.subscribers import ImportBatch, normalise_email

SIGNUP = "signup"
SUBSCRIBED = "subscribed"
IMPORT_PREFIX = "import: "


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ConsentText:
    """The sentence the form shows, as the settings give it now."""

    version: str
    text: str
    sha256: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsentText:
        text = settings.signup.consent_text
        return cls(settings.signup.consent_version, text, text_sha256(text))

    def remember(self, db: Database, at: str) -> None:
        store.remember_text(db, self.sha256, self.version, self.text, at)


def record(db: Database, consent: Consent) -> None:
    store.add(db, [consent])


def record_import(db: Database, batch: ImportBatch, file: str | os.PathLike, at: str) -> None:
    """One row per address a page of an import added as subscribed or made subscribed again,
    with its source `import: FILE`. Joins the import's transaction, after the batch is written."""
    source = IMPORT_PREFIX + display_path(Path(file))
    added = ((email, topics) for email, _, topics, status, _ in batch.new if status == SUBSCRIBED)
    returned = (sid for sid, _, new, _ in batch.statuses if new == SUBSCRIBED)
    store.add_imported(db, added, returned, source, at)


@dataclass(frozen=True)
class ConsentRecord:
    """Every row for one address, and the consent sentences they name (sha256 → text)."""

    email: str
    rows: list[Consent]
    texts: dict[str, str]


def for_address(db: Database, email: str) -> ConsentRecord:
    """The record of one address (any case); SubscriberError when there is none."""
    address = normalise_email(email)
    rows = store.for_email(db, address)
    if not rows:
        raise SubscriberError(f"no consent is recorded for {email.strip()!r}")
    texts = {}
    for row in rows:
        if row.consent_sha256 and row.consent_sha256 not in texts:
            texts[row.consent_sha256] = store.text(db, row.consent_sha256) or ""
    return ConsentRecord(address, rows, texts)


EXPORT_COLUMNS = (*COLUMNS[1:], "consent_text")


def export_csv(db: Database, out: TextIO) -> int:
    """Every row of the record as CSV (oldest first, with the sentence each names); the count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    texts: dict[str, str] = {}
    count = 0
    for row in store.iter_all(db):
        sha = row.consent_sha256
        if sha and sha not in texts:
            texts[sha] = store.text(db, sha) or ""
        writer.writerow([*(getattr(row, c) or "" for c in COLUMNS[1:]), texts.get(sha, "")])
        count += 1
    return count


def export_csv_file(db: Database, path: str | os.PathLike) -> int:
    """Export to a file, UTF-8, written atomically (never half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            count = export_csv(db, out)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SubscriberError(f"{display_path(path)}: cannot write: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
