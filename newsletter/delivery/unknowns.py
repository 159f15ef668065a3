"""`unknown` rows under `send --retry-unknown`: which go back to pending now, and which wait out
`delivery.unknown_grace` (from their submission) for the provider's webhook to say it accepted
them (the webhook then records them `sent`, and nobody gets the issue twice).

A row's fate is unknown when its request was in flight as a send crashed or timed out. The
provider may well have taken it: resending at once would mail those people twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clock import from_utc_text, utc_text
from ..store import Database
from ..store import events as store_events
from ..store import ledger as ledger_rows

if TYPE_CHECKING:
    from .run import SendRun


@dataclass(frozen=True)
class UnknownRetry:
    """What `--retry-unknown` did with the issue's `unknown` rows."""

    retried: int  # put back to pending: this send sends them
    held: int = 0  # submitted less than the grace period ago: left `unknown`
    first_eligible: str | None = None  # when the first held row may be resent (UTC text)
    last_eligible: str | None = None  # ...and the last


def _plus(text: str, grace: dt.timedelta) -> str:
    return utc_text(from_utc_text(text) + grace)


def retry_unknown(
    db: Database,
    issue_id: str,
    grace: dt.timedelta,
    now: dt.datetime,
    ignore_grace: bool = False,
) -> UnknownRetry:
    """Put back to pending the `unknown` rows submitted at least `grace` before `now` (all of
    them with `ignore_grace`, the CLI's `--now`); say how many wait, and until when."""
    if ignore_grace:
        moved = ledger_rows.move_state(db, issue_id, ledger_rows.UNKNOWN, ledger_rows.PENDING, None)
        return UnknownRetry(moved)
    submitted_by = utc_text(now - grace)
    moved = store_events.put_back_unknown(db, issue_id, submitted_by)
    held, first, last = store_events.unknown_submitted_after(db, issue_id, submitted_by)
    if not held:
        return UnknownRetry(moved)
    return UnknownRetry(moved, held, _plus(first, grace), _plus(last, grace))


def describe_grace(grace: dt.timedelta) -> str:
    """`1 h`, `90 min`, `45 s`: the grace period as a person writes it."""
    seconds = int(grace.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def held_message(result: UnknownRetry, grace: dt.timedelta, issue_id: str) -> str:
    """The sentence that tells the editor what was held back, why, and when it may be resent."""
    when = result.last_eligible
    if result.first_eligible != result.last_eligible:
        when = f"{result.first_eligible} (all of them by {result.last_eligible})"
    people = "recipient was" if result.held == 1 else "recipients were"
    return (
        f"{result.held} unknown {people} submitted less than {describe_grace(grace)} ago "
        "(delivery.unknown_grace) and not resent: the provider's webhook may yet say it took "
        f"them; `newsletter send {issue_id} --retry-unknown` resends what is still unknown from "
        f"{when}, or at once with --now"
    )


def put_back_unknown(run: SendRun) -> int:
    """`--retry-unknown` in a send: put back what may be resent, tell the editor what waits."""
    prepared, grace = run.prepared, run.settings.delivery.unknown_grace
    result = retry_unknown(
        run.db, run.issue.id, grace, prepared.clock(), ignore_grace=prepared.retry_unknown_now
    )
    if result.held:
        run.observer.warn(held_message(result, grace, run.issue.id))
    return result.retried
