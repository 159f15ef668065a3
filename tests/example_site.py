#!/usr/bin/env python3
"""An example of the research-summaries site, to try `newsletter summaries pull` without the internet.

Summary pages in the structure of the real site (headline, the three sections, the date, related
summaries with "Read More", a disclaimer naming the journal) and feeds in RSS 2.0, Atom and JSON
Feed, built from the summaries in `summaries/`. Run it::

    python -m tests.example_site [--port 8808] [--summaries DIR]

It listens on 127.0.0.1 only and serves:

=====================  =========================================================================
``/``                  the index page (HTML; names the feeds with ``<link rel="alternate">``)
``/feed.xml``          RSS 2.0: each item links to its page
``/atom.xml``          Atom, the same entries
``/feed.json``         JSON Feed 1.1, the same entries
``/full.xml``          RSS 2.0 whose items carry the whole summary (``content:encoded``)
``/many.xml?n=N``      RSS 2.0 with N generated entries (pages ``/summaries/gen-<i>``)
``/summaries/<slug>``  a summary page
=====================  =========================================================================

Feeds answer conditional GETs (ETag, Last-Modified) with 304. In tests, `ExampleSite.answer()`
makes any path answer otherwise: a status, another body or charset, a redirect, a wait on an
event (a slow server), a stream of filler bytes (a huge body).
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from lxml import etree
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

REPO = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://ms-research.example.org"  # where the real pages live (their canonical URL)
SITE_NAME = "MS Research Summaries"
# The site's own category names; newsletter.yaml maps them to our topic slugs (source.topics).
CATEGORIES = {
    "treatment-safety": "Treatment Safety",
    "diagnosis-imaging": "Diagnosis & Imaging",
    "other-conditions": "Comorbidities",
    "gut-microbiome": "Gut Health",
    "genetics": "Genetics",
    "repair-remyelination": "Neuroprotection & Repair",
    "womens-health": "Women's Health",
    "infections": "Infections & Vaccines",
    "symptoms-daily-life": "Symptom Management",
}
ATOM = "http://www.w3.org/2005/Atom"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
FEED_TYPES = {
    "/feed.xml": "application/rss+xml; charset=utf-8",
    "/full.xml": "application/rss+xml; charset=utf-8",
    "/many.xml": "application/rss+xml; charset=utf-8",
    "/atom.xml": "application/atom+xml; charset=utf-8",
    "/feed.json": "application/feed+json; charset=utf-8",
}

_templates = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

PAGE = _templates.from_string("""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ s.title }} | {{ site_name }}</title>
{% if s.teaser %}<meta name="description" content="{{ s.teaser }}">
{% endif %}<link rel="canonical" href="{{ public_url }}/summaries/{{ s.slug }}">
<link rel="alternate" type="application/rss+xml" title="{{ site_name }}" href="/feed.xml">
<link rel="stylesheet" href="/static/site.css">
<style>.tab h2 { font-size: 1.2rem; }</style>
<script>window.analyticsQueue = window.analyticsQueue || [];</script>
</head>
<body>
<header class="site-header">
  <a class="brand" href="/"><img src="/static/logo.svg" alt="">{{ site_name }}</a>
  <nav><a href="/">All summaries</a> <a href="/about">About</a> <a href="/feed.xml">RSS</a></nav>
</header>
<main>
<article class="summary">
  <h1>{{ s.title }}</h1>
  <p class="headline">{{ s.headline }}</p>
  <section class="tab"><h2>What the study found</h2><p>{{ s.findings }}</p></section>
  <section class="tab"><h2>Why it matters</h2><p>{{ s.why_it_matters }}</p></section>
  <section class="tab"><h2>Limitations</h2><p>{{ s.limitations }}</p></section>
  <p class="published"><time datetime="{{ s.date.isoformat() }}">{{ us_date(s.date) }}</time></p>
  <section class="details">
    <h2>More Details</h2>
    <dl>
      <dt>Journal</dt><dd>{{ s.journal }}</dd>
      {% if s.source_url %}<dt>Original paper</dt><dd><a href="{{ s.source_url }}" rel="noopener">Read the study</a></dd>{% endif %}
    </dl>
  </section>
