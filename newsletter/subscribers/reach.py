"""Who would get an issue: the subscribed subscribers whose topics select at least one of its
summaries, counted with the send plan's own selection (`delivery.plan.Selector`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..store import Database
from ..store import subscribers as subscriber_rows
from .fields import SUBSCRIBED


@dataclass(frozen=True)
class IssueReach:
    """How many subscribed subscribers an issue would reach (at least one summary matches)."""

    issue_id: str
    summaries: int
    subscribed: int
    reached: int
    segments: int  # distinct selections of summaries: the number of renders a send needs


def issue_reach(db: Database, settings: Settings, issue: str) -> IssueReach:
    """Count the subscribed subscribers whose topics match at least one summary of the issue.

    Topics no longer in the settings are ignored for matching, as the send ignores them: the
    selection is the plan's (`Selector`), counted per stored topic choice instead of per row.
    """
    # Imported here: loading content and the plan is for this question only, not for `stats`.
    from ..content import load_issue, load_summaries, resolve_summaries
    from ..delivery.plan import Selector

    issue_obj = load_issue(settings, issue)
    summaries = resolve_summaries(issue_obj, load_summaries(settings))
    selector = Selector(settings, summaries)
    subscribed = reached = 0
    segments: set[tuple[str, ...]] = set()
    for encoded, n in subscriber_rows.count_by_topics(db, SUBSCRIBED).items():
        subscribed += n
        selection = selector.select_encoded(encoded)
        if selection:
            reached += n
            segments.add(selection)
    return IssueReach(issue_obj.id, len(summaries), subscribed, reached, len(segments))
