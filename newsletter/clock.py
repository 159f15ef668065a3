"""Time as the store, the ledger and the reports write it: UTC, whole seconds, ISO 8601 with `Z`
(`2026-12-01T09:00:00Z`), which sorts as text and reads well."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

# What a caller may pass for "now" (a test's fixed moment): an aware datetime.
Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    """Now, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def utc_text(when: dt.datetime) -> str:
    """`when` (aware) as UTC text, to the second."""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now() -> str:
    """The current time as UTC text."""
    return utc_text(dt.datetime.now(dt.UTC))


def from_utc_text(text: str) -> dt.datetime:
    """UTC text as `utc_text` writes it, back to an aware datetime."""
    return dt.datetime.fromisoformat(text)
