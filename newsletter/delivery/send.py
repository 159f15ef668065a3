"""The send loop: check, lock, plan, then claim → deliver → record, one batch at a time.

The ledger makes it safe to stop anywhere. A batch is marked `submitting` in a committed
transaction before the backend is called, so after a crash its rows show that they may have gone
out (they become `unknown`, never resent automatically); rows not yet claimed stay `pending` and
the next `send` continues with them. Retries happen only when the backend says the request surely
was not accepted.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from email_validator import EmailNotValidError, validate_email

from ..checks import check_issue
from ..config import Settings
from ..content import Issue, Summary, load_issue, load_summaries, resolve_summaries
from ..errors import AuthenticationError, CheckFailed, DeliveryError, PayloadRejected
from ..render import RenderedEmail, Renderer, preview_values, select_summaries
from ..store import Database
from ..store import ledger as store
from ..store.subscribers import iter_subscribers
from ..tokens import signer_from_env
from .backends import make_backend
from .backends.base import (
    Backend,
    Batch,
    BatchResult,
    OutcomeUnknown,
    Recipient,
    SendRefused,
    TemporaryFailure,
)
from .lock import STALE_AFTER, SendLock
from .message import Personalizer, proof_recipients
from .plan import PlanPreview, Selector, preview_plan, segment_key, write_plan
from .presend import before_planning
from .report import SendReport, build_report

MAX_WAIT = 900.0  # longest single wait (a provider's Retry-After); longer → stop, resume later
MAX_SCHEDULE_AHEAD = dt.timedelta(hours=72)  # SendGrid's limit for send_at
PROOF_PREFIX = "[PROOF] "
RECOVERED_REASON = "interrupted while being submitted: may or may not have been sent"
INTERRUPTED_REASON = "interrupted while being submitted ({}): may or may not have been sent"

# Test-only hook (tests/test_resume.py): with NEWSLETTER_TEST_PAUSE_AFTER_BATCH=N, once N
# batches of a run are recorded (N=0: planned, nothing claimed yet) the process says so on
# stderr and blocks reading a line from stdin, so a test can SIGKILL it at exactly that point.
# Never set it in production.
TEST_PAUSE_ENV = "NEWSLETTER_TEST_PAUSE_AFTER_BATCH"
TEST_PAUSE_MARK = "test-pause: {} batches done"


# Retries ------------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, bounded; honours the provider's Retry-After."""

    max_attempts: int = 5
    base: float = 1.0
    maximum: float = 60.0
    rand: Callable[[], float] = random.random

    @classmethod
    def from_settings(cls, settings: Settings, rand: Callable[[], float] = random.random):
        d = settings.delivery
        return cls(d.max_attempts, d.backoff_base, d.backoff_max, rand)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.maximum, self.base * 2 ** (attempt - 1))
        # "Equal jitter": half fixed, half random, so retrying senders do not move in step.
        jittered = backoff / 2 + self.rand() * backoff / 2
        if retry_after is not None:
            return max(float(retry_after), jittered)
        return jittered


# Progress ----------------------------------------------------------------------------------


