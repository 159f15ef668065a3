"""One pull: read the feed, decide for each entry what to do, fetch and write what is new.

Nothing an editor wrote is ever lost: an entry is pulled once (its entry id is remembered); a
summary that changed on the site is only reported until the editor asks for it (`update`); a
local file whose content no longer matches the hash it was pulled with is never overwritten
without `force`; a file that was not pulled is never overwritten at all by a new entry. Every
problem is reported with its URL and reason, and the other entries are still pulled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import Settings, display_path
from ..content import ID_RE, Summary, load_summary
from ..errors import PullError
from .entry import EntryReader
from .feeds import ACCEPT, FeedEntry, FeedError, parse_feed
from .fetch import Fetcher, FetchError, user_agent
from .files import (
    FeedValidators,
    PulledEntry,
    PullState,
    content_hash,
    pull_lock,
    write_summary,
)

DEFAULT_MAX = 50


@dataclass
class PullItem:
    """One line of the report: what happened to one entry (or to the feed), and why."""

    action: str  # new | updated | recorded | changed | unchanged | skipped | failed
    url: str
    summary_id: str | None = None
    reason: str = ""


@dataclass
class PullReport:
    feed_url: str
    dry_run: bool
    feed_format: str | None = None
    not_modified: bool = False  # the feed answered 304: nothing changed since the last pull
    unchanged: int = 0  # entries pulled before and unchanged
    left_over: int = 0  # entries beyond --max, for the next pull
    items: list[PullItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[PullItem]:
        return [i for i in self.items if i.action == "failed"]

    def of(self, action: str) -> list[PullItem]:
        return [i for i in self.items if i.action == action]


def slug_of(url: str) -> str:
    """The summary id a page URL gives: the last part of its path (`.../summaries/x` → `x`)."""
    segment = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    segment = re.sub(r"\.(html?|php|aspx?)$", "", segment, flags=re.IGNORECASE).lower()
    if not ID_RE.match(segment):
        raise ValueError(
            f"cannot make a summary id from the URL: the last part of its path ({segment!r}) "
            "must be letters, digits, '.', '_' or '-'"
        )
    return segment


def pull_summaries(
    settings: Settings,
    feed_url: str | None = None,
    *,
    dry_run: bool = False,
    max_items: int | None = None,
    default_topic: str | None = None,
    update: Iterable[str] = (),
    force: bool = False,
    now: Callable[[], dt.datetime] | None = None,
) -> PullReport:
    """Pull new summaries from the feed into `summaries/` (or, with `update`, the named ones).

    Raises PullError when the pull cannot run at all; everything else is in the report.
    """
    url = feed_url or (str(settings.source.feed_url) if settings.source.feed_url else None)
    if not url:
        raise PullError(
            "no feed to pull from: give FEED_URL or set source.feed_url in the settings"
        )
    if default_topic is not None and default_topic not in settings.topic_slugs:
        raise PullError(
            f"--default-topic: unknown topic {default_topic!r} "
            f"(known topics: {', '.join(settings.topic_slugs)})"
        )
    report = PullReport(feed_url=url, dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(pull_lock(settings.paths.summaries))
        state = PullState.load(settings.paths.pull_state)
        fetcher = stack.enter_context(Fetcher(settings.source, user_agent(settings.site)))
        job = _Pull(
            settings=settings,
            state=state,
            report=report,
            fetcher=fetcher,
            max_items=max_items or DEFAULT_MAX,
            default_topic=default_topic,
            update=list(dict.fromkeys(update)),
            force=force,
            now=now or (lambda: dt.datetime.now(dt.UTC)),
        )
        job.run()
    return report


@dataclass
class _Pull:
    settings: Settings
    state: PullState
    report: PullReport
    fetcher: Fetcher
    max_items: int
    default_topic: str | None
    update: list[str]
    force: bool
    now: Callable[[], dt.datetime]
    complete: bool = True  # every entry of the feed was looked at

    @property
    def folder(self) -> Path:
        return self.settings.paths.summaries

    @property
    def labels(self):
        return self.settings.source.labels

    def fail(self, url: str, reason: str, summary_id: str | None = None) -> None:
        self.report.items.append(PullItem("failed", url, summary_id, reason))

    def say(self, action: str, url: str, summary_id: str | None, reason: str = "") -> None:
        self.report.items.append(PullItem(action, url, summary_id, reason))

    def save_state(self) -> None:
        if not self.report.dry_run:
            self.state.save(self.settings.paths.pull_state)

    # The run ------------------------------------------------------------------------------------

    def run(self) -> None:
        url = self.report.feed_url
        known = self.state.feeds.get(url)
        conditional = known is not None and not self.update
        try:
            fetched = self.fetcher.get(
                url,
                accept=ACCEPT,
                etag=known.etag if conditional else None,
                last_modified=known.last_modified if conditional else None,
            )
        except FetchError as exc:
            self.fail(url, exc.reason)
            return
        if fetched.not_modified:
            self.report.not_modified = True
            return
        try:
            feed = parse_feed(fetched, self.settings.source.max_feed_entries)
        except FeedError as exc:
            self.fail(url, exc.reason)
            return
        self.report.feed_format = feed.format
        read = len(feed.entries) + len(feed.problems)
        if feed.total > read:
            self.complete = False
            self.report.notes.append(
                f"the feed lists {feed.total:,} entries; only the first {read:,} were read "
                "(source.max_feed_entries)"
            )
        for where, reason in feed.problems:
            self.fail(f"{url} {where}", reason)
        if self.state.first_pull is None:
            self.state.first_pull = self.now().date()
            self.save_state()
        if self.update:
            self.run_updates(feed.entries)
            return
        self.run_pull(feed.entries)
        # Keep the feed's validators only when everything in it was dealt with: after a failure,
        # with entries left for later or a change not yet taken, the next pull must read the
        # whole feed again (and so report the change again) rather than stop at a 304.
        settled = self.complete and not self.report.failed and not self.report.of("changed")
        if settled and not self.report.dry_run:
            self.state.feeds[url] = FeedValidators(
                etag=fetched.headers.get("etag"),
                last_modified=fetched.headers.get("last-modified"),
            )
        else:
            self.state.feeds.pop(url, None)
        self.save_state()

    def run_pull(self, entries: list[FeedEntry]) -> None:
        since = self.settings.source.since or self.state.first_pull
        owners = self.state.summaries()
        slugs: dict[str, str] = {}
        by_slug: dict[str, list[FeedEntry]] = defaultdict(list)
        seen: set[str] = set()
        unique = []
        for entry in entries:
            if entry.entry_id in seen:
                self.fail(entry.link, f"entry {entry.entry_id} is listed twice in the feed")
                continue
            seen.add(entry.entry_id)
            unique.append(entry)
            try:
                slugs[entry.entry_id] = slug_of(entry.link)
            except ValueError as exc:
                if entry.entry_id not in self.state.entries:
                    self.fail(entry.link, str(exc))
                continue
            by_slug[slugs[entry.entry_id]].append(entry)

        new: list[tuple[FeedEntry, str]] = []
        changed: list[tuple[FeedEntry, PulledEntry]] = []
        for entry in unique:
            pulled = self.state.entries.get(entry.entry_id)
            if pulled is not None:
                if pulled.fingerprint == entry.fingerprint:
                    self.report.unchanged += 1
                else:
                    changed.append((entry, pulled))
                continue
            slug = slugs.get(entry.entry_id)
            if slug is None:
                continue
            owner = owners.get(slug)
            twins = [e for e in by_slug[slug] if e.entry_id != entry.entry_id]
            if owner is not None and owner != entry.entry_id:
                self.fail(
                    entry.link,
                    f"duplicate id {slug!r}: already pulled from entry {owner}",
                    slug,
                )
                continue
            if twins:
                self.fail(
                    entry.link,
                    f"duplicate id {slug!r}: {twins[0].link} (entry {twins[0].entry_id}) "
                    "ends in the same name; neither is pulled",
                    slug,
                )
                continue
            if since and entry.published and entry.published < since:
                self.say(
                    "skipped",
                    entry.link,
                    slug,
                    f"dated {entry.published}, before {since} (source.since)",
                )
                continue
            new.append((entry, slug))

        # Undated entries first (their page tells), then newest first.
        new.sort(key=lambda pair: pair[0].published or dt.date.max, reverse=True)
        budget = self.max_items
        for entry, slug in new:
            if budget <= 0:
                self.report.left_over += 1
                continue
            budget -= 1
            self.pull_new(entry, slug, since)
        for entry, pulled in changed:
            if budget <= 0:
                self.report.left_over += 1
                continue
            budget -= 1
            self.check_changed(entry, pulled)
        if self.report.left_over:
            self.complete = False

    def run_updates(self, entries: list[FeedEntry]) -> None:
        by_id: dict[str, FeedEntry] = {}
        for entry in entries:
            pulled = self.state.entries.get(entry.entry_id)
            try:
                summary_id = pulled.summary if pulled else slug_of(entry.link)
            except ValueError:
                continue
            by_id.setdefault(summary_id, entry)
        for summary_id in self.update:
            entry = by_id.get(summary_id)
            if entry is None:
                self.fail(
                    self.report.feed_url,
                    f"{summary_id}: no entry of the feed has this id; nothing to update",
                    summary_id,
                )
                continue
            self.update_one(entry, summary_id)

    # One entry ----------------------------------------------------------------------------------

    def pull_new(self, entry: FeedEntry, slug: str, since: dt.date | None) -> None:
        path = self.folder / f"{slug}.yaml"
        local = self.read_local(path)
        if local is not None and local.source and local.source.entry_id == entry.entry_id:
            # Written by a pull that was interrupted before it recorded it.
            self.record(entry, local, local.source.content_hash)
            self.say("recorded", entry.link, slug, "written by an earlier, interrupted pull")
            return
        summary, notes = self.obtain(entry, slug)
        if summary is None:
            return
        if since and summary.date < since:
            self.say("skipped", entry.link, slug, f"dated {summary.date}, before {since}")
            return
        if path.exists():
            if local is not None and content_hash(local) == summary.source.content_hash:
                self.record(entry, summary, summary.source.content_hash)
                self.say("recorded", entry.link, slug, f"{display_path(path)} already says this")
            else:
                self.fail(
                    entry.link,
                    f"duplicate id {slug!r}: {display_path(path)} exists and was not pulled "
                    "from this entry (it is left as it is)",
                    slug,
                )
            return
        if not self.write(summary, entry, replace=False):
            return
        self.say("new", entry.link, slug, "; ".join(notes))

    def check_changed(self, entry: FeedEntry, pulled: PulledEntry) -> None:
        summary, _notes = self.obtain(entry, pulled.summary)
        if summary is None:
            return
        if summary.source.content_hash == pulled.content_hash:
            # Only the entry's feed metadata moved: remember it, so it is not fetched again.
            pulled.fingerprint = entry.fingerprint
            self.save_state()
            self.report.unchanged += 1
            return
        self.say(
            "changed",
            entry.link,
            pulled.summary,
            f"changed on the site since pulled on {pulled.pulled_at[:10]}; "
            f"`newsletter summaries pull --update {pulled.summary}` takes the site's version",
        )

    def update_one(self, entry: FeedEntry, summary_id: str) -> None:
        owner = self.state.summaries().get(summary_id)
        if owner is not None and owner != entry.entry_id:
            self.fail(entry.link, f"{summary_id} was pulled from another entry ({owner})")
            return
        path = self.folder / f"{summary_id}.yaml"
        pulled = self.state.entries.get(entry.entry_id)
        exists = path.exists()
        local = self.read_local(path)
        if exists and not self.force:
            pulled_hash = (local.source.content_hash if local and local.source else None) or (
                pulled.content_hash if pulled else None
            )
            shown = display_path(path)
            if pulled_hash is None:
                self.fail(
                    entry.link,
                    f"{shown} was not pulled from the site; --force replaces it",
                    summary_id,
                )
                return
            if local is None or content_hash(local) != pulled_hash:
                self.fail(
                    entry.link,
                    f"{shown} was edited since it was pulled (its content no longer matches "
                    "the pulled hash); --force overwrites the edits",
                    summary_id,
                )
                return
        summary, notes = self.obtain(entry, summary_id)
        if summary is None:
            return
        if (
            local is not None
            and local.source
            and local == summary.model_copy(update={"source": local.source})
        ):
            self.record(entry, local, local.source.content_hash)
            self.say("unchanged", entry.link, summary_id, "the site's version is the one here")
            return
        if self.write(summary, entry, replace=True):
            self.say("updated", entry.link, summary_id, "; ".join(notes))

    # Helpers ------------------------------------------------------------------------------------

    def read_local(self, path: Path) -> Summary | None:
        """The local summary file, if it exists and is valid."""
        if not path.exists():
            return None
        summary, _problems = load_summary(path, self.settings)
        return summary

    def write(self, summary: Summary, entry: FeedEntry, replace: bool) -> bool:
        if not self.report.dry_run:
            try:
                write_summary(self.folder, summary, replace=replace)
            except FileExistsError:
                self.fail(
                    entry.link,
                    f"{display_path(self.folder / (summary.id + '.yaml'))} appeared while "
                    "pulling; it is left as it is",
                    summary.id,
                )
                return False
            except OSError as exc:
                self.fail(entry.link, f"cannot write {summary.id}.yaml: {exc}", summary.id)
                return False
        self.record(entry, summary, summary.source.content_hash)
        return True

    def record(self, entry: FeedEntry, summary: Summary, hash_: str) -> None:
        self.state.entries[entry.entry_id] = PulledEntry(
            summary=summary.id,
            page_url=entry.link,
            content_hash=hash_,
            fingerprint=entry.fingerprint,
            pulled_at=self.now().astimezone(dt.UTC).isoformat(timespec="seconds"),
        )
        self.save_state()

    def obtain(self, entry: FeedEntry, summary_id: str) -> tuple[Summary | None, list[str]]:
        """The summary an entry gives (see `EntryReader.obtain`); problems are reported."""
        reader = EntryReader(self.settings, self.fetcher, self.default_topic, self.now, self.fail)
        return reader.obtain(entry, summary_id)
