"""Shared helpers of the click tests: the example issue sent (through the real send loop, to a
scripted backend) to subscribers with distinctive ids, the links each one's email holds, and
SendGrid `delivered` and `click` events for them."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from newsletter.delivery import send_issue
from newsletter.render import fill
from newsletter.store import Database, now
from tests.support.delivery import ISSUE, ScriptedBackend

# Ids no count, day or time could be mistaken for when the database is searched for them.
FIRST_ID = 7340021
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SCANNER = "Mozilla/5.0 (compatible; BarracudaCentral link check)"
DELIVERED_AT = 1_795_000_000  # Unix seconds: when the emails arrived (events' own time)

_ids = itertools.count(1)


@dataclass
class Reader:
    id: int
    email: str
    links: list[str]  # the hrefs of their email's HTML part, filled in, in order


def add_subscribers(db: Database, people: list[tuple[str, str]]) -> dict[str, int]:
    """(email, topics as stored: 'all' or 'a;b') with ids from FIRST_ID; email → id."""
    at = now()
    ids = {}
    with db.transaction():
        for n, (address, topics) in enumerate(people):
            ids[address] = FIRST_ID + n
            db.conn.execute(
                "INSERT INTO subscribers (id, email, name, topics, status, created_at, "
                "updated_at) VALUES (?, ?, '', ?, 'subscribed', ?, ?)",
                (FIRST_ID + n, address, topics, at, at),
            )
    return ids


def send_example(settings, db: Database) -> dict[str, Reader]:
    """Send the example issue to everyone subscribed; email → what their email held."""
    backend = ScriptedBackend(max_batch=50)
    send_issue(settings, db, ISSUE, backend=backend, sleep=lambda s: None)
    readers = {}
    for batch in backend.batches:
        for r in batch.recipients:
            html = fill(batch.email.html, batch.email.substitutions(r.values))
            hrefs = [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]
            readers[r.email] = Reader(r.subscriber_id, r.email, hrefs)
    return readers


def event(kind: str, reader: Reader, at: int, **extra) -> dict:
    data = {
        "email": reader.email,
        "timestamp": at,
        "event": kind,
        "sg_event_id": f"evt-{kind}-{next(_ids)}",
        "sg_message_id": f"msg-{reader.id}.filter",
        "newsletter_issue": ISSUE,
        "newsletter_subscriber": str(reader.id),
    }
    data.update(extra)
    return data


def delivered(reader: Reader, at: int = DELIVERED_AT) -> dict:
    return event("delivered", reader, at)


def click(reader: Reader, url: str, at: int, agent: str | None = BROWSER) -> dict:
    extra = {"url": url, "url_offset": {"index": reader.links.index(url), "type": "html"}}
    if agent is not None:
        extra["useragent"] = agent
    return event("click", reader, at, **extra)


def link_to(reader: Reader, fragment: str) -> str:
    """The first link of the reader's email whose URL holds `fragment`."""
    return next(link for link in reader.links if fragment in link)


# The people of the click tests (email, topics) and the example issue's summaries they follow.
PEOPLE = [
    ("ana@example.org", "all"),
    ("ben@example.org", "genetics"),
    ("cy@example.org", "genetics;gut-microbiome"),
    ("dee@example.org", "all"),
    ("eve@example.org", "all"),
]
PREGNANCY = "pregnancy-breastfeeding-therapy"
GUT = "gut-bacteria-disease-activity"
VARIANTS = "risk-variants-brain-methylation"
TREM2 = "trem2-microglia-repair"
