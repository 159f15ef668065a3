"""From one feed entry to a summary: its topics, then its sections from the entry's own content
or from its page, validated as a summary file would be. Problems go to the caller's `fail`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from ..config import Settings, format_validation_error
from ..content import PullSource, Summary
from .extract import Extracted, extract_fragment, extract_page, one_line
from .feeds import FeedEntry
from .fetch import Fetcher, FetchError, decode_page
from .files import content_hash

PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
HTML_TYPES = ("text/html", "application/xhtml+xml", "")  # "": no Content-Type; try it as HTML
TEASER_MAX = 200


@dataclass
class EntryReader:
    settings: Settings
    fetcher: Fetcher
    default_topic: str | None
    now: Callable[[], dt.datetime]
    fail: Callable[..., None]  # fail(url, reason, summary_id=None): report a problem

    @property
    def labels(self):
        return self.settings.source.labels

    def topics_of(self, entry: FeedEntry) -> tuple[list[str] | None, list[str]]:
        """The entry's topic slugs, and its categories that map to none."""
        mapping = {one_line(k).casefold(): v for k, v in self.settings.source.topics.items()}
        topics, unknown = [], []
        for category in entry.categories:
            slug = mapping.get(one_line(category).casefold())
            if slug is None:
                unknown.append(category)
            elif slug not in topics:
                topics.append(slug)
        if topics:
            return topics, unknown
        if self.default_topic:
            return [self.default_topic], unknown
        if unknown:
            listed = ", ".join(repr(c) for c in unknown)
            why = f"no topic: its categories {listed} are not in source.topics"
        else:
            why = "no topic: the entry has no categories"
        self.fail(entry.link, f"{why} (map them in the settings, or give --default-topic)")
        return None, unknown

    def obtain(self, entry: FeedEntry, summary_id: str) -> tuple[Summary | None, list[str]]:
        """The summary an entry gives: from its content when that carries every part, else from
        its page, with notes on what was refused on the way. None (and the reason reported)
        when it cannot be had."""
        topics, unknown = self.topics_of(entry)
        if topics is None:
            return None, []
        found: Extracted | None = None
        if entry.content_html:
            from_content = extract_fragment(entry.content_html, entry.link, self.labels)
            if not from_content.missing(self.labels) and (from_content.date or entry.published):
                found = from_content
        if found is None:
            try:
                fetched = self.fetcher.get(entry.link, accept=PAGE_ACCEPT)
                if fetched.content_type not in HTML_TYPES:
                    raise FetchError(entry.link, f"not an HTML page ({fetched.content_type})")
                html = decode_page(fetched)
            except FetchError as exc:
                self.fail(entry.link, exc.reason, summary_id)
                return None, []
            found = extract_page(html, fetched.final_url, self.labels)
            missing = found.missing(self.labels)
            if missing:
                self.fail(entry.link, "; ".join(missing), summary_id)
                return None, []
        # A feed's summary is a teaser when it is short; a long one is the text itself.
        teaser = found.teaser or (
            entry.summary if entry.summary and len(entry.summary) <= TEASER_MAX else None
        )
        fields = {
            "title": found.title or entry.title,
            "headline": found.headline,
            "date": found.date or entry.published,
            "journal": found.journal,
            "topics": topics,
            "url": found.canonical_url or entry.link,
            "findings": found.findings,
            "why_it_matters": found.why_it_matters,
            "limitations": found.limitations,
            "teaser": teaser if teaser != found.headline else None,
            "source_url": found.source_url,
        }
        absent = [name for name in ("title", "date") if not fields[name]]
        if absent:
            self.fail(entry.link, f"no {' and no '.join(absent)} on the page or in the feed")
            return None, []
        fetched_at = self.now().astimezone(dt.UTC).replace(microsecond=0)
        try:
            bare = Summary(id=summary_id, **fields)
            summary = bare.model_copy(
                update={
                    "source": PullSource(
                        entry_id=entry.entry_id,
                        page_url=entry.link,
                        fetched_at=fetched_at,
                        content_hash=content_hash(bare),
                    )
                }
            )
        except ValidationError as exc:
            problems = format_validation_error("summary", exc)
            self.fail(entry.link, "; ".join(p.removeprefix("summary: ") for p in problems))
            return None, []
        notes = list(found.notes)
        if unknown:
            notes.append(f"categories not in source.topics: {', '.join(map(repr, unknown))}")
        return summary, notes
