"""What a list send does before it plans: with SendGrid, pull its suppression lists first.

So nobody SendGrid would drop is planned (and those planned already are skipped when claimed).
The send runs this step; the backend only delivers. Whether to sync is the settings' choice
(`delivery.sendgrid.sync_suppressions`), the client the backend's, so both use one key and host.
"""

from __future__ import annotations

from ..config import Settings
from ..store import Database
from .backends.base import Backend


def before_planning(settings: Settings, db: Database, backend: Backend) -> list[str]:
    """Run the pre-send steps for `backend`; returns the lines worth showing. May change
    subscribers' status; raises (a DeliveryError) to stop the send before anything is planned."""
    if backend.name != "sendgrid":
        return []
    from ..sendgrid.suppressions import sync_before_send

    report = sync_before_send(settings, db, client=backend.client)
    if report is None:
        return []
    return [f"suppressions synced: {report.changed} subscribers newly suppressed"]