</article>
<aside class="related">
  <h2>More summaries</h2>
  {% for r in related %}<div class="card">
    <time datetime="{{ r.date.isoformat() }}">{{ us_date(r.date) }}</time>
    <p>{{ r.blurb }}</p>
    <a href="/summaries/{{ r.slug }}">Read More</a>
  </div>{% endfor %}
</aside>
</main>
<footer class="disclaimer">
  <p>Research on multiple sclerosis moves quickly, and a single study is one piece of a larger
  picture. The study summarised here appeared in {{ s.journal }}; studies range from small,
  early explorations to large clinical trials, and each has limits worth weighing.</p>
  <p>These summaries explain research in plain language and are not medical advice. Read the
  original paper (see More Details above) and talk with your MS care team before changing any
  treatment.</p>
</footer>
</body>
</html>
""")

CONTENT_HTML = _templates.from_string("""\
<p>{{ s.headline }}</p>
<h2>What the study found</h2>
<p>{{ s.findings }}</p>
<h2>Why it matters</h2>
<p>{{ s.why_it_matters }}</p>
<h2>Limitations</h2>
<p>{{ s.limitations }}</p>
<h3>More Details</h3>
<dl><dt>Journal</dt><dd>{{ s.journal }}</dd>{% if s.source_url %}<dt>Original paper</dt><dd><a href="{{ s.source_url }}">Read the study</a></dd>{% endif %}</dl>
""")

INDEX = _templates.from_string("""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ site_name }}</title>
<link rel="alternate" type="application/rss+xml" title="RSS" href="/feed.xml">
<link rel="alternate" type="application/atom+xml" title="Atom" href="/atom.xml">
<link rel="alternate" type="application/feed+json" title="JSON Feed" href="/feed.json">
</head>
<body>
<h1>{{ site_name }}</h1>
<ul>{% for s in summaries %}
  <li><a href="/summaries/{{ s.slug }}">{{ s.title }}</a> ({{ us_date(s.date) }})</li>{% endfor %}
</ul>
</body>
</html>
""")


def us_date(day: dt.date) -> str:
    """The site writes dates the American way, without leading zeros: 12/1/2026."""
    return f"{day.month}/{day.day}/{day.year}"


def entry_id(slug: str) -> str:
    return f"tag:ms-research.example.org,2026:summaries/{slug}"


def load_summaries(folder: Path) -> dict[str, dict]:
    """The site's content: each summary file of `folder`, by slug."""
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["slug"] = path.stem
        data["date"] = dt.date.fromisoformat(str(data["date"]))
        data.pop("source", None)
        data.setdefault("teaser", None)
        data.setdefault("source_url", None)
        found[path.stem] = data
    return found


@dataclass
class Answer:
    """How a path answers instead of its normal content (see `ExampleSite.answer`)."""

    status: int = 200
    body: bytes | str | None = None  # None: the normal content
    content_type: str | None = None
    headers: dict = field(default_factory=dict)
    redirect: str | None = None  # answer 302 with this Location
    hang: bool = False  # hold the answer until `ExampleSite.release` is set
    stream: int = 0  # send this many filler bytes, in chunks, without Content-Length
    declare_length: bool = False  # with `stream`: announce the length up front


