"""Reading the site's feed: RSS 2.0 / RSS 1.0 / Atom through feedparser, JSON Feed through json and
a small validated model, all into the same `FeedEntry` list.

A feed that cannot be read at all (malformed XML, an HTML page, not a feed) is a `FeedError`; an
entry that cannot be used (no link, no id, an invalid JSON Feed item) is one of `Feed.problems`,
and the others are still read. At most `max_entries` entries are read, so a feed of 50,000 entries
costs what a feed of `max_entries` does.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urljoin, urlsplit

import feedparser
import lxml.html
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .extract import fragment_text, one_line
from .fetch import Fetched

FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json")
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, "
    "application/json;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
HTML_TYPES = ("text/html", "application/xhtml+xml")
FORMATS = {
    "rss20": "RSS 2.0",
    "rss10": "RSS 1.0",
    "rss092": "RSS 0.92",
    "rss091u": "RSS 0.91",
    "rss091n": "RSS 0.91",
    "atom10": "Atom",
    "atom03": "Atom 0.3",
}


class FeedError(Exception):
    """The feed cannot be read at all; `reason` says why."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class FeedEntry:
    """One entry of a feed, whatever the format."""

    entry_id: str  # guid / Atom id / JSON Feed id, else the link
    link: str | None  # absolute
    title: str | None
    published: dt.date | None  # as the feed writes it, in the feed's own time zone
    updated: str | None  # the entry's last-change stamp, as written (for change detection)
    categories: tuple[str, ...] = ()
    summary: str | None = None  # plain text
    content_html: str | None = None  # the full content, when the feed carries it

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything the feed says about the entry changes."""
        data = json.dumps(asdict(self), sort_keys=True, default=str, ensure_ascii=False)
        return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass
class Feed:
    url: str
    format: str
    title: str
    entries: list[FeedEntry] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    total: int = 0  # entries in the feed, including those beyond max_entries


def parse_feed(fetched: Fetched, max_entries: int) -> Feed:
    """The entries of a fetched feed (RSS, Atom or JSON Feed, told apart by content)."""
    kind = _sniff(fetched)
    if kind == "json":
        return _parse_json_feed(fetched, max_entries)
    if kind == "html":
        raise FeedError(fetched.url, _not_a_feed_html(fetched))
    return _parse_xml_feed(fetched, max_entries)


def _sniff(fetched: Fetched) -> str:
    head = fetched.body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<?xml", b"<rss", b"<feed", b"<rdf:rdf")):
        return "xml"
    if head.startswith(b"{"):
        return "json"
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if "json" in fetched.content_type:
        return "json"
    if fetched.content_type == "text/html":
        return "html"
    return "xml"


def _not_a_feed_html(fetched: Fetched) -> str:
    reason = "not a feed: the address serves an HTML page"
    try:
        doc = lxml.html.fromstring(fetched.body)
    except (etree.ParserError, ValueError):
        return reason
    for link in doc.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        if "alternate" in rel and (link.get("type") or "").lower() in FEED_TYPES:
            href = link.get("href")
            if href:
                return f"{reason}; it names a feed at {urljoin(fetched.final_url, href)}"
    return reason


# RSS and Atom -----------------------------------------------------------------------------------


def _parse_xml_feed(fetched: Fetched, max_entries: int) -> Feed:
    # lxml first, strictly and without fetching or expanding anything, for a precise error on
    # malformed XML (feedparser would quietly fall back to a lenient parser and guess), and to
    # cut the document to max_entries before feedparser (about 0.5 ms an entry) reads it.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    if not fetched.body.strip():
        raise FeedError(fetched.url, "not a feed: the answer is empty")
    try:
        root = etree.fromstring(fetched.body, parser)
    except etree.XMLSyntaxError as exc:
        raise FeedError(fetched.url, f"malformed XML: {exc.msg}") from None
    if root is None:
        raise FeedError(fetched.url, "not a feed: the document is empty")
    name = etree.QName(root).localname
    if name not in ("rss", "feed", "RDF"):
        raise FeedError(
            fetched.url,
            f"not a feed: the document's root element is <{name}>, not <rss>, <feed> or <rdf:RDF>",
        )
    holder = root.find("channel") if name == "rss" else root
    items = [] if holder is None else _entry_elements(holder)
    body = fetched.body
    if len(items) > max_entries:
        extra = set(items[max_entries:])
        holder[:] = [el for el in holder if el not in extra]  # one pass: remove() is O(n) each
        body = etree.tostring(root, encoding="utf-8", xml_declaration=True)
    parsed = feedparser.parse(
        body,
        response_headers={
            "content-location": fetched.final_url,
            "content-type": fetched.headers.get("content-type", "application/xml"),
        },
        sanitize_html=True,
        resolve_relative_uris=True,
    )
    if not parsed.version:
        raise FeedError(fetched.url, "not a feed: neither RSS nor Atom")
    feed = Feed(
        url=fetched.url,
        format=FORMATS.get(parsed.version, parsed.version),
        title=one_line(parsed.feed.get("title", "")),
        total=len(items),
    )
    for n, raw in enumerate(parsed.entries, 1):
        try:
            feed.entries.append(_xml_entry(raw, fetched.final_url))
        except ValueError as exc:
            feed.problems.append((_where(raw.get("title"), n), str(exc)))
    return feed


def _entry_elements(holder) -> list:
    return [
        el
        for el in holder
        if isinstance(el.tag, str) and etree.QName(el).localname in ("item", "entry")
    ]


def _where(title: str | None, n: int) -> str:
    title = one_line(fragment_text(title or ""))
    return f"entry {n} ({title!r})" if title else f"entry {n}"


def _xml_entry(raw, base: str) -> FeedEntry:
    link = _absolute(raw.get("link"), base)
    entry_id = (raw.get("id") or "").strip() or link
    if not entry_id:
        raise ValueError("has neither an id (guid) nor a link")
    if not link:
        raise ValueError(f"entry {entry_id} has no link to its page")
    content = None
    for part in raw.get("content") or []:
        if part.get("type") in ("text/html", "application/xhtml+xml") and part.get("value"):
            content = part["value"]
            break
    # Without a <description>, feedparser gives the content as the summary too: not a teaser.
    summary = None if content and raw.get("summary") == content else _text_of(raw, "summary")
    if content is None and (raw.get("summary_detail") or {}).get("type") in HTML_TYPES:
        # RSS often carries the whole text in <description>: it may hold the sections.
        content = raw.get("summary")
    stamp = raw.get("published") or dict.get(raw, "updated")
    parsed_stamp = raw.get("published_parsed") or dict.get(raw, "updated_parsed")
    return FeedEntry(
        entry_id=entry_id,
        link=link,
        title=_text_of(raw, "title"),
        published=_date(stamp, parsed_stamp),
        # dict.get: FeedParserDict maps a missing `updated` to `published`, with a warning.
        updated=dict.get(raw, "updated") or raw.get("published"),
        categories=tuple(
            one_line(tag.get("term") or tag.get("label") or "")
            for tag in raw.get("tags") or []
            if (tag.get("term") or tag.get("label") or "").strip()
        ),
        summary=summary,
        content_html=content,
    )


def _text_of(raw, key: str) -> str | None:
    """An entry's title or summary as plain text (feedparser says whether it is HTML)."""
    value = raw.get(key) or ""
    if (raw.get(f"{key}_detail") or {}).get("type") in HTML_TYPES:
        value = fragment_text(value)
    return one_line(value) or None


