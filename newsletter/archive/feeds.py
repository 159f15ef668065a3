"""The archive's machine-readable files: an Atom feed of the issues (`feed.xml`, RFC 4287) and a
sitemap (`sitemap.xml`, sitemaps.org). Both built with ElementTree, which escapes every text;
every date is a sent date, never the time of the build, so a rebuild gives the same bytes."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from ..config import Settings
from ..templating import render_template
from . import urls
from .collect import ArchiveContent
from .pages import SEARCH_PATH, TOPICS_PATH, PageBuilder

ATOM = "http://www.w3.org/2005/Atom"
SITEMAP = "http://www.sitemaps.org/schemas/sitemap/0.9"
FEED_PATH = "feed.xml"
SITEMAP_PATH = "sitemap.xml"
ENTRY_TEMPLATE = "archive/feed-entry.html.j2"


def atom_time(day: dt.date) -> str:
    """A sent date as an RFC 3339 time (the archive knows the day, not the hour)."""
    return f"{day.isoformat()}T00:00:00Z"


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def atom_feed(settings: Settings, content: ArchiveContent, pages: PageBuilder) -> bytes:
    """Every archived issue, newest first; each entry's content lists its summaries."""
    # Plain names under an xmlns attribute: the same document as namespaced elements, without
    # ElementTree's global prefix registry.
    feed = ET.Element("feed", {"xmlns": ATOM, "xml:lang": "en"})
    _sub(feed, "id", urls.absolute(settings, ""))
    _sub(feed, "title", settings.name)
    _sub(feed, "subtitle", f"Past issues of {settings.name}, newest first.")
    _sub(feed, "updated", atom_time(max(i.sent_on for i in content.issues)))
    _sub(
        feed,
        "link",
        rel="self",
        type="application/atom+xml",
        href=urls.absolute(settings, FEED_PATH),
    )
    _sub(feed, "link", rel="alternate", type="text/html", href=urls.absolute(settings, ""))
    author = _sub(feed, "author")
    _sub(author, "name", settings.name)
    for archived in content.issues:
        page_url = urls.absolute(settings, archived.path)
        entry = _sub(feed, "entry")
        _sub(entry, "id", page_url)
        _sub(entry, "title", archived.issue.subject)
        _sub(entry, "published", atom_time(archived.sent_on))
        _sub(entry, "updated", atom_time(archived.sent_on))
        _sub(entry, "link", rel="alternate", type="text/html", href=page_url)
        _sub(entry, "summary", archived.issue.preheader)
        html = render_template(
            pages.env, ENTRY_TEMPLATE, archived=archived, page_url=page_url, topics=pages.topics
        )
        _sub(entry, "content", html.strip(), type="html")
    return _xml(feed)


def sitemap(settings: Settings, content: ArchiveContent) -> bytes:
    """Every page of the archive, with the day it last changed by what was sent."""
    newest = max(i.sent_on for i in content.issues)
    lastmod: dict[str, dt.date] = {"": newest, TOPICS_PATH: newest, SEARCH_PATH: newest}
    for archived in content.issues:
        lastmod[archived.path] = archived.sent_on
    for topic in settings.topics:
        entries = content.by_topic(topic.slug)
        lastmod[urls.topic_path(topic.slug)] = entries[0].archived.sent_on if entries else newest
    urlset = ET.Element("urlset", {"xmlns": SITEMAP})
    for path in sorted(lastmod):
        url = _sub(urlset, "url")
        _sub(url, "loc", urls.absolute(settings, path))
        _sub(url, "lastmod", lastmod[path].isoformat())
    return _xml(urlset)