class ExampleSite:
    """The site as a WSGI app; `url` is set by whoever serves it (see `serve()`)."""

    def __init__(self, summaries_dir: Path = REPO / "summaries", public_url: str = PUBLIC_URL):
        self.summaries = load_summaries(summaries_dir)
        self.public_url = public_url
        self.url = "http://127.0.0.1"
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, dict]] = []  # (path with query, headers)
        self.streamed: dict[str, int] = {}  # bytes actually sent by a `stream` answer
        self.release = threading.Event()
        self.hanging = threading.Event()  # set when an answer starts to wait for `release`
        self.stream_ended = threading.Event()  # set when a `stream` answer stops sending
        self._updated: dict[str, dt.datetime] = {}
        self._many: dict[int, bytes] = {}
        self._lock = threading.Lock()

    # Test controls ------------------------------------------------------------------------------

    def answer(self, path: str, **how) -> None:
        """Make `path` answer otherwise from now on (`Answer`'s fields)."""
        self.answers[path] = Answer(**how)

    def edit(self, slug: str, **fields) -> None:
        """Change a summary on the site (its feed entries show a new update time)."""
        self.summaries[slug].update(fields)
        stamp = self._updated.get(slug, self.updated(slug)) + dt.timedelta(hours=1)
        self._updated[slug] = stamp

    def requested(self, path: str) -> list[dict]:
        """The headers of every request for `path`."""
        with self._lock:
            return [headers for got, headers in self.requests if got == path]

    def link(self, slug: str) -> str:
        return f"{self.url}/summaries/{slug}"

    # Content ------------------------------------------------------------------------------------

    def summary(self, slug: str) -> dict | None:
        if slug in self.summaries:
            return self.summaries[slug]
        if slug.startswith("gen-") and slug[4:].isdigit():
            template = self.summaries[min(self.summaries)]
            return {**template, "slug": slug, "title": f"Generated summary {slug[4:]}"}
        return None

    def updated(self, slug: str) -> dt.datetime:
        day = self.summaries[slug]["date"] if slug in self.summaries else dt.date(2026, 11, 1)
        return self._updated.get(slug) or dt.datetime.combine(day, dt.time(), dt.UTC)

    def page(self, slug: str) -> str:
        s = self.summary(slug)
        others = sorted(
            (o for o in self.summaries.values() if o["slug"] != slug),
            key=lambda o: (o["date"], o["slug"]),
            reverse=True,
        )[:6]
        related = [
            {
                "slug": o["slug"],
                "date": o["date"],
                "blurb": (o.get("teaser") or o["headline"])[:100],
            }
            for o in others
        ]
        return PAGE.render(
            s=s, related=related, site_name=SITE_NAME, public_url=self.public_url, us_date=us_date
        )

    def entries(self, full: bool = False) -> list[dict]:
        """The feed's entries, newest first: what every feed format says about each summary."""
        ordered = sorted(
            self.summaries.values(), key=lambda s: (s["date"], s["slug"]), reverse=True
        )
        return [self._entry(s, full) for s in ordered]

    def _entry(self, s: dict, full: bool) -> dict:
        return {
            "id": entry_id(s["slug"]),
            "link": self.link(s["slug"]),
            "title": s["title"],
            "date": dt.datetime.combine(s["date"], dt.time(), dt.UTC),
            "updated": self.updated(s["slug"]),
            "categories": [CATEGORIES.get(t, t) for t in s["topics"]],
            "summary": " ".join((s.get("teaser") or s["headline"]).split()),
            "content": CONTENT_HTML.render(s=s) if full else None,
        }

    def generated_entries(self, n: int) -> list[dict]:
        day = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        return [
            {
                "id": entry_id(f"gen-{i}"),
                "link": self.link(f"gen-{i}"),
                "title": f"Generated summary {i}",
                "date": day,
                "updated": None,
                "categories": ["Genetics"],
                "summary": None,
                "content": None,
            }
            for i in range(n)
        ]

    def many_rss(self, n: int) -> bytes:
        """The same as `rss(generated_entries(n))`, built as text: lxml takes seconds for 50,000."""
        day = email.utils.format_datetime(dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
        item = (
            "<item><title>Generated summary {i}</title><link>{url}/summaries/gen-{i}</link>"
            '<guid isPermaLink="false">{tag}gen-{i}</guid><pubDate>{day}</pubDate>'
            "<category>Genetics</category></item>\n"
        )
        tag = entry_id("")
        items = "".join(item.format(i=i, url=self.url, tag=tag, day=day) for i in range(n))
        head = self.rss([]).decode("utf-8").split("</channel>")[0]
        return (head + items + "</channel>\n</rss>\n").encode("utf-8")

    def rss(self, entries: list[dict]) -> bytes:
        nsmap = {"atom": ATOM, "content": CONTENT}
        rss = etree.Element("rss", version="2.0", nsmap=nsmap)
        channel = etree.SubElement(rss, "channel")
        _text(channel, "title", SITE_NAME)
        _text(channel, "link", self.url + "/")
        _text(channel, "description", "Plain-language summaries of multiple sclerosis research")
        etree.SubElement(
            channel,
            f"{{{ATOM}}}link",
            href=self.url + "/feed.xml",
            rel="self",
            type="application/rss+xml",
        )
        for e in entries:
            item = etree.SubElement(channel, "item")
            _text(item, "title", e["title"])
            if e.get("link"):
                _text(item, "link", e["link"])
            if e.get("id"):
                _text(item, "guid", e["id"]).set("isPermaLink", "false")
            if e.get("date"):
                _text(item, "pubDate", email.utils.format_datetime(e["date"]))
            if e.get("updated"):
                _text(item, f"{{{ATOM}}}updated", _rfc3339(e["updated"]))
            for category in e.get("categories") or []:
                _text(item, "category", category)
            if e.get("summary"):
                _text(item, "description", e["summary"])
            if e.get("content"):
                etree.SubElement(item, f"{{{CONTENT}}}encoded").text = etree.CDATA(e["content"])
        return etree.tostring(rss, xml_declaration=True, encoding="utf-8", pretty_print=True)

    def atom(self, entries: list[dict]) -> bytes:
        feed = etree.Element(f"{{{ATOM}}}feed", nsmap={None: ATOM})
        _text(feed, f"{{{ATOM}}}title", SITE_NAME)
        _text(feed, f"{{{ATOM}}}id", "tag:ms-research.example.org,2026:summaries")
        newest = max((e["updated"] or e["date"] for e in entries), default=None)
        _text(
            feed, f"{{{ATOM}}}updated", _rfc3339(newest or dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        )
        etree.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=self.url + "/atom.xml")
        etree.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", href=self.url + "/")
        for e in entries:
            entry = etree.SubElement(feed, f"{{{ATOM}}}entry")
            _text(entry, f"{{{ATOM}}}title", e["title"])
            if e.get("id"):
                _text(entry, f"{{{ATOM}}}id", e["id"])
            if e.get("link"):
                etree.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", href=e["link"])
            if e.get("date"):
                _text(entry, f"{{{ATOM}}}published", _rfc3339(e["date"]))
            _text(entry, f"{{{ATOM}}}updated", _rfc3339(e.get("updated") or e["date"]))
            for category in e.get("categories") or []:
                etree.SubElement(entry, f"{{{ATOM}}}category", term=category)
            if e.get("summary"):
                _text(entry, f"{{{ATOM}}}summary", e["summary"])
            if e.get("content"):
                _text(entry, f"{{{ATOM}}}content", e["content"]).set("type", "html")
        return etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True)

    def json_feed(self, entries: list[dict]) -> bytes:
        items = []
        for e in entries:
            item = {"id": e.get("id"), "url": e.get("link"), "title": e["title"]}
            if e.get("date"):
                item["date_published"] = _rfc3339(e["date"])
            if e.get("updated"):
                item["date_modified"] = _rfc3339(e["updated"])
            if e.get("categories"):
                item["tags"] = list(e["categories"])
            if e.get("summary"):
                item["summary"] = e["summary"]
            if e.get("content"):
                item["content_html"] = e["content"]
            items.append({k: v for k, v in item.items() if v is not None})
        feed = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": SITE_NAME,
            "home_page_url": self.url + "/",
            "feed_url": self.url + "/feed.json",
            "items": items,
        }
        return json.dumps(feed, indent=2, ensure_ascii=False).encode("utf-8")

    # Serving ------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        path = request.path
        with self._lock:
            self.requests.append((request.full_path.rstrip("?"), dict(request.headers)))
        answer = self.answers.get(path)
        if answer is not None:
            return self._answer(path, answer, request)(environ, start_response)
        return self._normal(path, request)(environ, start_response)

    def _normal(self, path: str, request: Request) -> Response:
        if path in ("/", "/index.html"):
            html = INDEX.render(
                site_name=SITE_NAME,
                summaries=[self.summaries[e["link"].rsplit("/", 1)[1]] for e in self.entries()],
                us_date=us_date,
            )
            return Response(html, content_type="text/html; charset=utf-8")
        if path.startswith("/summaries/"):
            slug = path.removeprefix("/summaries/")
            if self.summary(slug) is None:
                return Response("Not found", status=404)
            return Response(self.page(slug), content_type="text/html; charset=utf-8")
        body = self.feed_body(path, request)
        if body is None:
            return Response("Not found", status=404)
        return _conditional(request, body, FEED_TYPES[path], self._last_modified())

    def feed_body(self, path: str, request: Request | None = None) -> bytes | None:
        if path == "/feed.xml":
            return self.rss(self.entries())
        if path == "/full.xml":
            return self.rss(self.entries(full=True))
        if path == "/atom.xml":
            return self.atom(self.entries())
        if path == "/feed.json":
            return self.json_feed(self.entries())
        if path == "/many.xml":
            n = min(int(request.args.get("n", "1000")) if request else 1000, 1_000_000)
            if n not in self._many:
                self._many[n] = self.many_rss(n)
            return self._many[n]
        return None

    def _last_modified(self) -> dt.datetime:
        return max(self.updated(slug) for slug in self.summaries)

    def _answer(self, path: str, answer: Answer, request: Request) -> Response:
        if answer.hang:
            self.hanging.set()
            self.release.wait(timeout=60)
        if answer.redirect:
            return Response("", status=302, headers={"Location": answer.redirect})
        if answer.stream:
            return self._stream(path, answer)
        body = answer.body
        if body is None:
            body = self.feed_body(path, request) or self.page(path.rsplit("/", 1)[-1])
        ctype = answer.content_type or FEED_TYPES.get(path, "text/html; charset=utf-8")
        response = Response(body, status=answer.status, content_type=ctype)
        response.headers.update(answer.headers)
        return response

    def _stream(self, path: str, answer: Answer) -> Response:
        chunk = b"<p>" + b"filler " * 9360 + b"</p>\n"  # about 64 KB

        def generate():
            sent = 0
            try:
                while sent < answer.stream:
                    piece = chunk[: answer.stream - sent]
                    yield piece
                    sent += len(piece)
            finally:
                self.streamed[path] = sent
                self.stream_ended.set()

        headers = {"Content-Length": str(answer.stream)} if answer.declare_length else {}
        return Response(
            generate(),
            content_type="text/html; charset=utf-8",
            headers=headers,
            direct_passthrough=True,
        )