class SendObserver:
    """Hears what a send does (the CLI shows a progress bar); every method may be left as is."""

    def warn(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def started(self, recipients: int, batches: int) -> None:
        pass

    def batch_done(self, sent: int, skipped: int, failed: int, unknown: int) -> None:
        pass

    def retrying(self, batch_no: int, attempt: int, delay: float, reason: str) -> None:
        pass

    def finished(self) -> None:
        pass


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


@dataclass
class ProofResult:
    issue_id: str
    backend: str
    addresses: list[str]
    subject: str
    summary_ids: tuple[str, ...]


# One batch through the backend ------------------------------------------------------------


@dataclass
class Outcome:
    """How one batch ended, by recipient key; `error` set when the send must stop."""

    sent: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    unknown: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    error: BaseException | None = None
    attempts: int = 0


def _key(recipient: Recipient):
    return recipient.subscriber_id if recipient.subscriber_id is not None else recipient.email


def deliver_with_retries(
    backend: Backend,
    batch: Batch,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    observer: SendObserver,
    checkpoint: Callable[[BatchResult], None] | None = None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Deliver a batch, retrying only what surely was not accepted; never raises for a
    delivery problem (the outcome says what happened and whether to stop).

    `outcome` may be passed in so that the caller still knows what was accepted if an interrupt
    arrives during a wait between attempts.
    """
    outcome = outcome if outcome is not None else Outcome()
    remaining = list(batch.recipients)
    while True:
        outcome.attempts += 1
        result = BatchResult()
        try:
            backend.deliver(batch.only(remaining), result)
        except TemporaryFailure as exc:
            rest = _absorb(outcome, result, remaining)
            left = set(rest)
            remaining = [r for r in remaining if _key(r) in left]
            if not remaining:
                return outcome
            if outcome.attempts >= retry.max_attempts:
                outcome.pending = rest
                outcome.error = DeliveryError(
                    f"gave up on batch {batch.number} after {outcome.attempts} attempts: {exc}"
                )
                return outcome
            delay = retry.delay(outcome.attempts, exc.retry_after)
            if delay > MAX_WAIT:
                outcome.pending = rest
                outcome.error = DeliveryError(
                    f"the provider asks to wait {delay:.0f} s before batch {batch.number}: {exc}"
                )
                return outcome
            if checkpoint is not None:
                checkpoint(result)  # what was accepted is recorded before we wait
            observer.retrying(batch.number, outcome.attempts, delay, str(exc))
            sleep(delay)
            continue
        except OutcomeUnknown as exc:
            rest = _absorb(outcome, result, remaining)
            concerned = rest if exc.recipients is None else [k for k in exc.recipients if k in rest]
            outcome.unknown.update(dict.fromkeys(concerned, str(exc)))
            outcome.pending = [k for k in rest if k not in outcome.unknown]
            outcome.error = exc
        except PayloadRejected as exc:
            outcome.failed.update(dict.fromkeys(_absorb(outcome, result, remaining), str(exc)))
            outcome.error = exc
        except (AuthenticationError, SendRefused) as exc:
            outcome.pending = _absorb(outcome, result, remaining)
            outcome.error = exc
        except BaseException as exc:  # an interrupt or a bug, maybe mid-request: not resent
            reason = INTERRUPTED_REASON.format(type(exc).__name__)
            rest = _absorb(outcome, result, remaining)
            if result.in_flight is not None:  # the backend says which may have gone out
                flying = set(result.in_flight)
                outcome.pending = [k for k in rest if k not in flying]
                rest = [k for k in rest if k in flying]
            outcome.unknown.update(dict.fromkeys(rest, reason))
            outcome.error = exc
        else:
            missing = _absorb(outcome, result, remaining)  # a backend bug; never guess "sent"
            outcome.unknown.update(dict.fromkeys(missing, "the backend did not report it"))
        return outcome


def open_backend(
    backend: Backend, retry: RetryPolicy, sleep: Callable[[float], None], observer: SendObserver
) -> None:
    """`backend.open()`, retried like a batch while it fails temporarily (before any claim,
    so a server that cannot be reached leaves every row pending)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            backend.open()
            return
        except TemporaryFailure as exc:
            if attempt >= retry.max_attempts:
                raise DeliveryError(
                    f"gave up after {attempt} attempts to reach the {backend.name} backend: {exc}"
                ) from None
            delay = retry.delay(attempt, exc.retry_after)
            if delay > MAX_WAIT:
                raise DeliveryError(
                    f"the {backend.name} backend asks to wait {delay:.0f} s: {exc}"
                ) from None
            observer.retrying(0, attempt, delay, str(exc))
            sleep(delay)


def _absorb(outcome: Outcome, result: BatchResult, remaining: list[Recipient]) -> list:
    """Take in what the attempt accepted or failed; returns the keys of the rest."""
    outcome.sent.update(result.sent)
    outcome.failed.update(result.failed)
    sent, failed = outcome.sent, outcome.failed
    return [k for k in map(_key, remaining) if k not in sent and k not in failed]


def _stop_message(exc: BaseException, batch: Batch, outcome: Outcome, issue_id: str) -> str:
    if isinstance(exc, OutcomeUnknown):
        return (
            f"batch {batch.number}: {exc}. Its {len(outcome.unknown)} recipients are marked "
            "unknown and will not be sent again automatically; the send stopped. Check the "
            f"provider's activity, then run `newsletter send {issue_id}` to continue with the "
            f"rest, adding --retry-unknown to resend the unknown ones"
        )
    if isinstance(exc, PayloadRejected):
        return (
            f"batch {batch.number}: {exc}. {len(outcome.failed)} recipients are marked failed and "
            "the send stopped; fix the problem and run send again (failed rows are retried)"
        )
    if isinstance(exc, AuthenticationError | SendRefused):
        return f"{exc}. Nothing more was sent; the send stopped (run send again once fixed)"
    return (
        f"{exc}. The batch's {len(outcome.pending)} recipients are still pending; "
        f"run `newsletter send {issue_id}` again later"
    )


def _with_message(exc: BaseException, message: str) -> BaseException:
    """The same kind of error with the fuller message (callers catch by type)."""
    if isinstance(exc, DeliveryError):
        try:
            return type(exc)(message)
        except TypeError:
            return DeliveryError(message)
    return exc


# Loading and checking ----------------------------------------------------------------------


def load_checked(
    settings: Settings, issue_ref: str, renderer: Renderer | None = None
) -> tuple[Issue, list[Summary]]:
    """The issue and its summaries, after `check_issue` passed (CheckFailed otherwise)."""
    report = check_issue(settings, str(issue_ref), renderer)
    if not report.ok:
        raise CheckFailed(report.problems)
    issue = load_issue(settings, issue_ref)
    return issue, resolve_summaries(issue, load_summaries(settings))


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


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _backend(backend: Backend | str | None, settings: Settings, sandbox: bool = False) -> Backend:
    if backend is None or isinstance(backend, str):
        return make_backend(backend, settings, sandbox=sandbox)
    return backend


def _personalizer(settings: Settings, backend: Backend, observer: SendObserver, run: RunStats):
    signer, dev = signer_from_env(allow_dev_key=not backend.requires_secret)
    if dev:
        message = (
            "NEWSLETTER_SECRET_KEY is not set: links are signed with the development key "
            "(fine for the outbox, never for real email)"
        )
        run.warnings.append(message)
        observer.warn(message)
    return Personalizer(settings, signer)


class _Renders:
    """Each segment rendered once, on first use."""

    def __init__(
        self, settings: Settings, issue: Issue, summaries: list[Summary], renderer, run: RunStats
    ):
        self.issue = issue
        self.run = run
        self.by_id = {s.id: s for s in summaries}
        self.renderer = renderer or Renderer(settings)
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
            self.run.timed("render", start)
            self.run.renders += 1
        return email


# The dry run -------------------------------------------------------------------------------


def plan_send(
    settings: Settings,
    db: Database,
    issue_ref: str,
    *,
    backend: str | None = None,
    retry_unknown: bool = False,
    renderer: Renderer | None = None,
) -> PlanPreview:
    """What `send` would do now (after the same checks), writing nothing."""
    issue, summaries = load_checked(settings, issue_ref, renderer)
    return preview_plan(
        db,
        settings,
        issue,
        summaries,
        backend or settings.delivery.backend,
        settings.delivery.batch_size,
        retry_unknown=retry_unknown,
    )


# The send ----------------------------------------------------------------------------------


def send_issue(
    settings: Settings,
    db: Database,
    issue_ref: str,
    *,
    backend: Backend | str | None = None,
    retry_unknown: bool = False,
    send_at: dt.datetime | str | None = None,
    sandbox: bool = False,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    renderer: Renderer | None = None,
    stale_after: float = STALE_AFTER,
) -> SendResult:
    """Send the issue to every subscriber who has not had it; resumable, never twice.

    Raises CheckFailed before anything when the issue fails its checks, SendLocked when another
    send of it runs, and a DeliveryError (PayloadRejected, AuthenticationError, OutcomeUnknown...)
    when the send had to stop; the ledger then says exactly who got what.
    """
    observer = observer or SendObserver()
    retry = retry or RetryPolicy.from_settings(settings)
    start = time.perf_counter()
    issue, summaries = load_checked(settings, issue_ref, renderer)
    run = RunStats()
    run.timed("check", start)
    backend = _backend(backend, settings, sandbox)
    when = parse_send_at(send_at) if send_at is not None else None
    if when is not None and not backend.supports_send_at:
        raise DeliveryError(
            f"--at needs the sendgrid backend: {backend.name} sends at once, it cannot schedule"
        )
    personalizer = _personalizer(settings, backend, observer, run)
    renders = _Renders(settings, issue, summaries, renderer, run)
    if sandbox:
        return _sandbox_send(
            settings, db, issue, summaries, backend, personalizer, renders, run,
            observer=observer, sleep=sleep, retry=retry, when=when,
        )  # fmt: skip

    existing = store.get_send(db, issue.id)
    if existing and existing["state"] == "sent":
        raise DeliveryError(
            f"issue {issue.id} was sent in full ({existing['finished_at']}); "
            f"`newsletter report {issue.id}` shows who got it"
        )
    lock = SendLock(db, issue.id, backend.name, stale_after)
    lock.acquire()
    job = _ListSend(
        settings, db, issue, summaries, backend, personalizer, renders, run, lock,
        observer=observer, sleep=sleep, retry=retry,
    )  # fmt: skip
    error: BaseException | None = None
    try:
        with store.bulk_writes(db):
            job.prepare(when, retry_unknown)
            job.run()
    except BaseException as exc:
        error = exc
        raise
    finally:
        report = build_report(db, issue.id)
        state = "sent" if report.complete and error is None else "stopped"
        message = None if error is None else (str(error) or type(error).__name__)
        last_error = None if message is None else message.splitlines()[0][:500]
        lock.release(state, last_error)
        observer.finished()
    report.state, report.locked_by, report.last_error = state, None, last_error
    return SendResult(issue.id, backend.name, run, report)


class _ListSend:
    """One run of a list send, holding the lock: prepare (recover, plan), then batch by batch."""

    def __init__(
        self, settings, db, issue, summaries, backend, personalizer, renders, run, lock,
        *, observer, sleep, retry,
    ):  # fmt: skip
        self.settings, self.db, self.issue, self.summaries = settings, db, issue, summaries
        self.backend, self.personalizer, self.renders = backend, personalizer, renders
        self.run_stats, self.lock = run, lock
        self.observer, self.sleep, self.retry = observer, sleep, retry
        self.send_at: int | None = None
        self.schedule_id: str | None = None

    def prepare(self, when: dt.datetime | None, retry_unknown: bool) -> None:
        """Schedule, recover what a crash left, put back what may be resent, plan."""
        db, issue_id, run = self.db, self.issue.id, self.run_stats
        start = time.perf_counter()
        self.send_at, self.schedule_id = _schedule(db, issue_id, self.backend, when)
        run.recovered = store.move_state(
            db, issue_id, store.SUBMITTING, store.UNKNOWN, RECOVERED_REASON
        )
        if run.recovered:
            self.observer.warn(
                f"{run.recovered} recipients were being submitted when an earlier send stopped; "
                "they are marked unknown (may or may not have been sent) and are not resent "
                "without --retry-unknown"
            )
        if retry_unknown:
            run.retried_unknown = store.move_state(db, issue_id, store.UNKNOWN, store.PENDING, None)
        # Failed rows were surely not accepted (a refused payload or recipient): try them again.
        run.retried_failed = store.move_state(db, issue_id, store.FAILED, store.PENDING, None)
        for line in before_planning(self.settings, db, self.backend):
            self.observer.info(line)
        start = run.timed("prepare", start)
        run.planned = write_plan(db, self.settings, self.issue, self.summaries)
        run.timed("plan", start)

    def run(self) -> None:
        db, issue_id, backend = self.db, self.issue.id, self.backend
        plan = store.get_plan(db, issue_id)
        segments = store.pending_segments(db, issue_id)
        self.observer.started(
            sum(n for _, n in segments), sum(-(-n // backend.max_batch) for _, n in segments)
        )
        if not segments:
            _test_pause(0)
            return
        open_backend(backend, self.retry, self.sleep, self.observer)  # before claiming anyone
        _test_pause(0)
        try:
            batch_no = store.next_batch_no(db, issue_id)
            for key, _count in segments:
                while self._one_batch(key, plan.segments[key], batch_no):
                    batch_no += 1
        finally:
            backend.close()

    def _one_batch(self, key: str, summary_ids: list[str], batch_no: int) -> bool:
        """Claim, deliver and record one batch of a segment; False when the segment is done."""
        db, issue_id, run, observer = self.db, self.issue.id, self.run_stats, self.observer
        start = time.perf_counter()
        while True:
            claimed = store.claim(
                db, issue_id, key, self.backend.max_batch, batch_no, self.lock.owner
            )
            if claimed is None:
                self.lock.held = False
                raise DeliveryError(
                    f"the send lock of issue {issue_id} was taken over by another process "
                    "(it thought this one dead); stopping"
                )
            rows, skipped = claimed
            run.skipped += skipped
            if skipped:
                observer.batch_done(0, skipped, 0, 0)
            if rows:
                break
            if not skipped:
                run.timed("claim", start)
                return False
        start = run.timed("claim", start)
        email = self.renders.get(key, summary_ids)
        start = time.perf_counter()
        recipients = [
            self.personalizer.recipient(r.subscriber_id, r.email, r.name, r.topics) for r in rows
        ]
        run.timed("values", start)
        batch = Batch(
            issue_id, batch_no, email, recipients, email.subject,
            send_at=self.send_at, schedule_id=self.schedule_id,
        )  # fmt: skip
        outcome = _deliver_recorded(
            db, issue_id, key, self.backend, batch, self.retry, self.sleep, observer, self.lock,
            run,
        )  # fmt: skip
        run.count_batch(outcome, observer)
        if outcome.error is not None:
            message = _stop_message(outcome.error, batch, outcome, issue_id)
            raise _with_message(outcome.error, message) from None
        _test_pause(run.batches)
        return True


def _deliver_recorded(
    db, issue_id, segment, backend, batch, retry, sleep, observer, lock, run: RunStats
) -> Outcome:
    """One claimed batch through the backend, its outcome written to the ledger."""
    keys = [r.subscriber_id for r in batch.recipients]
    outcome = Outcome()

    def checkpoint(result: BatchResult) -> None:
        """Before waiting to retry: record what was accepted, count the coming attempt."""
        store.record(db, issue_id, sent=result.sent, failed=result.failed)
        done = outcome.sent.keys() | outcome.failed.keys()
        store.add_attempt(db, issue_id, [k for k in keys if k not in done])
        lock.heartbeat()  # a long wait must not look like an abandoned lock

    start = time.perf_counter()
    try:
        deliver_with_retries(
            backend, batch, retry, sleep=sleep, observer=observer, checkpoint=checkpoint,
            outcome=outcome,
        )  # fmt: skip
    except BaseException:
        # Every backend exception is caught inside; this is an interrupt during a wait between
        # attempts (or a checkpoint): what was accepted is known, the rest is not in flight.
        done = outcome.sent.keys() | outcome.failed.keys()
        pending = [k for k in keys if k not in done]
        store.record(db, issue_id, sent=outcome.sent, failed=outcome.failed, pending=pending)
        raise
    start = run.timed("request", start)
    provider_ids = set(outcome.sent.values())
    whole = len(outcome.sent) == len(batch.recipients) and len(provider_ids) == 1
    if whole and outcome.error is None:
        # The common case with SendGrid: one statement for the batch instead of one a row.
        store.record_batch_sent(
            db, issue_id, segment, list(outcome.sent), batch.number, provider_ids.pop()
        )
    else:
        store.record(
            db,
            issue_id,
            sent=outcome.sent,
            failed=outcome.failed,
            unknown=outcome.unknown,
            pending=outcome.pending,
        )
    run.timed("record", start)
    return outcome


def _schedule(db, issue_id, backend, when) -> tuple[int | None, str | None]:
    """send_at and SendGrid batch id for this run: a new schedule, or the one already begun."""
    row = store.get_send(db, issue_id) or {}
    stored_at, stored_id = row.get("send_at"), row.get("batch_id")
    if when is not None:
        if stored_at and stored_at != _iso(when):
            raise DeliveryError(
                f"issue {issue_id} is already scheduled for {stored_at}; resume it without --at"
            )
        if not stored_at:
            stored_id = backend.create_schedule_id()
            stored_at = _iso(when)
            store.set_schedule(db, issue_id, stored_at, stored_id)
    if not stored_at:
        return None, None
    if not backend.supports_send_at:
        raise DeliveryError(
            f"issue {issue_id} was scheduled with SendGrid for {stored_at}; resume it with "
            "--backend sendgrid"
        )
    at = dt.datetime.fromisoformat(stored_at.replace("Z", "+00:00"))
    # Resumed after the scheduled time: deliver now (still under the same batch id).
    unix = int(at.timestamp()) if at > dt.datetime.now(dt.UTC) else None
    return unix, stored_id


def _test_pause(batches_done: int) -> None:
    value = os.environ.get(TEST_PAUSE_ENV, "")
    if value.isdigit() and int(value) == batches_done:
        sys.stderr.write(TEST_PAUSE_MARK.format(batches_done) + "\n")
        sys.stderr.flush()
        sys.stdin.readline()


# Sandbox: every request validated by SendGrid, nothing delivered, nothing recorded ----------


def _sandbox_send(
    settings,
    db,
    issue,
    summaries,
    backend,
    personalizer,
    renders,
    run,
    *,
    observer,
    sleep,
    retry,
    when,
) -> SendResult:
    """Streams subscribers into per-segment buffers of one batch each; writes nothing."""
    selector = Selector(settings, summaries)
    buffers: dict[tuple[str, ...], list[Recipient]] = {}
    total = store.subscriber_counts(db).get("subscribed", 0)
    observer.started(total, -(-total // backend.max_batch))
    number = 0

    def flush(ids: tuple[str, ...]) -> None:
        nonlocal number
        recipients = buffers.pop(ids, [])
        if not recipients:
            return
        number += 1
        key = segment_key(ids)
        email = renders.get(key, ids)
        send_at = int(when.timestamp()) if when else None
        batch = Batch(issue.id, number, email, recipients, email.subject, send_at=send_at)
        outcome = deliver_with_retries(backend, batch, retry, sleep=sleep, observer=observer)
        run.count_batch(outcome, observer)
        if outcome.error is not None:
            raise outcome.error

    try:
        open_backend(backend, retry, sleep, observer)
        for subscriber in iter_subscribers(db, "subscribed"):
            ids = selector.select(subscriber.topics)
            if not ids:
                run.skipped += 1
                observer.batch_done(0, 1, 0, 0)
                continue
            buffer = buffers.setdefault(ids, [])
            buffer.append(
                personalizer.recipient(
                    subscriber.id, subscriber.email, subscriber.name, subscriber.topics
                )
            )
            if len(buffer) >= backend.max_batch:
                flush(ids)
        for ids in list(buffers):
            flush(ids)
    finally:
        backend.close()
        observer.finished()
    return SendResult(issue.id, backend.name, run, None, sandbox=True)


# Proofs ----------------------------------------------------------------------------------


def check_proof_address(address: str) -> str:
    """The address as it goes on the wire, or DeliveryError naming what is wrong with it.

    The list's rule (`subscribers.check_address`): the domain in its ASCII form, no non-ASCII
    local part; the local part keeps its case, since a proof is not stored."""
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError as exc:
        raise DeliveryError(f"proof address {address!r} is not an email address: {exc}") from None


def send_proof(
    settings: Settings,
    issue_ref: str,
    addresses: Iterable[str],
    *,
    topics: Iterable[str] | str = "all",
    backend: Backend | str | None = None,
    sandbox: bool = False,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    renderer: Renderer | None = None,
) -> ProofResult:
    """Send the email a subscriber with `topics` would get to `addresses` only, subject prefixed
    "[PROOF] ". Its links are preview links that act on no one; nothing goes in the ledger."""
    observer = observer or SendObserver()
    addresses = [check_proof_address(a) for a in addresses]
    if not addresses:
        raise DeliveryError("a proof needs at least one address")
    issue, summaries = load_checked(settings, issue_ref, renderer)
    selection = select_summaries(summaries, topics)
    if not selection:
        raise DeliveryError(
            f"no summary in issue {issue.id} matches the topics chosen for the proof"
        )
    backend = _backend(backend, settings, sandbox)
    email = (renderer or Renderer(settings)).render(issue, selection)
    subject = PROOF_PREFIX + email.subject
    recipients = proof_recipients(settings, addresses, preview_values(settings, topics))
    retry = retry or RetryPolicy.from_settings(settings)
    try:
        open_backend(backend, retry, sleep, observer)
        for start in range(0, len(recipients), backend.max_batch):
            chunk = recipients[start : start + backend.max_batch]
            batch = Batch(issue.id, 0, email, chunk, subject, proof=True)
            outcome = deliver_with_retries(backend, batch, retry, sleep=sleep, observer=observer)
            if outcome.error is not None:
                raise outcome.error
            if outcome.failed:
                raise DeliveryError(
                    "; ".join(f"proof to {k} failed: {v}" for k, v in outcome.failed.items())
                )
    finally:
        backend.close()
    return ProofResult(issue.id, backend.name, addresses, subject, email.summary_ids)
