"""Which link of an issue a clicked URL is: a summary's page on the site, its original paper,
the preference page, the unsubscribe page, the archive, the site, or another.

A link is known by the URL itself, as SendGrid's click event reports it (the original link, not
its tracking redirect): the issue's summaries each have their own page, so the URL names the
summary, and nothing is added to the emails, the text part or the archive for it. (SendGrid's
`url_offset.index` counts links in ways it does not document, so a map of link positions would
break on the first template change.) UTM parameters, a fragment and a trailing slash are left
out of the comparison; a URL two summaries share (the same paper) goes to the one in the
recipient's email, else the first in the issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..config import Settings
from ..content import issue_path, load_issue, read_summaries
from ..errors import ContentError

SUMMARY, PAPER = "summary", "paper"
KINDS = (SUMMARY, PAPER, "preferences", "unsubscribe", "archive", "site", "other")
MAX_URL = 4096  # longer URLs are no link of ours


def normalise(url: str) -> str | None:
    """The URL as compared: host and path without trailing slash, query without UTM
    parameters (sorted), no scheme or fragment; None for anything that is not an http(s) URL."""
    if len(url) > MAX_URL:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower() + (f":{port}" if port else "")
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.startswith("utm_")
    )
    path = parts.path.rstrip("/")
    return host + path + (f"?{urlencode(query)}" if query else "")


def issue_links(settings: Settings, issue_id: str) -> list[tuple[str, int, str, str]]:
    """(normalised url, position, summary id, kind) of the issue's summaries, from the issue
    file and the summaries folder; [] when the issue file is gone."""
    if not issue_path(settings, issue_id).is_file():
        return []
    try:
        issue = load_issue(settings, issue_id)
    except ContentError:
        return []
    summaries, _ = read_summaries(settings)
    rows = []
    for position, summary_id in enumerate(issue.summaries):
        summary = summaries.get(summary_id)
        if summary is None:
            continue
        for url, kind in ((summary.url, SUMMARY), (summary.source_url, PAPER)):
            key = normalise(str(url)) if url else None
            if key is not None:
                rows.append((key, position, summary_id, kind))
    return rows


@dataclass(frozen=True)
class Link:
    summary_id: str  # '' for links that belong to no summary
    kind: str


class LinkMap:
    """Classifies the URLs of one issue's clicks."""

    def __init__(self, settings: Settings, rows: list[tuple[str, int, str, str]]):
        self.by_url: dict[str, list[tuple[int, str, str]]] = {}
        for url, position, summary_id, kind in rows:
            self.by_url.setdefault(url, []).append((position, summary_id, kind))
        for found in self.by_url.values():
            found.sort()
        base = normalise(settings.preferences_base) or ""
        self.prefixes = [
            (base + "/preferences/", "preferences"),
            (base + "/unsubscribe/", "unsubscribe"),
        ]
        if settings.archive_base:
            self.prefixes.append(((normalise(settings.archive_base) or "") + "/", "archive"))
        self.site = normalise(settings.site)

    def classify(self, url: str, in_email: tuple[str, ...] | list[str] = ()) -> Link:
        """The link `url` is; `in_email`: the summary ids of the recipient's email."""
        key = normalise(url)
        if key is None:
            return Link("", "other")
        found = self.by_url.get(key)
        if found:
            mine = [f for f in found if f[1] in in_email]
            _, summary_id, kind = (mine or found)[0]
            return Link(summary_id, kind)
        if key == self.site:
            return Link("", "site")
        for prefix, kind in self.prefixes:
            if (key + "/").startswith(prefix):
                return Link("", kind)
        return Link("", "other")