def _text(parent, tag: str, text: str):
    el = etree.SubElement(parent, tag)
    el.text = text
    return el


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _conditional(request: Request, body: bytes, ctype: str, modified: dt.datetime) -> Response:
    """A feed answer that honours If-None-Match / If-Modified-Since with 304."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    last_modified = email.utils.format_datetime(modified, usegmt=True)
    headers = {"ETag": etag, "Last-Modified": last_modified}
    if_none_match = request.headers.get("If-None-Match")
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_none_match is not None:
        fresh = etag in [t.strip() for t in if_none_match.split(",")]
    elif if_modified_since is not None:
        try:
            fresh = email.utils.parsedate_to_datetime(if_modified_since) >= modified
        except (TypeError, ValueError):
            fresh = False
    else:
        fresh = False
    if fresh:
        return Response(status=304, headers=headers)
    return Response(body, content_type=ctype, headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8808, help="port on 127.0.0.1 (default 8808)")
    parser.add_argument(
        "--summaries",
        type=Path,
        default=REPO / "summaries",
        help="the summaries the site publishes (default: the repository's summaries/)",
    )
    args = parser.parse_args(argv)
    site = ExampleSite(args.summaries)
    server = make_server("127.0.0.1", args.port, site, threaded=True)
    site.url = f"http://127.0.0.1:{server.server_port}"
    print(f"Example summaries site at {site.url}/  ({len(site.summaries)} summaries)")
    print(f"  feeds: {site.url}/feed.xml  {site.url}/atom.xml  {site.url}/feed.json")
    print("  Ctrl+C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
