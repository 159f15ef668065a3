"""Signup with double opt-in: the form's checks, pending signups and their confirmation, the
limits against abuse, the signup emails and the consent record.

`newsletter serve` offers it (`newsletter.web.signup`) when `signup.enabled` is set; the admin's
side is `newsletter subscribers consent / purge-pending` and `newsletter signup-form`.
"""

from __future__ import annotations

from ..clock import Clock, system_clock
from ..clock import from_utc_text as parse_iso
from ..clock import utc_text as iso

__all__ = ["Clock", "iso", "parse_iso", "system_clock"]
