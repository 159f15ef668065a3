"""Compose a new issue from the latest summaries not yet used by another issue."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .content import ID_RE, Issue, Summary, load_summaries, summaries_in_issues, write_issue
from .errors import ContentError, IssueExists, NothingToCompose


@dataclass
class Composed:
    issue: Issue
    path: Path
    chosen: list[Summary]
    left_out: int  # eligible summaries beyond the cap, for the next issue


def pick_summaries(
    summaries: dict[str, Summary], used: set[str], on_date: dt.date, limit: int
) -> tuple[list[Summary], int]:
    """Published by `on_date`, in no other issue; newest first, ties by id; at most `limit`."""
    eligible = [s for s in summaries.values() if s.date <= on_date and s.id not in used]
    # Newest first; among equal dates, ids in ascending order (a stable, predictable tie-break).
    eligible.sort(key=lambda s: (-s.date.toordinal(), s.id))
    return eligible[:limit], max(0, len(eligible) - limit)


def default_subject(settings: Settings, chosen: list[Summary], on_date: dt.date) -> str:
    return f"{settings.name}, {on_date:%B %Y}: {chosen[0].title}"


def compose_issue(
    settings: Settings,
    on_date: dt.date | None = None,
    issue_id: str | None = None,
    max_summaries: int | None = None,
    force: bool = False,
    is_locked: Callable[[str], bool] | None = None,
) -> Composed:
    """Pick the latest eligible summaries and write `issues/<id>.yaml`.

    `is_locked(issue_id)` says whether the issue has been sent (has ledger rows): such an issue is
    never recomposed, even with `force`.
    """
    on_date = on_date or dt.date.today()
    issue_id = issue_id or f"{on_date:%Y-%m}"
    # The id becomes a file name: no folders, no leading '.' or '-' (hidden files, options).
    if not ID_RE.fullmatch(issue_id):
        raise ContentError(
            f"issue id {issue_id!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (for example 2026-12)"
        )
    limit = max_summaries or settings.max_summaries
    path = settings.paths.issues / f"{issue_id}.yaml"

    # Validate every summary and issue file before writing anything (two phases).
    summaries = load_summaries(settings)
    if is_locked is not None and is_locked(issue_id):
        raise IssueExists(
            f"issue {issue_id} has already been sent (or started); it cannot be recomposed"
        )
    if path.exists() and not force:
        raise IssueExists(f"{path} exists already; use --force to overwrite it")
    used = summaries_in_issues(settings, exclude=issue_id)
    chosen, left_out = pick_summaries(summaries, used, on_date, limit)
    if not chosen:
        raise NothingToCompose(
            f"nothing new to compose: every summary dated on or before {on_date} "
            "is already in an issue"
        )
    n = len(chosen)
    issue = Issue(
        id=issue_id,
        date=on_date,
        subject=default_subject(settings, chosen, on_date),
        preheader=f"{n} new plain-language research {'summary' if n == 1 else 'summaries'}: "
        f"{chosen[0].card_teaser}",
        intro=None,
        summaries=[s.id for s in chosen],
    )
    written = write_issue(settings, issue, path)
    return Composed(issue=issue, path=written, chosen=chosen, left_out=left_out)
