"""SendGrid's suppression lists honoured: pull global unsubscribes, bounces, spam reports and
invalid addresses into the subscribers' status, so that we never mail someone SendGrid would drop.

What an entry may change is `newsletter.status_rules`' to decide (source "suppression sync"):
never resubscribe anyone, never trade a stronger status for a weaker one, never undo a later
resubscribe.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import Environment, Settings
from ..errors import DeliveryError
from ..store import Database
from ..store import events as store_events
from ..store import subscribers as store_subscribers
from ..subscribers import rules
from .client import DEFAULT_HOST, call, make_client

PAGE_SIZE = 500  # SendGrid's maximum `limit` for suppression lists

# (SendGrid list, our status), strongest first so that an address on two lists is set once.
LISTS: tuple[tuple[str, str], ...] = (
    ("spam_reports", "complained"),
    ("unsubscribes", "unsubscribed"),
    ("bounces", "bounced"),
    ("invalid_emails", "invalid"),
)

# The window re-read before each watermark: entries can become visible a little after their
# `created` second (and several share a second); re-applying one changes nothing.
OVERLAP_SECONDS = 600


def iso_from_epoch(seconds: int | float) -> str:
    """Unix seconds as the store's ISO text (UTC, seconds, `Z`)."""
    stamp = dt.datetime.fromtimestamp(int(seconds), dt.UTC)
    return stamp.isoformat().replace("+00:00", "Z")


# --- The sync -----------------------------------------------------------------------------------


@dataclass
class ListReport:
    """What one suppression list brought."""

    name: str
    status: str
    start_time: int | None = None  # what we asked from (None: everything)
    fetched: int = 0
    changed: int = 0
    unchanged: int = 0  # already that status, or a stronger one
    resubscribed: int = 0  # came back after SendGrid recorded it
    unknown: int = 0  # not one of our subscribers
    requests: int = 0
    watermark: int | None = None


@dataclass
class SyncReport:
    lists: list[ListReport] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(item.changed for item in self.lists)

    @property
    def fetched(self) -> int:
        return sum(item.fetched for item in self.lists)

    @property
    def unknown(self) -> int:
        return sum(item.unknown for item in self.lists)

    def lines(self) -> list[str]:
        out = []
        for item in self.lists:
            since = "all time" if item.start_time is None else iso_from_epoch(item.start_time)
            out.append(
                f"{item.name}: {item.fetched} entries since {since}; {item.changed} set "
                f"{item.status}, {item.unchanged} already so, {item.unknown} not subscribers"
                + (f", {item.resubscribed} resubscribed since" if item.resubscribed else "")
            )
        return out


def _watermark_key(name: str) -> str:
    return f"sendgrid.suppressions.{name}.created"


def _fetch_page(client, name: str, query: dict[str, int], host: str) -> list[dict]:
    """One GET of a suppression list; SendGrid's refusals become our errors, without the key."""
    response = call(
        lambda: client.client.suppression._(name).get(query_params=query),
        host=host,
        timeout=client.client.timeout,
        action=f"the {name} list",
        forbidden="the API key needs the Suppressions read permission",
        idempotent=True,
    )
    try:
        entries = json.loads(response.body or b"[]")
    except ValueError:
        raise DeliveryError(f"SendGrid sent a {name} page that is not JSON") from None
    if not isinstance(entries, list):
        raise DeliveryError(f"SendGrid sent a {name} page that is not a list")
    return entries


def _reason(name: str, entry: dict) -> str:
    detail = str(entry.get("reason") or "").strip()
    label = {
        "spam_reports": "SendGrid spam report",
        "unsubscribes": "SendGrid global unsubscribe",
        "bounces": "SendGrid bounce",
        "invalid_emails": "SendGrid invalid address",
    }[name]
    return f"{label}: {detail}" if detail else label


def sync_suppressions(
    settings: Settings,
    db: Database,
    client=None,
    page_size: int = PAGE_SIZE,
    environment: Environment | None = None,
) -> SyncReport:
    """Pull what is new on SendGrid's four suppression lists and set those subscribers' status.

    Paged with limit/offset; each list remembers the newest `created` it has seen (in `meta`)
    and the next sync asks from there (`start_time`), so each run reads only what is new.
    Addresses that are not our subscribers are counted and ignored. `client` is the official
    SendGrid client (default: made from `environment`, itself by default the process's). Raises
    ConfigError without an API key, AuthenticationError on 401/403, DeliveryError on other
    failures.
    """
    if client is None:
        client = make_client(
            settings,
            environment,
            needed_for="syncing suppressions needs a SendGrid API key with read access to "
            "suppressions",
        )
    elif getattr(client.client, "timeout", None) is None:
        client.client.timeout = settings.delivery.timeout
    host = getattr(client, "host", None) or DEFAULT_HOST
    page_size = max(1, min(int(page_size), PAGE_SIZE))
    report = SyncReport()
    for name, status in LISTS:
        item = ListReport(name=name, status=status)
        report.lists.append(item)
        stored = store_events.get_meta(db, _watermark_key(name))
        watermark = int(stored) if stored is not None else None
        item.watermark = watermark
        query: dict[str, int] = {"limit": page_size}
        if watermark is not None:
            item.start_time = max(0, watermark - OVERLAP_SECONDS)
            query["start_time"] = item.start_time
        offset = 0
        while True:
            page = _fetch_page(client, name, {**query, "offset": offset}, host)
            item.requests += 1
            for entry in page:
                _apply_entry(db, item, name, status, entry)
            if len(page) < page_size:
                break
            offset += len(page)
        # Only after the whole list went through: a failure half-way re-reads it next time.
        if item.watermark is not None and item.watermark != watermark:
            store_events.set_meta(db, _watermark_key(name), str(item.watermark))
    return report


def _apply_entry(db: Database, item: ListReport, name: str, status: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        return
    item.fetched += 1
    created = entry.get("created")
    if isinstance(created, int) and not isinstance(created, bool):
        item.watermark = created if item.watermark is None else max(item.watermark, created)
        at = iso_from_epoch(created)
    else:
        at = None
    email = entry.get("email")
    subscriber = store_subscribers.get_row_by_email(db, email) if isinstance(email, str) else None
    if subscriber is None:
        item.unknown += 1
        return
    outcome = rules.change(db, subscriber, rules.Source.SYNC, status, _reason(name, entry), at=at)
    if outcome == "changed":
        item.changed += 1
    elif outcome == "stale":
        item.resubscribed += 1
    else:
        item.unchanged += 1


def sync_before_send(
    settings: Settings, db: Database, client=None, environment: Environment | None = None
) -> SyncReport | None:
    """The sync a SendGrid send runs first; None when `delivery.sendgrid.sync_suppressions` is off."""
    if not settings.delivery.sendgrid.sync_suppressions:
        return None
    return sync_suppressions(settings, db, client=client, environment=environment)
