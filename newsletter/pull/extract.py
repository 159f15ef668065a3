"""A summary page (or a feed entry's HTML content) → the summary's fields, as plain text.

The page is parsed with lxml's HTML parser; scripts, styles, images and embedded objects are
dropped before any text is read, links keep their text and lose their URL, and the only URLs kept
(the original paper, the canonical address) must be http(s) after resolving them against the page.
Sections are found by their headings, whose labels come from the settings (`source.labels`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from itertools import islice
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from ..config import PageLabels

SECTIONS = ("findings", "why_it_matters", "limitations")
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Elements that may carry a label on a page: headings, and the usual inline or cell holders.
LABEL_TAGS = HEADINGS | {
    "dt",
    "th",
    "td",
    "strong",
    "b",
    "summary",
    "button",
    "p",
    "div",
    "span",
    "label",
    "legend",
    "caption",
}
BLOCK = HEADINGS | {
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
}
# Never text: code, styling, media and anything embedded.
DROPPED = (
    "script",
    "style",
    "noscript",
    "template",
    "img",
    "picture",
    "svg",
    "math",
    "iframe",
    "object",
    "embed",
    "video",
    "audio",
    "canvas",
    "map",
)
# Site furniture around the summary: menus, related summaries, the footer.
FURNITURE = ("nav", "aside", "footer")

_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_SLASH_DATE = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})")


def one_line(text: str) -> str:
    """Whitespace collapsed to single spaces; control and invisible formatting characters gone."""
    return " ".join(_CONTROL.sub("", text or "").split())


def plain_text(el) -> str:
    """The visible text of an element, one line, with a space wherever a block starts or ends."""
    out: list[str] = []
    _collect(el, out)
    return one_line("".join(out))


def _collect(el, out: list[str]) -> None:
    if not isinstance(el.tag, str):  # a comment or processing instruction
        return
    block = el.tag in BLOCK
    if block:
        out.append(" ")
    out.append(el.text or "")
    for child in el:
        _collect(child, out)
        out.append(child.tail or "")
    if block:
        out.append(" ")


def _clean(root) -> None:
    for el in list(root.iter(DROPPED)):
        el.drop_tree()
    for el in list(root.iter(etree.Comment, etree.ProcessingInstruction)):
        el.drop_tree()


def fragment_text(html: str) -> str:
    """Plain text of an HTML fragment (a feed's title or summary); plain text stays as it is."""
    if not html or "<" not in html and "&" not in html:
        return one_line(html)
    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return one_line(html)
    _clean(root)
    return plain_text(root)


@dataclass
class Extracted:
    """What a page (or an entry's content) says; None where it says nothing."""

    title: str | None = None
    headline: str | None = None
    date: dt.date | None = None
    journal: str | None = None
    findings: str | None = None
    why_it_matters: str | None = None
    limitations: str | None = None
    teaser: str | None = None
    source_url: str | None = None
    canonical_url: str | None = None
    notes: list[str] = field(default_factory=list)  # things refused on the way

    def missing(self, labels: PageLabels) -> list[str]:
        """Why this cannot become a summary (empty when it can, given a title and a date)."""
        problems = [
            f"no '{getattr(labels, name)}' section" for name in SECTIONS if not getattr(self, name)
        ]
        if not self.headline:
            problems.append("no headline (the paragraph after the title)")
        if not self.journal:
            problems.append(f"no journal (no '{labels.journal}' in the page's details)")
        return problems


def _norm(text: str) -> str:
    return one_line(text).rstrip(":").strip().casefold()


def _small(el, limit: int = 8) -> bool:
    return next(islice(el.iterdescendants(), limit, None), None) is None


def _find_label(root, label: str):
    """The element whose whole text is `label` (ignoring case and a trailing colon): a heading
    if there is one, else the first other element (a `<dt>`, `<strong>`, `<th>`...)."""
    want = _norm(label)
    other = None
    for el in root.iter(*LABEL_TAGS):
        if _small(el) and _norm(plain_text(el)) == want:
            if el.tag in HEADINGS:
                return el
            if other is None:
                other = el
    return other


def _is_boundary(el, marks: set) -> bool:
    if not isinstance(el.tag, str):
        return False
    if el.tag in HEADINGS or el.tag == "hr" or el in marks:
        return True
    return any(
        d in marks or d.tag in HEADINGS for d in el.iterdescendants() if isinstance(d.tag, str)
    )


def _section_text(heading, root, marks: set) -> str:
    """The text after a section's heading, up to the next heading (or the end of its block)."""
    node = heading
    # A heading alone in its own wrapper (<div class="tab"><h2>..</h2></div><div>..</div>):
    # the text follows the wrapper.
    while (
        node.getnext() is None
        and not (node.tail or "").strip()
        and node.getparent() is not None
        and node.getparent() is not root
    ):
        node = node.getparent()
    parts = [node.tail or ""]
    for sibling in node.itersiblings():
        if _is_boundary(sibling, marks):
            break
        if isinstance(sibling.tag, str):
            parts.append(" " + plain_text(sibling) + " ")
        parts.append(sibling.tail or "")
    return one_line("".join(parts))


def _label_value(el) -> tuple[str | None, object | None]:
    """The value next to a label: `<dt>Journal</dt><dd>Brain</dd>`, `<th>..</th><td>..</td>`,
    or `<strong>Journal:</strong> Brain`. Returns its text and the element holding it."""
    following = el.getnext()
    tail = one_line(el.tail or "").lstrip(":–—- ").strip()
    if tail:
        return tail, None
    if following is not None and isinstance(following.tag, str):
        return plain_text(following) or None, following
    return None, None


def _parse_date(text: str | None) -> dt.date | None:
    text = one_line(text or "")
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        pass
    for pattern, order in ((_US_DATE, (3, 1, 2)), (_SLASH_DATE, (1, 2, 3))):
        match = pattern.match(text)
        if match:
            year, month, day = (int(match.group(i)) for i in order)
            try:
                return dt.date(year, month, day)
            except ValueError:
                return None
    return None


def _meta(doc, *names: str) -> str | None:
    wanted = {n.lower() for n in names}
    for meta in doc.iter("meta"):
        key = (meta.get("name") or meta.get("property") or "").lower()
        if key in wanted and (meta.get("content") or "").strip():
            return one_line(meta.get("content"))
    return None


def _http_url(href: str | None, base: str, what: str, notes: list[str]) -> str | None:
    if not href or not href.strip():
        return None
    url = urljoin(base, href.strip())
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        notes.append(f"{what} refused: {href.strip()[:60]!r} is not an http(s) URL")
        return None
    return url


def _content_root(doc):
    """Where the summary is: the one <article>, else <main>, else <body>; without site furniture."""
    articles = list(doc.iter("article"))
    mains = list(doc.iter("main"))
    root = articles[0] if len(articles) == 1 else mains[0] if mains else doc.find("body")
    root = doc if root is None else root
    for el in list(root.iter(FURNITURE)):
        if el is not root:
            el.drop_tree()
    return root


def _headline(root, title_el, section_els) -> str | None:
    """The first paragraph after the title and before the first section."""
    order = {el: n for n, el in enumerate(root.iter())}
    start = order.get(title_el, -1)
    end = min((order[h] for h in section_els if h in order), default=len(order))
    for p in root.iter("p"):
        if start < order[p] < end:
            if any(True for _ in p.iter("time")) and _parse_date(plain_text(p)):
                continue  # a date line, not the headline
            text = plain_text(p)
            if text:
                return text
    return None


def extract_page(html: str, page_url: str, labels: PageLabels) -> Extracted:
    """Every field a summary page gives."""
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True)
    try:
        doc = lxml.html.document_fromstring(html.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError):
        return Extracted(notes=["the page is empty"])
    _clean(doc)
    found = Extracted()
    canonical = None
    for link in doc.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split():
            canonical = link.get("href")
            break
    found.canonical_url = _http_url(canonical, page_url, "canonical link", found.notes)
    found.teaser = _meta(doc, "description") or None
    root = _content_root(doc)
    title_el = next(root.iter("h1"), None)
    if title_el is not None:
        found.title = plain_text(title_el) or None
    found.title = found.title or _meta(doc, "og:title", "citation_title")
    if not found.title:
        title = doc.find(".//title")
        found.title = plain_text(title) if title is not None else None
    _read_body(found, root, page_url, labels, title_el)
    found.journal = found.journal or _meta(doc, "citation_journal_title")
    if not found.source_url:
        doi = _meta(doc, "citation_doi")
        if doi:
            found.source_url = "https://doi.org/" + doi.removeprefix("doi:").strip()
    found.date = found.date or _parse_date(
        _meta(doc, "article:published_time", "citation_publication_date", "citation_date")
    )
    return found


