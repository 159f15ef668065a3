"""`newsletter summaries pull`: new summaries from the site's feed and pages into `summaries/`.

One module a job: `fetch` (HTTP with limits), `feeds` (RSS, Atom, JSON Feed → entries), `extract`
(a summary page or an entry's content → the summary's fields), `files` (the summary YAML and the
pull state, written atomically) and `run` (what to pull, update, skip or report).
"""

from __future__ import annotations

from .run import PullItem, PullReport, pull_summaries

__all__ = ["PullItem", "PullReport", "pull_summaries"]
