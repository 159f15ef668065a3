"""The built archive as a whole: every internal link and anchor resolves, the only external links
are the summaries' own (and the signup page), the Atom feed parses (feedparser) with the elements
RFC 4287 requires, and the sitemap lists every page."""
# Not both_engines: the built archive's links and pages, no database.

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from urllib.parse import urldefrag, urlsplit

import feedparser
import pytest

from newsletter.config import load_settings
from newsletter.content import load_summaries
from tests.archive_support import (
    ARCHIVE_URL,
    FIRST_ISSUE,
    SECOND_ISSUE,
    PageLinks,
    example_archive,
    file_for_url,
    page_file,
    resolve,
    site_files,
)


@pytest.fixture(scope="module")
def workspace_built(tmp_path_factory):
    return example_archive(tmp_path_factory.mktemp("archive") / "ws")


@pytest.fixture
def site(workspace_built):
    return workspace_built / "site"


@pytest.fixture
def settings(workspace_built):
    return load_settings(workspace_built / "newsletter.yaml")


def page_url(path: str) -> str:
    """The public URL of a built HTML file ("topics/x/index.html" → ".../topics/x/")."""
    return ARCHIVE_URL + path.removesuffix("index.html")


def test_every_link_and_anchor_resolves(site, settings):
    summaries = load_summaries(settings)
    own_urls = {str(s.url) for s in summaries.values()}
    own_urls |= {str(s.source_url) for s in summaries.values() if s.source_url}
    files = site_files(site)
    pages = {
        path: PageLinks(data.decode("utf-8"))
        for path, data in files.items()
        if path.endswith(".html")
    }
    assert len(pages) == 3 + 2 + len(settings.topics)  # index, topics, search; issues; topics
    external, checked = set(), 0
    for path, page in pages.items():
        duplicates = [i for i, n in Counter(page.ids).items() if n > 1]
        assert duplicates == [], f"{path}: repeated ids {duplicates}"
        here = page_url(path)
        for tag, href in page.links + [("meta", page.meta["og:url"])]:
            if href.startswith("data:"):
                continue
            url = resolve(here, href)
            target, fragment = urldefrag(url)
            file = file_for_url(site, target)
            if file is None:
                external.add(url)
                continue
            assert file.is_file(), f"{path}: {tag} {href} leads to nothing"
            if fragment:
                ids = pages[file.relative_to(site).as_posix()].ids
                assert fragment in ids, f"{path}: {href}: no id {fragment!r} there"
            checked += 1
    assert checked > 200
    # The only links out of the archive are the summaries' own pages and papers, and the signup
    # page (the example offers signup).
    assert settings.signup.enabled
    own_urls.add(f"{settings.preferences_base}/subscribe")
    assert external and external <= own_urls, external - own_urls
    # Every summary that was sent is reachable from the index, at its anchor.
    index = pages["index.html"]
    anchors = {resolve(ARCHIVE_URL, href) for _, href in index.links}
    for issue in (FIRST_ISSUE, SECOND_ISSUE):
        issue_ids = pages[f"{issue}/index.html"].ids
        assert f"{ARCHIVE_URL}{issue}/" in anchors
        sent = [i for i in issue_ids if i in summaries]
        assert sent and all(f"{ARCHIVE_URL}{issue}/#{sid}" in anchors for sid in sent)


def test_canonical_urls_name_each_page(site):
    for path in ("index.html", f"{FIRST_ISSUE}/index.html", "topics/genetics/index.html"):
        page = PageLinks((site / path).read_text())
        canonical = [href for tag, href in page.links if tag == "link" and href.startswith("http")]
        assert canonical == [page_url(path)]
        assert page.meta["og:url"] == page_url(path)
        assert page.meta["og:site_name"] == "MS Research Monthly"
        assert page.meta["og:title"] and page.meta["og:description"]


def test_atom_feed_parses_and_has_the_required_elements(site, settings):
    data = (site / "feed.xml").read_bytes()
    feed = feedparser.parse(data)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.id == ARCHIVE_URL
    assert feed.feed.title == settings.name
    assert feed.feed.updated == "2027-01-05T00:00:00Z"
    assert feed.feed.author == settings.name
    links = {link.rel: link.href for link in feed.feed.links}
    assert links == {"self": ARCHIVE_URL + "feed.xml", "alternate": ARCHIVE_URL}
    assert [entry.id for entry in feed.entries] == [
        f"{ARCHIVE_URL}{SECOND_ISSUE}/",
        f"{ARCHIVE_URL}{FIRST_ISSUE}/",
    ]
    for entry in feed.entries:
        assert entry.title and entry.summary
        assert entry.updated in ("2027-01-05T00:00:00Z", "2026-12-01T00:00:00Z")
        assert entry.link == entry.id
        assert file_for_url(site, entry.link).is_file()
        # The content lists the issue's summaries, each linking to its section.
        assert entry.content[0].type == "text/html"
        assert f'href="{entry.link}#' in entry.content[0].value
    # Every element RFC 4287 requires, read with a plain XML parser too.
    atom = "{http://www.w3.org/2005/Atom}"
    root = ET.fromstring(data)
    for name in ("id", "title", "updated", "author"):
        assert root.find(atom + name) is not None, name
    for entry in root.findall(atom + "entry"):
        for name in ("id", "title", "updated", "link"):
            assert entry.find(atom + name) is not None, name


def test_sitemap_lists_every_page(site):
    root = ET.fromstring((site / "sitemap.xml").read_bytes())
    ns = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
    locs = [url.findtext(ns + "loc") for url in root.findall(ns + "url")]
    assert locs == sorted(locs)
    pages = sorted(page_url(p) for p in site_files(site) if p.endswith("index.html"))
    assert sorted(locs) == pages
    for loc in locs:
        assert page_file(site, urlsplit(loc).path.removeprefix("/archive/")).is_file()
    lastmod = {u.findtext(ns + "loc"): u.findtext(ns + "lastmod") for u in root.findall(ns + "url")}
    assert lastmod[f"{ARCHIVE_URL}{FIRST_ISSUE}/"] == "2026-12-01"
    assert lastmod[ARCHIVE_URL] == "2027-01-05"
