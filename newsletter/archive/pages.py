"""The archive's HTML pages: the index of issues, one page per issue, one per topic, the list of
topics and the search page, rendered with the templates under `templates/archive/`.

Links between pages are relative (`../topics/genetics/`), so the same files work at any address:
on a static host, under `newsletter serve`'s `/archive/`, or from a test server. Canonical URLs,
OpenGraph tags, the feed and the sitemap use the absolute `archive_url`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings, Topic
from ..content import journals_phrase
from ..render import Renderer
from ..templating import render_template
from . import urls
from .collect import ArchiveContent, ArchivedIssue

TEMPLATES = "archive"
# Files copied as they are (not templates): the stylesheet and the search page's script.
ASSETS = ("style.css", "search.js")
SEARCH_PATH = "search/"
TOPICS_PATH = "topics/"


@dataclass(frozen=True)
class Page:
    path: str  # the page's URL path below the archive's root: "", "2026-12/", "topics/x/"
    html: str

    @property
    def file(self) -> str:
        return f"{self.path}index.html"


def root_for(path: str) -> str:
    """The relative way back to the archive's root from a page at `path`."""
    depth = path.count("/")
    return "../" * depth if depth else "./"


class PageBuilder:
    """Renders every page of the archive; uses the email renderer's Jinja environment (the
    project's one environment) and its research disclaimer, word for word."""

    def __init__(self, settings: Settings, content: ArchiveContent):
        self.settings = settings
        self.content = content
        self.renderer = Renderer(settings)
        self.env = self.renderer.env
        self.topics: dict[str, Topic] = {t.slug: t for t in settings.topics}

    def _page(self, path: str, template: str, *, title: str, description: str, **context) -> Page:
        s = self.settings
        html = render_template(
            self.env,
            f"{TEMPLATES}/{template}",
            site_name=s.name,
            postal_address=s.postal_address,
            root=root_for(path),
            canonical=urls.absolute(s, path),
            title=title,
            description=description,
            subscribe_url=f"{s.preferences_base}/subscribe" if s.signup.enabled else None,
            topics=self.topics,
            **context,
        )
        return Page(path, html)

    def index(self) -> Page:
        issues = self.content.issues
        return self._page(
            "",
            "index.html.j2",
            title=f"{self.settings.name}: past issues",
            description=(
                f"Every issue of {self.settings.name} sent so far, newest first: "
                f"{len(issues)} issues, {len(self.content.entries())} research summaries."
            ),
            og_type="website",
            issues=issues,
        )

    def issue(self, archived: ArchivedIssue) -> Page:
        summaries = list(archived.summaries)
        disclaimer = self.renderer.disclaimer(archived.issue, summaries)
        return self._page(
            archived.path,
            "issue.html.j2",
            title=archived.issue.subject,
            description=archived.issue.preheader,
            og_type="article",
            archived=archived,
            issue=archived.issue,
            featured=summaries[0],
            cards=summaries[1:],
            journals=journals_phrase(s.journal for s in summaries),
            disclaimer_paragraphs=disclaimer.split("\n\n"),
        )

    def topic(self, topic: Topic) -> Page:
        entries = self.content.by_topic(topic.slug)
        return self._page(
            urls.topic_path(topic.slug),
            "topic.html.j2",
            title=f"{topic.label}: every summary sent",
            description=topic.description,
            og_type="website",
            topic=topic,
            entries=entries,
        )

    def topic_list(self) -> Page:
        counts = {slug: len(self.content.by_topic(slug)) for slug in self.topics}
        return self._page(
            TOPICS_PATH,
            "topics.html.j2",
            title="Topics",
            description=f"Every summary {self.settings.name} has sent, by topic.",
            og_type="website",
            counts=counts,
        )

    def search(self) -> Page:
        return self._page(
            SEARCH_PATH,
            "search.html.j2",
            title="Search the archive",
            description=f"Search every research summary {self.settings.name} has sent.",
            og_type="website",
            entries=self.content.entries(),
        )

    def all_pages(self) -> list[Page]:
        pages = [self.index(), self.topic_list(), self.search()]
        pages += [self.issue(archived) for archived in self.content.issues]
        pages += [self.topic(topic) for topic in self.settings.topics]
        return sorted(pages, key=lambda page: page.path)
