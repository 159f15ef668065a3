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
    ET.register_namespace("", ATOM)
    a = f"{{{ATOM}}}"
    feed = ET.Element(f"{a}feed", {"xml:lang": "en"})
    _sub(feed, f"{a}id", urls.absolute(settings, ""))
    _sub(feed, f"{a}title", settings.name)
    _sub(feed, f"{a}subtitle", f"Past issues of {settings.name}, newest first.")
    _sub(feed, f"{a}updated", atom_time(max(i.sent_on for i in content.issues)))
    _sub(
        feed,
        f"{a}link",
        rel="self",
        type="application/atom+xml",
        href=urls.absolute(settings, FEED_PATH),
    )
    _sub(feed, f"{a}link", rel="alternate", type="text/html", href=urls.absolute(settings, ""))
    author = _sub(feed, f"{a}author")
    _sub(author, f"{a}name", settings.name)
    for archived in content.issues:
        page_url = urls.absolute(settings, archived.path)
        entry = _sub(feed, f"{a}entry")
        _sub(entry, f"{a}id", page_url)
        _sub(entry, f"{a}title", archived.issue.subject)
        _sub(entry, f"{a}published", atom_time(archived.sent_on))
        _sub(entry, f"{a}updated", atom_time(archived.sent_on))
        _sub(entry, f"{a}link", rel="alternate", type="text/html", href=page_url)
        _sub(entry, f"{a}summary", archived.issue.preheader)
        html = render_template(
            pages.env, ENTRY_TEMPLATE, archived=archived, page_url=page_url, topics=pages.topics
        )
        _sub(entry, f"{a}content", html.strip(), type="html")
    return _xml(feed)


def sitemap(settings: Settings, content: ArchiveContent) -> bytes:
    """Every page of the archive, with the day it last changed by what was sent."""
    ET.register_namespace("", SITEMAP)
    s = f"{{{SITEMAP}}}"
    newest = max(i.sent_on for i in content.issues)
    lastmod: dict[str, dt.date] = {"": newest, TOPICS_PATH: newest, SEARCH_PATH: newest}
    for archived in content.issues:
        lastmod[archived.path] = archived.sent_on
    for topic in settings.topics:
        entries = content.by_topic(topic.slug)
        lastmod[urls.topic_path(topic.slug)] = entries[0].archived.sent_on if entries else newest
    urlset = ET.Element(f"{s}urlset")
    for path in sorted(lastmod):
        url = _sub(urlset, f"{s}url")
        _sub(url, f"{s}loc", urls.absolute(settings, path))
        _sub(url, f"{s}lastmod", lastmod[path].isoformat())
    return _xml(urlset)
