"""Signup with double opt-in: the form's checks, pending signups and their confirmation, the
limits against abuse, the signup emails and the consent record.

`newsletter serve` offers it (`newsletter.web.signup`) when `signup.enabled` is set; the admin's
side is `newsletter subscribers consent / purge-pending` and `newsletter signup-form`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """UTC time as the store writes it (`store.now`): ISO text to the second, sorting correctly."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
