"""Public addresses of the archive's pages: the one place that decides them, shared by the build
and by the email's "View in your browser" link, so the two can never disagree."""

from __future__ import annotations

from ..config import Settings
from ..content import Issue


def issue_path(issue_id: str) -> str:
    """An issue page's path below the archive's root: `<issue-id>/`."""
    return f"{issue_id}/"


def topic_path(slug: str) -> str:
    return f"topics/{slug}/"


def absolute(settings: Settings, path: str) -> str:
    """`path` (relative to the archive's root, "" for the root) as a full URL."""
    if settings.archive_base is None:
        raise ValueError("archive_url is not set")
    return f"{settings.archive_base}/{path}"


def view_in_browser_url(settings: Settings, issue: Issue) -> str | None:
    """The issue's archive page, the same for every reader; None when it has no page
    (`archive: false`) or the archive has no address (`archive_url` unset)."""
    if not issue.archive or settings.archive_base is None:
        return None
    return absolute(settings, issue_path(issue.id))
