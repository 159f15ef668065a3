"""Loading and checking, once per command: `prepare_send` reads the issue and its summaries and
runs the pre-send checks, keeping what it read, so the plan an editor confirms is the plan that
runs (nothing is read again before sending); `plan_send` is the dry run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ..checks import CheckReport, check_issue
from ..clock import system_clock, utc_text
from ..config import Settings
from ..content import Issue, Summary
from ..errors import CheckFailed, DeliveryError
from ..render import Renderer
from ..store import Database
from .backends import Backend
from .plan import PlanPreview, preview_plan

MAX_SCHEDULE_AHEAD = dt.timedelta(hours=72)  # SendGrid's limit for send_at


def load_checked(
    settings: Settings, issue_ref: str, renderer: Renderer | None = None
) -> tuple[Issue, list[Summary], CheckReport]:
    """The issue and its summaries (in issue order) as `check_issue` read them, once it passed
    (CheckFailed otherwise), and its report."""
    report = check_issue(settings, str(issue_ref), renderer)
    if not report.ok or report.loaded is None:
        raise CheckFailed(report.problems)
    issue, summaries = report.loaded
    return issue, summaries, report


@dataclass(eq=False)
class PreparedSend:
    """An issue loaded and checked, with what its send will use; `run_send` sends exactly this."""

    settings: Settings
    db: Database
    issue: Issue
    summaries: list[Summary]  # the issue's, in issue order
    check: CheckReport
    renderer: Renderer  # one Jinja environment for the check's renders and the segments'
    backend: Backend | str | None = None  # a backend, or its name (None: the settings' one)
    retry_unknown: bool = False
    # With retry_unknown: resend unknown rows at once, not only those past delivery.unknown_grace.
    retry_unknown_now: bool = False
    clock: Callable[[], dt.datetime] = system_clock  # the grace is measured against it
    when: dt.datetime | None = None  # deliver at (--at), UTC
    sandbox: bool = False
    check_seconds: float = 0.0

    @property
    def backend_name(self) -> str:
        if self.backend is None:
            return self.settings.delivery.backend
        return self.backend if isinstance(self.backend, str) else self.backend.name

    @cached_property
    def plan(self) -> PlanPreview:
        """What the send would do now, from the ledger and the subscribers (writes nothing)."""
        return preview_plan(
            self.db,
            self.settings,
            self.issue,
            self.summaries,
            self.backend_name,
            self.settings.delivery.batch_size,
            retry_unknown=self.retry_unknown,
            unknown_submitted_by=None
            if self.retry_unknown_now
            else utc_text(self.clock() - self.settings.delivery.unknown_grace),
        )

    @property
    def titles(self) -> dict[str, str]:
        """Summary id → title, for showing the plan's segments."""
        return {s.id: s.title for s in self.summaries}


def prepare_send(
    settings: Settings,
    db: Database,
    issue_ref: str,
    *,
    backend: Backend | str | None = None,
    retry_unknown: bool = False,
    retry_unknown_now: bool = False,
    send_at: dt.datetime | str | None = None,
    sandbox: bool = False,
    renderer: Renderer | None = None,
    clock: Callable[[], dt.datetime] = system_clock,
) -> PreparedSend:
    """Load and check the issue once (CheckFailed when a check fails; DeliveryError for a bad
    `send_at`), ready to show its plan and send it."""
    start = time.perf_counter()
    renderer = renderer or Renderer(settings)
    issue, summaries, report = load_checked(settings, issue_ref, renderer)
    check_seconds = time.perf_counter() - start
    when = parse_send_at(send_at) if send_at is not None else None
    return PreparedSend(
        settings,
        db,
        issue,
        summaries,
        report,
        renderer,
        backend=backend,
        retry_unknown=retry_unknown,
        retry_unknown_now=retry_unknown_now,
        clock=clock,
        when=when,
        sandbox=sandbox,
        check_seconds=check_seconds,
    )


def plan_send(
    settings: Settings,
    db: Database,
    issue_ref: str,
    *,
    backend: str | None = None,
    retry_unknown: bool = False,
    renderer: Renderer | None = None,
) -> PlanPreview:
    """What `send` would do now (after the same checks), writing nothing: the dry run."""
    prepared = prepare_send(
        settings, db, issue_ref, backend=backend, retry_unknown=retry_unknown, renderer=renderer
    )
    return prepared.plan


def parse_send_at(text: str | dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    """A delivery time from `--at`: ISO 8601 with a time zone, in the next 72 hours."""
    now = now or dt.datetime.now(dt.UTC)
    if isinstance(text, dt.datetime):
        when = text
    else:
        try:
            when = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise DeliveryError(
                f"--at {text!r} is not an ISO date and time (for example 2026-12-01T09:00Z)"
            ) from None
    if when.tzinfo is None:
        raise DeliveryError(
            f"--at {text}: give a time zone, for example {when:%Y-%m-%dT%H:%M}Z for UTC"
        )
    when = when.astimezone(dt.UTC)
    if when <= now:
        raise DeliveryError(f"--at {text} is in the past")
    if when - now > MAX_SCHEDULE_AHEAD:
        raise DeliveryError(f"--at {text} is more than 72 hours ahead (SendGrid's limit)")
    return when
