"""Pre-send checks of an issue: content valid, size, disclaimer, links, nothing left unrendered.

`check_issue` returns every problem (one line each) rather than stopping at the first, so an editor
fixes them all in one go. `newsletter send` runs it and refuses to send on any problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from pydantic import AnyUrl, BaseModel

from .archive.urls import issue_path
from .config import Settings, display_path
from .content import (
    Issue,
    Summary,
    load_issue,
    read_summaries,
    resolve_summaries,
    unknown_summaries,
)
from .errors import ContentError, TemplateError
from .render import TEMPLATE_HTML, TEMPLATE_TEXT, RenderedEmail, Renderer

LEFTOVER_MARKERS = ("{{", "{%", "<mj-")
# Content is plain text and may hold "{{" or "<mj-" (a summary about template engines): only what
# the templates themselves leave behind is a problem. Rendering with this applied to every text
# of the content tells the two apart, since the markers cannot survive it.
_NO_MARKERS = str.maketrans({"{": "(", "}": ")", "<": "(", ">": ")"})


@dataclass
class CheckReport:
    issue_id: str
    problems: list[str] = field(default_factory=list)
    html_bytes: int | None = None
    text_bytes: int | None = None
    summaries: int = 0
    # The issue and its summaries (in issue order) as checked, so that a send uses what was
    # checked without reading the files again; None when they could not be loaded.
    loaded: tuple[Issue, list[Summary]] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


class _LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.hrefs.append(value)


def check_rendered(email: RenderedEmail, settings: Settings, label: str) -> list[str]:
    """Problems in one rendered email (both parts)."""
    problems = []
    parts = {"HTML": email.html, "text": email.text}
    for part, body in parts.items():
        placeholders = email.placeholders.html if part == "HTML" else email.placeholders.text
        for name, what in (("unsubscribe_url", "unsubscribe"), ("preferences_url", "preferences")):
            if placeholders[name] not in body:
                problems.append(
                    f"{label}: {part} part has no {what} link ({{{{ recipient.{name} }}}})"
                )
        flat = " ".join(body.split())
        if part == "HTML":
            flat = " ".join(_html_text(body).split())
        for paragraph in email.disclaimer.split("\n\n"):
            if " ".join(paragraph.split()) not in flat:
                problems.append(f"{label}: {part} part is missing the research disclaimer")
                break
        if settings.postal_address not in flat:
            problems.append(f"{label}: {part} part is missing the postal address")

    collector = _LinkCollector()
    collector.feed(email.html)
    for href in collector.hrefs:
        if href in email.placeholders.html.values():
            continue
        if not re.match(r"^(https?://|mailto:)", href):
            problems.append(f"{label}: HTML link is not absolute: {href!r}")
    if "link" in collector.tags or "@import" in email.html:
        problems.append(f"{label}: HTML fetches a stylesheet from elsewhere (<link> or @import)")
    size_kb = len(email.html.encode("utf-8")) / 1024
    if size_kb > settings.max_html_kb:
        problems.append(
            f"{label}: HTML is {size_kb:.0f} KB, over the limit of {settings.max_html_kb} KB "
            "(Gmail clips messages over about 102 KB)"
        )
    return problems


VIEW_IN_BROWSER = "View in your browser"


def check_view_in_browser(
    email: RenderedEmail, issue: Issue, settings: Settings, label: str
) -> list[str]:
    """The "View in your browser" link must lead to a page the archive build will write: the
    issue's own page, only when the issue is archived and the archive has an address."""
    collector = _LinkCollector()
    collector.feed(email.html)
    parts = {"HTML": (collector.hrefs, _html_text(email.html)), "text": ([], email.text)}
    page = f"{settings.archive_base}/{issue_path(issue.id)}" if settings.archive_base else None
    problems = []
    for part, (hrefs, text) in parts.items():
        links_page = page is not None and (page in hrefs or page in text)
        if issue.archive and page is not None and not links_page:
            problems.append(f"{label}: {part} part has no {VIEW_IN_BROWSER!r} link to {page}")
        elif not issue.archive and (links_page or VIEW_IN_BROWSER in text):
            problems.append(
                f"{label}: {part} part links to the issue's archive page, but the issue has "
                "'archive: false', so that page will not exist"
            )
    return problems