def extract_fragment(html: str, base_url: str, labels: PageLabels) -> Extracted:
    """Every field an entry's HTML content gives (no title: the entry has one)."""
    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return Extracted()
    _clean(root)
    found = Extracted()
    _read_body(found, root, base_url, labels, None)
    return found


def _read_body(found: Extracted, root, base_url: str, labels: PageLabels, title_el) -> None:
    headings = {name: _find_label(root, getattr(labels, name)) for name in SECTIONS}
    journal_el = _find_label(root, labels.journal)
    paper_el = _find_label(root, labels.paper)
    marks = {el for el in (*headings.values(), journal_el, paper_el) if el is not None}
    for name, heading in headings.items():
        if heading is not None:
            setattr(found, name, _section_text(heading, root, marks) or None)
    found.headline = _headline(root, title_el, [h for h in headings.values() if h is not None])
    if journal_el is not None:
        found.journal = _label_value(journal_el)[0]
    if paper_el is not None:
        _, holder = _label_value(paper_el)
        anchors = [paper_el] if paper_el.tag == "a" else []
        if holder is not None:
            anchors += [holder] if holder.tag == "a" else list(holder.iter("a"))
        href = next((a.get("href") for a in anchors if a.get("href")), None)
        found.source_url = _http_url(href, base_url, "original paper link", found.notes)
    for time_el in root.iter("time"):
        found.date = _parse_date(time_el.get("datetime")) or _parse_date(plain_text(time_el))
        if found.date:
            break
