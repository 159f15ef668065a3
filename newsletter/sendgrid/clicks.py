"""SendGrid's `click` events, counted per summary and link, people apart from machines.

A click names its issue and recipient through the custom args every message carries; the ledger
gives the recipient's segment (which summaries their email held) and when it arrived; the URL
gives the summary and the kind of link (`newsletter.engagement.links`).

By default nothing is kept about who clicked: counts per (issue, summary, link kind, day), and
distinct readers per summary as an HMAC of the subscriber id under a random key of the issue's
own, which is discarded `tracking.clicker_key_days` after the issue's first click. While it
lives, the hashes let a reader who clicks twice count once (an exact count, where a HyperLogLog
sketch would be approximate at the small numbers of a newsletter, and its registers alone would
still need a secret hash); once it is gone, no one (not even with the database and every
subscriber id) can tell whose a hash was. Clicks after that still count as clicks, not as new
readers. `tracking.per_subscriber: true` also stores who clicked what (`click_subscribers`).

Automated clicks (mail-security scanners that follow every link to check it) are counted apart
and left out of the figures:
- a click within `tracking.automated_after_delivery` seconds (10) of the email's arrival: the
  time of SendGrid's `delivered` event on the ledger, else when SendGrid accepted the request
  (or the scheduled time, when later), which is earlier, so the rule is never stricter than
  it says;
- `tracking.burst_links` (3) different links of one email followed within
  `tracking.burst_seconds` (1 s): no person clicks that fast, a scanner following every link
  does; the clicks of the burst already counted as people's are moved to automated;
- a user agent of a known scanner or HTTP library, or none at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..clock import utc_text
from ..config import Settings
from ..engagement import links
from ..store import Database
from ..store import clicks as store_clicks
from ..store import ledger as ledger_rows
from . import custom_args

log = logging.getLogger(__name__)

# Substrings (lower case) of the user agents of mail-security scanners and of HTTP libraries;
# `tracking.scanner_user_agents` adds to them.
SCANNER_AGENTS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "messagelabs",
    "symantec",
    "trendmicro",
    "forcepoint",
    "fortiguard",
    "sophos",
    "cisco",
    "ironport",
    "safelinks",
    "headlesschrome",
    "phantomjs",
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
)


class ClickEvent(BaseModel):
    """The fields of a click read here (the webhook has checked the common ones)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: Annotated[str, Field(max_length=links.MAX_URL)]
    timestamp: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
    useragent: Annotated[str, Field(max_length=2000)] | None = None
    url_offset: dict | None = None


def is_scanner_agent(user_agent: str | None, extra: list[str] = ()) -> bool:
    if not user_agent or not user_agent.strip():
        return True  # every browser sends one
    agent = user_agent.lower()
    return any(mark in agent for mark in SCANNER_AGENTS) or any(
        mark.lower() in agent for mark in extra
    )


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def arrival(sent: store_clicks.SentEmail) -> float | None:
    """When the email reached the recipient, as well as we know (see the module's note)."""
    delivered = _epoch(sent.delivered_at)
    if delivered is not None:
        return delivered
    times = [t for t in (_epoch(sent.accepted_at), _epoch(sent.send_at)) if t is not None]
    return max(times) if times else None


def _link_id(link: links.Link, event: ClickEvent) -> str:
    """Tells one link of an email from another, without its URL (which may hold a token)."""
    offset = event.url_offset or {}
    index = offset.get("index") if isinstance(offset.get("index"), int) else ""
    if link.summary_id:
        return f"{link.kind}:{link.summary_id}"
    return f"{link.kind}:{index}"


