"""What the archive publishes: the issues the ledger says were sent, minus those marked
`archive: false`, each with its summaries. Everything is read and validated here, before any page
is rendered or written.

From the ledger only "this issue was sent on this date" is read: nothing about who got it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Settings, display_path
from ..content import Issue, Summary, issue_path, load_issue, read_summaries, unknown_summaries
from ..errors import ArchiveError, ContentError
from ..store import Database, ledger
from . import urls


@dataclass(frozen=True)
class ArchivedIssue:
    """One sent issue as the archive shows it."""

    issue: Issue
    sent_on: dt.date
    summaries: tuple[Summary, ...]

    @property
    def id(self) -> str:
        return self.issue.id

    @property
    def path(self) -> str:
        return urls.issue_path(self.issue.id)


@dataclass(frozen=True)
class TopicEntry:
    """A summary as a topic page, the search page and the index list it: where it was sent."""

    summary: Summary
    archived: ArchivedIssue

    @property
    def anchor_path(self) -> str:
        """The summary's section on its issue page, relative to the archive's root."""
        return f"{self.archived.path}#{self.summary.id}"


@dataclass(frozen=True)
class ArchiveContent:
    issues: tuple[ArchivedIssue, ...]  # newest first
    left_out: tuple[str, ...]  # sent, but `archive: false`

    def entries(self) -> list[TopicEntry]:
        """Every summary ever sent, newest first; one sent twice is listed where it went last."""
        seen: set[str] = set()
        out = []
        for archived in self.issues:
            for summary in archived.summaries:
                if summary.id not in seen:
                    seen.add(summary.id)
                    out.append(TopicEntry(summary, archived))
        return out

    def by_topic(self, slug: str) -> list[TopicEntry]:
        return [entry for entry in self.entries() if slug in entry.summary.topics]


def sent_dates(db: Database | None) -> dict[str, dt.date]:
    """Issue id → the day its delivery began, for every issue someone was sent."""
    if db is None:
        return {}
    return {
        issue_id: dt.date.fromisoformat(sent_at[:10])
        for issue_id, sent_at in ledger.sent_issues(db).items()
    }


def collect_archive(settings: Settings, sent: Mapping[str, dt.date]) -> ArchiveContent:
    """The sent issues and their summaries; ContentError lists every problem that would leave a
    sent issue without its page (issue file missing or invalid, summary missing or invalid)."""
    problems: list[str] = []
    issues: list[Issue] = []
    for issue_id in sorted(sent):
        path = issue_path(settings, issue_id)
        if not path.exists():
            problems.append(
                f"{display_path(path)}: issue {issue_id} was sent on {sent[issue_id]}, but its "
                "file is missing, so its archive page cannot be built"
            )
            continue
        try:
            issue = load_issue(settings, path)
        except ContentError as err:
            problems.extend(err.problems)
            continue
        if issue.id != issue_id:
            problems.append(
                f"{display_path(path)}: field 'id': is {issue.id!r}, but the file of issue "
                f"{issue_id} (which was sent) must keep that id"
            )
            continue
        issues.append(issue)
    archived_issues = [issue for issue in issues if issue.archive]
    summaries, summary_problems = read_summaries(settings)
    reported: set[str] = set()
    for issue in archived_issues:
        missing = [sid for sid in issue.summaries if sid not in summaries]
        for sid, line in zip(missing, unknown_summaries(issue, summaries), strict=True):
            if sid in reported:
                continue
            reported.add(sid)
            # An invalid file's own problems; "no summary named" when there is no file.
            shown = display_path(settings.paths.summaries / f"{sid}.yaml") + ":"
            problems.extend([p for p in summary_problems if p.startswith(shown)] or [line])
    if problems:
        raise ContentError(problems)

    archived = [
        ArchivedIssue(issue, sent[issue.id], tuple(summaries[sid] for sid in issue.summaries))
        for issue in archived_issues
    ]
    archived.sort(key=lambda a: (a.sent_on, a.issue.date, a.id), reverse=True)
    left_out = tuple(sorted(issue.id for issue in issues if not issue.archive))
    if not archived:
        raise ArchiveError(
            "no issue has been sent yet"
            + (
                f" other than those with 'archive: false' ({', '.join(left_out)})"
                if left_out
                else ""
            )
            + ": the archive has nothing to publish"
        )
    return ArchiveContent(tuple(archived), left_out)