def leftover_markers(email: RenderedEmail) -> list[tuple[str, str]]:
    """(part, marker) for each template marker found in the rendered parts."""
    parts = {"HTML": email.html, "text": email.text}
    return [(part, m) for part, body in parts.items() for m in LEFTOVER_MARKERS if m in body]


def _without_markers(value):
    """A copy of a model (summary, issue, settings) whose texts and URLs cannot hold a marker."""
    if isinstance(value, BaseModel):
        update = {name: _without_markers(item) for name, item in value}
        return value.model_copy(update=update)
    if isinstance(value, str):
        return value.translate(_NO_MARKERS)
    if isinstance(value, AnyUrl):
        return type(value)(str(value).translate(_NO_MARKERS))
    if isinstance(value, list):
        return [_without_markers(item) for item in value]
    return value


def unrendered_template_text(
    settings: Settings, issue: Issue, selection: list, label: str
) -> list[str]:
    """Template text the templates leave in the email, whatever the content says, naming the
    template that leaves it."""
    try:
        email = Renderer(_without_markers(settings)).render(
            _without_markers(issue), [_without_markers(s) for s in selection]
        )
    except TemplateError as err:
        return [str(err)]
    templates = {"HTML": TEMPLATE_HTML, "text": TEMPLATE_TEXT}
    return [
        f"{display_path(settings.paths.templates / templates[part])}: {label}: {part} part "
        f"has unrendered template text {marker!r}"
        for part, marker in leftover_markers(email)
    ]


def _html_text(html: str) -> str:
    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.chunks: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag, attrs):
            if tag in ("style", "script", "title"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("style", "script", "title"):
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.chunks.append(data)

    parser = Text()
    parser.feed(html)
    return " ".join(parser.chunks)


def check_issue(
    settings: Settings, issue_ref: str, renderer: Renderer | None = None
) -> CheckReport:
    """Run every pre-send check on the issue; problems are collected, never raised."""
    report = CheckReport(issue_id=str(issue_ref))
    try:
        issue: Issue = load_issue(settings, issue_ref)
    except ContentError as err:
        report.problems.extend(err.problems)
        return report
    report.issue_id = issue.id
    summaries, problems = read_summaries(settings)
    report.problems.extend(problems)
    # A summary whose file exists but is invalid is reported above, not as "no summary named".
    on_disk = {path.stem for path in settings.paths.summaries.glob("*.yaml")}
    missing = unknown_summaries(issue, on_disk | set(summaries))
    report.problems.extend(missing)
    if missing or any(sid not in summaries for sid in issue.summaries):
        return report
    chosen = resolve_summaries(issue, summaries)
    report.summaries = len(chosen)
    report.loaded = (issue, chosen)
    if issue.archive and settings.archive_base is None:
        report.problems.append(
            f"{issue.id}: archive_url is not set in the settings, so the email's "
            f"{VIEW_IN_BROWSER!r} link has no page to lead to (set archive_url, or "
            "'archive: false' in the issue file to send it without an archive page)"
        )
    renderer = renderer or Renderer(settings)
    # The largest selection (all topics) and the smallest (only the first summary: no cards).
    selections = {"all topics": chosen, "a single summary": chosen[:1]}
    for label, selection in selections.items():
        try:
            email = renderer.render(issue, selection)
        except TemplateError as err:
            report.problems.append(str(err))
            return report
        if label == "all topics":
            report.html_bytes = len(email.html.encode("utf-8"))
            report.text_bytes = len(email.text.encode("utf-8"))
        where = f"{issue.id} ({label})"
        report.problems.extend(check_rendered(email, settings, where))
        report.problems.extend(check_view_in_browser(email, issue, settings, where))
        if leftover_markers(email):
            # Rare: worth a second render to tell the content's text from the templates'.
            report.problems.extend(unrendered_template_text(settings, issue, selection, where))
    return report