def apply_click(settings: Settings, db: Database, event: dict) -> str | None:
    """Count one verified click event (inside the webhook's transaction); why it counts for
    nothing, or None when it was counted."""
    issue_id = event.get(custom_args.ISSUE)
    subscriber = str(event.get(custom_args.SUBSCRIBER) or "")
    if not isinstance(issue_id, str) or not subscriber.isdigit():
        return "click: not on an issue's email (a proof, or no newsletter custom args)"
    try:
        click = ClickEvent.model_validate(event)
    except ValidationError as err:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in err.errors()}))
        # Logged without the event's content, which holds an address and perhaps a token.
        log.warning("SendGrid webhook: a click skipped: unreadable field %s", fields)
        return f"click: unreadable field {fields}"
    subscriber_id = int(subscriber)
    sent = store_clicks.sent_email(db, issue_id, subscriber_id)
    if sent is None:
        return "click: no email of this issue was sent to this subscriber"
    tracking = settings.tracking
    plan = ledger_rows.get_plan(db, issue_id)
    in_email = tuple(plan.segments.get(sent.segment, ())) if plan else ()
    link = _link_map(settings, db, issue_id).classify(click.url, in_email)
    at = click.timestamp
    when = dt.datetime.fromtimestamp(int(at), dt.UTC)
    day, at_text = when.date().isoformat(), utc_text(when)
    arrived = arrival(sent)
    automated = is_scanner_agent(click.useragent, tracking.scanner_user_agents) or (
        arrived is not None and at - arrived < tracking.automated_after_delivery
    )
    store_clicks.add_count(
        db, issue_id, link.summary_id, link.kind, day, int(not automated), int(automated)
    )
    if tracking.per_subscriber:
        store_clicks.add_subscriber_click(
            db, issue_id, subscriber_id, link.summary_id, link.kind, at_text, automated
        )
    now = dt.datetime.now(dt.UTC)
    store_clicks.discard_expired_keys(db, utc_text(now))
    key = store_clicks.issue_key(
        db, issue_id, utc_text(now), utc_text(now + dt.timedelta(days=tracking.clicker_key_days))
    )
    if key is None:
        return None  # past the key's time: a click, no longer a reader to tell apart
    clicker = hmac.new(key, subscriber.encode("ascii"), hashlib.sha256).hexdigest()[:32]
    if link.summary_id and not automated:
        store_clicks.add_clicker(db, issue_id, link.summary_id, clicker)
    store_clicks.add_recent(
        db, issue_id, clicker, _link_id(link, click), link.summary_id, link.kind, day, at, automated
    )
    _check_burst(settings, db, issue_id, subscriber_id, clicker, at)
    store_clicks.forget_recent(db, at - store_clicks.RECENT_SECONDS)
    return None


def _link_map(settings: Settings, db: Database, issue_id: str) -> links.LinkMap:
    """The issue's link map, recorded from the files at its first click and read back after,
    so that a summary edited later does not change what earlier clicks meant."""
    rows = store_clicks.link_map(db, issue_id)
    if not rows:
        rows = links.issue_links(settings, issue_id)
        store_clicks.save_link_map(db, issue_id, rows)
    return links.LinkMap(settings, rows)


def _check_burst(
    settings: Settings, db: Database, issue_id: str, subscriber_id: int, clicker: str, at: float
) -> None:
    """Move the clicks of a burst (many links within a second) to automated."""
    tracking = settings.tracking
    span = tracking.burst_seconds
    nearby = store_clicks.recent_clicks(db, issue_id, clicker, at - span, at + span)
    burst: dict[int, store_clicks.RecentClick] = {}
    for start in nearby:
        window = [c for c in nearby if start.at <= c.at <= start.at + span]
        if len({c.link for c in window}) >= tracking.burst_links:
            burst.update((c.id, c) for c in window)
    moved = [c for c in burst.values() if not c.automated]
    if not moved:
        return
    for c in moved:
        store_clicks.move_to_automated(db, issue_id, c.summary_id, c.kind, c.day)
        if c.summary_id:
            store_clicks.remove_clicker_click(db, issue_id, c.summary_id, clicker)
    store_clicks.mark_recent_automated(db, [c.id for c in moved])
    if tracking.per_subscriber:
        low, high = (
            utc_text(dt.datetime.fromtimestamp(int(t), dt.UTC))
            for t in (min(c.at for c in moved), max(c.at for c in moved))
        )
        store_clicks.mark_subscriber_clicks_automated(db, issue_id, subscriber_id, low, high)
