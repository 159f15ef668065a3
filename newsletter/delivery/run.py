"""One run of a send: the object every part of it works with (`SendRun`), what it counts
(`RunStats`) and returns (`SendResult`), and the segments' emails, each rendered once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..config import Settings
from ..content import Issue, Summary
from ..errors import DeliveryError
from ..render import RenderedEmail, Renderer
from ..store import Database
from ..tokens import signer_from_env
from .backends import Backend, backend_for
from .deliver import Outcome
from .message import Personalizer
from .prepare import PreparedSend
from .progress import SendObserver
from .report import SendReport
from .retry import RetryPolicy


@dataclass
class RunStats:
    """What one run of `send` did (the ledger holds the totals over every run)."""

    planned: int = 0  # ledger rows added by this run's plan
    recovered: int = 0  # rows left `submitting` by a crash, now `unknown`
    retried_unknown: int = 0  # `unknown` rows put back to pending (--retry-unknown)
    retried_failed: int = 0  # `failed` rows put back to pending
    sent: int = 0
    skipped: int = 0  # unsubscribed between planning and their batch
    failed: int = 0
    unknown: int = 0
    batches: int = 0
    attempts: int = 0  # provider calls, retries included
    renders: int = 0  # segments rendered (once each; the pre-send checks' renders not counted)
    # Several workers (PostgreSQL): this run's worker id, and whether it was the one that
    # recovered and planned (the others joined its plan).
    worker: str | None = None
    planner: bool = False
    warnings: list[str] = field(default_factory=list)
    # Wall seconds by phase, for `bench/bench_send.py`: check, prepare (recovery, suppression
    # sync), plan, render, and the batch loop's parts: claim, values (per-recipient values and
    # signed links), request (the backend, retry waits included), record (the outcome).
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, since: float) -> float:
        """Add the seconds from `since` to `phase`; returns now (the next phase's start)."""
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - since
        return now

    def count_batch(self, outcome: Outcome, observer: SendObserver) -> None:
        """Add one delivered batch's outcome to the run, and tell the observer."""
        self.batches += 1
        self.attempts += outcome.attempts
        self.sent += len(outcome.sent)
        self.failed += len(outcome.failed)
        self.unknown += len(outcome.unknown)
        observer.batch_done(len(outcome.sent), 0, len(outcome.failed), len(outcome.unknown))


@dataclass
class SendResult:
    issue_id: str
    backend: str
    run: RunStats
    report: SendReport | None  # None for a sandbox run (nothing recorded)
    sandbox: bool = False


class SegmentRenders:
    """Each segment's email, rendered once on first use with the command's one renderer."""

    def __init__(self, issue: Issue, summaries: list[Summary], renderer: Renderer, stats: RunStats):
        self.issue = issue
        self.stats = stats
        self.by_id = {s.id: s for s in summaries}
        self.renderer = renderer
        self.cache: dict[str, RenderedEmail] = {}

    def get(self, key: str, summary_ids: Iterable[str]) -> RenderedEmail:
        email = self.cache.get(key)
        if email is None:
            missing = [i for i in summary_ids if i not in self.by_id]
            if missing:
                raise DeliveryError(
                    f"issue {self.issue.id}: summary {', '.join(missing)} was planned but "
                    "no longer exists; restore it to continue the send"
                )
            selection = [self.by_id[i] for i in summary_ids]
            start = time.perf_counter()
            email = self.cache[key] = self.renderer.render(self.issue, selection)
            self.stats.timed("render", start)
            self.stats.renders += 1
        return email


@dataclass(eq=False)
class SendRun:
    """Everything one run of a send works with: the prepared issue, the backend, what makes
    each batch (per-recipient values, segment renders), the run's counts, how to wait and retry,
    and whom to tell."""

    prepared: PreparedSend
    backend: Backend
    personalizer: Personalizer
    renders: SegmentRenders
    stats: RunStats
    observer: SendObserver
    retry: RetryPolicy
    sleep: Callable[[float], None]
    monotonic: Callable[[], float] | None = None  # seconds; None: the real monotonic clock

    @property
    def settings(self) -> Settings:
        return self.prepared.settings

    @property
    def db(self) -> Database:
        return self.prepared.db

    @property
    def issue(self) -> Issue:
        return self.prepared.issue


def start_run(
    prepared: PreparedSend,
    *,
    observer: SendObserver,
    sleep: Callable[[float], None],
    retry: RetryPolicy | None,
    monotonic: Callable[[], float] | None = None,
) -> SendRun:
    """The run of a prepared send: its backend (made now if given by name), the link signer
    (DeliveryError when the backend needs a real secret key and there is none)."""
    settings = prepared.settings
    stats = RunStats()
    stats.timings["check"] = prepared.check_seconds
    backend = backend_for(prepared.backend, settings, sandbox=prepared.sandbox)
    if prepared.when is not None and not backend.supports_send_at:
        raise DeliveryError(
            f"--at needs the sendgrid backend: {backend.name} sends at once, it cannot schedule"
        )
    signer, dev = signer_from_env(allow_dev_key=not backend.requires_secret)
    if dev:
        message = (
            "NEWSLETTER_SECRET_KEY is not set: links are signed with the development key "
            "(fine for the outbox, never for real email)"
        )
        stats.warnings.append(message)
        observer.warn(message)
    return SendRun(
        prepared,
        backend,
        Personalizer(settings, signer),
        SegmentRenders(prepared.issue, prepared.summaries, prepared.renderer, stats),
        stats,
        observer,
        retry or RetryPolicy.from_settings(settings),
        sleep,
        monotonic,
    )
