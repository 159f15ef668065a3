"""The list send: lock, recover, plan, then claim → deliver → record, one batch at a time.

The ledger makes it safe to stop anywhere. A batch is marked `submitting` in a committed
transaction before the backend is called, so after a crash its rows show that they may have gone
out (they become `unknown`, never resent automatically); rows not yet claimed stay `pending` and
the next `send` continues with them. Retries happen only when the backend says the request surely
was not accepted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from ..clock import utc_text
from ..config import Settings
from ..errors import DeliveryError
from ..store import Database
from ..store import ledger as ledger_rows
from .batch import Batch, BatchResult
from .deliver import Outcome, deliver_with_retries, open_backend, stop_error
from .lock import STALE_AFTER, SendLock
from .plan import write_plan
from .prepare import PreparedSend, prepare_send
from .presend import before_planning
from .progress import SendObserver
from .report import build_report
from .retry import RetryPolicy
from .run import SendResult, SendRun, start_run
from .sandbox import sandbox_send
from .unknowns import put_back_unknown

RECOVERED_REASON = "interrupted while being submitted: may or may not have been sent"


def send_issue(
    settings: Settings,
    db: Database,
    issue_ref: str,
    *,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    stale_after: float = STALE_AFTER,
    **options,
) -> SendResult:
    """Send the issue to every subscriber who has not had it; resumable, never twice.

    `prepare_send` (given `options`: backend, retry_unknown, send_at, sandbox, renderer) then
    `run_send`, for a caller with nothing to confirm in between. Raises CheckFailed before
    anything when the issue fails its checks, SendLocked when another send of it runs, and a
    DeliveryError (PayloadRejected, AuthenticationError, OutcomeUnknown...) when the send had to
    stop; the ledger then says exactly who got what.
    """
    prepared = prepare_send(settings, db, issue_ref, **options)
    return run_send(prepared, observer=observer, sleep=sleep, retry=retry, stale_after=stale_after)


def run_send(
    prepared: PreparedSend,
    *,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    stale_after: float = STALE_AFTER,
) -> SendResult:
    """Send a prepared issue (as it was loaded and checked; nothing is read again)."""
    run = start_run(prepared, observer=observer or SendObserver(), sleep=sleep, retry=retry)
    if prepared.sandbox:
        return sandbox_send(run)
    db, issue, observer = run.db, run.issue, run.observer
    existing = ledger_rows.get_send(db, issue.id)
    if existing and existing["state"] == "sent":
        raise DeliveryError(
            f"issue {issue.id} was sent in full ({existing['finished_at']}); "
            f"`newsletter report {issue.id}` shows who got it"
        )
    lock = SendLock(db, issue.id, run.backend.name, stale_after)
    lock.acquire()
    job = ListSend(run, lock)
    error: BaseException | None = None
    try:
        with ledger_rows.bulk_writes(db):
            job.recover_and_plan()
            job.send_batches()
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
    return SendResult(issue.id, run.backend.name, run.stats, report)


def pre_send_steps(run: SendRun) -> None:
    """What runs before a list send is planned, besides recovery (`presend.before_planning`:
    with SendGrid, pull its suppressions, which may unsubscribe people, so that the plan leaves
    them out). The one place such a step goes."""
    for line in before_planning(run.settings, run.db, run.backend):
        run.observer.info(line)


class ListSend:
    """One run of a list send, holding the lock: recover and plan, then batch by batch."""

    def __init__(self, run: SendRun, lock: SendLock):
        self.run, self.lock = run, lock
        self.send_at: int | None = None
        self.schedule_id: str | None = None

    def recover_and_plan(self) -> None:
        """Schedule, recover what a crash left, put back what may be resent, plan."""
        run, db, issue_id, stats = self.run, self.run.db, self.run.issue.id, self.run.stats
        start = time.perf_counter()
        self.send_at, self.schedule_id = _schedule(db, issue_id, run.backend, run.prepared.when)
        stats.recovered = ledger_rows.move_state(
            db, issue_id, ledger_rows.SUBMITTING, ledger_rows.UNKNOWN, RECOVERED_REASON
        )
        if stats.recovered:
            run.observer.warn(
                f"{stats.recovered} recipients were being submitted when an earlier send "
                "stopped; they are marked unknown (may or may not have been sent) and are not "
                "resent without --retry-unknown"
            )
        if run.prepared.retry_unknown:  # those past the grace, or all with --now
            stats.retried_unknown = put_back_unknown(run)
        # Failed rows were surely not accepted (a refused payload or recipient): try them again.
        stats.retried_failed = ledger_rows.move_state(
            db, issue_id, ledger_rows.FAILED, ledger_rows.PENDING, None
        )
        pre_send_steps(run)
        start = stats.timed("prepare", start)
        stats.planned = write_plan(db, run.settings, run.issue, run.prepared.summaries)
        stats.timed("plan", start)

    def send_batches(self) -> None:
        """Open the backend, then claim, deliver and record batch after batch, segment by segment."""
        run, db, issue_id, backend = self.run, self.run.db, self.run.issue.id, self.run.backend
        plan = ledger_rows.get_plan(db, issue_id)
        segments = ledger_rows.pending_segments(db, issue_id)
        run.observer.started(
            sum(n for _, n in segments), sum(-(-n // backend.max_batch) for _, n in segments)
        )
        if not segments:
            run.observer.recorded(0)
            return
        open_backend(backend, run.retry, run.sleep, run.observer)  # before claiming anyone
        run.observer.recorded(0)
        try:
            batch_no = ledger_rows.next_batch_no(db, issue_id)
            for key, _count in segments:
                while self._one_batch(key, plan.segments[key], batch_no):
                    batch_no += 1
        finally:
            backend.close()

    def _one_batch(self, key: str, summary_ids: list[str], batch_no: int) -> bool:
        """Claim, deliver and record one batch of a segment; False when the segment is done."""
        run, db, issue_id, stats = self.run, self.run.db, self.run.issue.id, self.run.stats
        start = time.perf_counter()
        while True:
            claimed = ledger_rows.claim(
                db, issue_id, key, run.backend.max_batch, batch_no, self.lock.owner
            )
            if claimed is None:
                self.lock.held = False
                raise DeliveryError(
                    f"the send lock of issue {issue_id} was taken over by another process "
                    "(it thought this one dead); stopping"
                )
            rows, skipped = claimed
            stats.skipped += skipped
            if skipped:
                run.observer.batch_done(0, skipped, 0, 0)
            if rows:
                break
            if not skipped:
                stats.timed("claim", start)
                return False
        start = stats.timed("claim", start)
        email = run.renders.get(key, summary_ids)
        start = time.perf_counter()
        recipients = [
            run.personalizer.recipient(r.subscriber_id, r.email, r.name, r.topics) for r in rows
        ]
        stats.timed("values", start)
        batch = Batch(
            issue_id,
            batch_no,
            email,
            recipients,
            email.subject,
            send_at=self.send_at,
            schedule_id=self.schedule_id,
        )
        outcome = self._deliver_recorded(key, batch)
        stats.count_batch(outcome, run.observer)
        if outcome.error is not None:
            raise stop_error(outcome, batch, issue_id) from None
        run.observer.recorded(stats.batches)
        return True

    def _deliver_recorded(self, segment: str, batch: Batch) -> Outcome:
        """One claimed batch through the backend, its outcome written to the ledger."""
        run, db, issue_id = self.run, self.run.db, self.run.issue.id
        keys = [r.key for r in batch.recipients]
        outcome = Outcome()

        def checkpoint(result: BatchResult) -> None:
            """Before waiting to retry: record what was accepted, count the coming attempt."""
            ledger_rows.record(db, issue_id, sent=result.sent, failed=result.failed)
            done = outcome.sent.keys() | outcome.failed.keys()
            ledger_rows.add_attempt(db, issue_id, [k for k in keys if k not in done])
            self.lock.heartbeat()  # a long wait must not look like an abandoned lock

        start = time.perf_counter()
        try:
            deliver_with_retries(
                run.backend,
                batch,
                run.retry,
                sleep=run.sleep,
                observer=run.observer,
                checkpoint=checkpoint,
                outcome=outcome,
            )
        except BaseException:
            # Every backend exception is caught inside; this is an interrupt during a wait
            # between attempts (or a checkpoint): what was accepted is known, the rest is not
            # in flight.
            done = outcome.sent.keys() | outcome.failed.keys()
            pending = [k for k in keys if k not in done]
            ledger_rows.record(
                db, issue_id, sent=outcome.sent, failed=outcome.failed, pending=pending
            )
            raise
        start = run.stats.timed("request", start)
        provider_ids = set(outcome.sent.values())
        whole = len(outcome.sent) == len(batch.recipients) and len(provider_ids) == 1
        if whole and outcome.error is None:
            # The common case with SendGrid: one statement for the batch instead of one a row.
            ledger_rows.record_batch_sent(
                db, issue_id, segment, list(outcome.sent), batch.number, provider_ids.pop()
            )
        else:
            ledger_rows.record(
                db,
                issue_id,
                sent=outcome.sent,
                failed=outcome.failed,
                unknown=outcome.unknown,
                pending=outcome.pending,
            )
        run.stats.timed("record", start)
        return outcome


def _schedule(db, issue_id, backend, when) -> tuple[int | None, str | None]:
    """send_at and SendGrid batch id for this run: a new schedule, or the one already begun."""
    row = ledger_rows.get_send(db, issue_id) or {}
    stored_at, stored_id = row.get("send_at"), row.get("batch_id")
    if when is not None:
        if stored_at and stored_at != utc_text(when):
            raise DeliveryError(
                f"issue {issue_id} is already scheduled for {stored_at}; resume it without --at"
            )
        if not stored_at:
            stored_id = backend.create_schedule_id()
            stored_at = utc_text(when)
            ledger_rows.set_schedule(db, issue_id, stored_at, stored_id)
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