def _absolute(link: str | None, base: str) -> str | None:
    if not link or not link.strip():
        return None
    url = urljoin(base, link.strip())
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"link {link!r} is not an http(s) URL")
    return url


def _date(stamp: str | None, parsed: time.struct_time | None = None) -> dt.date | None:
    """The date as written (RFC 822 or RFC 3339), not converted to UTC: an entry published at
    00:30 in Paris belongs to that day, as on the site."""
    if stamp:
        text = stamp.strip()
        try:
            return email.utils.parsedate_to_datetime(text).date()
        except (TypeError, ValueError, IndexError):
            pass
        try:
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    if parsed:
        return dt.date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)
    return None


# JSON Feed --------------------------------------------------------------------------------------


class _JsonItem(BaseModel):
    """The part of a JSON Feed item (https://jsonfeed.org/version/1.1) that a pull uses."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str = Field(min_length=1, max_length=2000)
    url: str | None = Field(None, max_length=2000)
    title: str | None = None
    summary: str | None = None
    content_html: str | None = None
    date_published: str | None = None
    date_modified: str | None = None
    tags: list[str] = []


class _JsonFeed(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    title: str
    items: list[dict]

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if not value.startswith("https://jsonfeed.org/version/1"):
            raise ValueError(f"{value!r} is not a JSON Feed version (https://jsonfeed.org/...)")
        return value


def _parse_json_feed(fetched: Fetched, max_entries: int) -> Feed:
    try:
        data = json.loads(fetched.body.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise FeedError(fetched.url, f"JSON Feed is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise FeedError(fetched.url, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FeedError(fetched.url, "not a feed: JSON, but not a JSON Feed object")
    try:
        model = _JsonFeed(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FeedError(fetched.url, f"not a JSON Feed: field '{where}': {first['msg']}") from None
    feed = Feed(
        url=fetched.url,
        format="JSON Feed",
        title=one_line(model.title),
        total=len(model.items),
    )
    for n, item in enumerate(model.items[:max_entries], 1):
        title = item.get("title") if isinstance(item, dict) else None
        try:
            parsed = _JsonItem(**item) if isinstance(item, dict) else None
            if parsed is None:
                raise ValueError("is not an object")
            feed.entries.append(_json_entry(parsed, fetched.final_url))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            feed.problems.append((_where(str(title or ""), n), f"field '{loc}': {first['msg']}"))
        except ValueError as exc:
            feed.problems.append((_where(str(title or ""), n), str(exc)))
    return feed


def _json_entry(item: _JsonItem, base: str) -> FeedEntry:
    link = _absolute(item.url, base)
    if not link:
        raise ValueError(f"entry {item.id} has no link to its page (url)")
    return FeedEntry(
        entry_id=item.id.strip(),
        link=link,
        title=one_line(item.title or "") or None,
        published=_date(item.date_published or item.date_modified),
        updated=item.date_modified or item.date_published,
        categories=tuple(one_line(t) for t in item.tags if t.strip()),
        summary=one_line(item.summary or "") or None,
        content_html=item.content_html,
    )
