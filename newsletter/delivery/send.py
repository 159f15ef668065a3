"""The list send: lock, recover, plan, then claim → deliver → record, with up to
`delivery.concurrency` batches in flight (`inflight`) while the next ones are claimed and filled.

The ledger makes it safe to stop anywhere. A batch is marked `submitting` in a committed
transaction before the backend is called, so after a crash its rows show that they may have gone
out (they become `unknown`, never resent automatically): at most one batch a slot. Rows not yet
claimed stay `pending` and the next `send` continues with them. Retries happen only when the
backend says the request surely was not accepted. Only this module's main thread writes the
ledger; the slots' threads only talk to the provider.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import secrets
import time
from collections.abc import Callable

from ..clock import from_utc_text, utc_text
from ..config import Settings
from ..errors import DeliveryError
from ..store import Database
from ..store import ledger as ledger_rows
from .backends import in_flight_backends
from .batch import Batch, BatchResult
from .deliver import open_backend, stop_error
from .inflight import Flight, Gate, Slots
from .lock import STALE_AFTER, SendLock, WorkerLease
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
    monotonic: Callable[[], float] | None = None,
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
    return run_send(
        prepared,
        observer=observer,
        sleep=sleep,
        retry=retry,
        stale_after=stale_after,
        monotonic=monotonic,
    )


def run_send(
    prepared: PreparedSend,
    *,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    stale_after: float = STALE_AFTER,
    monotonic: Callable[[], float] | None = None,
    run_id: str | None = None,
) -> SendResult:
    """Send a prepared issue (as it was loaded and checked; nothing is read again).

    `sleep` and `monotonic` (seconds) are how the send waits and tells the time between
    attempts; a test gives its own, and then nothing really waits. (The wall clock that
    `--retry-unknown`'s grace is measured by is `prepare_send`'s `clock`.)

    On a store that takes several workers (PostgreSQL) this process is one worker of the send:
    it joins any others sending the issue (`run_worker`); `run_id` names the command whose
    workers plan once between them (None: a run of its own)."""
    run = start_run(
        prepared, observer=observer or SendObserver(), sleep=sleep, retry=retry, monotonic=monotonic
    )
    if prepared.sandbox:
        return sandbox_send(run)
    if ledger_rows.takes_workers(run.db):
        return run_worker(run, run_id or new_run_id(), stale_after, joining=run_id is not None)
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


def new_run_id() -> str:
    """The id of one `send` command, shared by its workers."""
    return secrets.token_hex(8)


def run_worker(
    run: SendRun, run_id: str, stale_after: float = STALE_AFTER, joining: bool = False
) -> SendResult:
    """One worker of a send that several may share (PostgreSQL): join under the issue's
    planning lock (the first worker of a run recovers what gone workers left and plans; those
    that come later wait for it on the lock, then only claim), send, and finish the lease (the
    last worker out records whether the issue was sent in full).

    `joining`: started by a command that has already checked the issue was not sent (a worker
    of `send --workers`), so finding it sent now means others finished it: nothing to do."""
    db, issue, observer = run.db, run.issue, run.observer
    lease = WorkerLease(db, issue.id, run.backend.name, run_id, stale_after)
    run.stats.worker = lease.owner
    job = ListSend(run, lease)
    state, last_error = None, None
    try:
        with ledger_rows.planning_lock(db, issue.id):
            existing = ledger_rows.get_send(db, issue.id)
            if existing and existing["state"] == "sent":
                if existing["run_id"] != run_id and not joining:
                    raise DeliveryError(
                        f"issue {issue.id} was sent in full ({existing['finished_at']}); "
                        f"`newsletter report {issue.id}` shows who got it"
                    )
                state = "sent"  # other workers finished it meanwhile: nothing left to do
            else:
                lease.join()
                with ledger_rows.bulk_writes(db):
                    job.recover_and_plan()
        if lease.held:
            job.send_batches()
    except BaseException as exc:
        message = str(exc) or type(exc).__name__
        last_error = message.splitlines()[0][:500]
        raise
    finally:
        if lease.held:
            state = lease.release(lambda: build_report(db, issue.id).complete, last_error)
        observer.finished()
    report = build_report(db, issue.id)
    report.state, report.last_error = state, report.last_error if state != "sent" else None
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
        # Segment → the highest subscriber id this process has claimed in it: where its next
        # claim there starts (`ledger.claim`'s `after`).
        self.claimed_up_to: dict[str, int] = {}

    def recover_and_plan(self) -> None:
        """Schedule, recover what a crash left, put back what may be resent, plan."""
        run, db, issue_id, stats = self.run, self.run.db, self.run.issue.id, self.run.stats
        start = time.perf_counter()
        self.send_at, self.schedule_id = _schedule(db, issue_id, run.backend, run.prepared.when)
        if self.lock.shared:
            if not self._recover_for_workers():
                return
        else:
            stats.recovered = ledger_rows.move_state(
                db, issue_id, ledger_rows.SUBMITTING, ledger_rows.UNKNOWN, RECOVERED_REASON
            )
        stats.planner = True
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

    def _recover_for_workers(self) -> bool:
        """Several workers: finish the leases of gone workers and mark their rows in flight
        `unknown` (a live worker's are left alone); True when this worker is the first of its
        run and no other is sending, so it puts back and plans; False when it joins a plan."""
        run, db, issue_id, lease = self.run, self.run.db, self.run.issue.id, self.lock
        lease.abandon_gone()
        run.stats.recovered = ledger_rows.recover_gone_workers(db, issue_id, RECOVERED_REASON)
        send = ledger_rows.get_send(db, issue_id) or {}
        if lease.others_live() or send.get("run_id") == lease.run_id:
            if run.stats.recovered:
                run.observer.warn(
                    f"{run.stats.recovered} recipients were being submitted by a worker that "
                    "stopped; they are marked unknown (may or may not have been sent) and are "
                    "not resent without --retry-unknown"
                )
            if run.prepared.retry_unknown and send.get("run_id") != lease.run_id:
                run.observer.warn(
                    "joined a send under way: --retry-unknown is applied by the worker that "
                    "starts a send, so unknown recipients stay as they are"
                )
            return False
        with db.transaction():
            ledger_rows.set_run(db, issue_id, lease.run_id)
        return True

    def send_batches(self) -> None:
        """Open the backends, then claim batch after batch, segment by segment, while up to
        `delivery.concurrency` of them are in flight; record each as it is answered."""
        run, db, issue_id, backend = self.run, self.run.db, self.run.issue.id, self.run.backend
        plan = ledger_rows.get_plan(db, issue_id)
        segments = ledger_rows.pending_segments(db, issue_id)
        if self.lock.shared and len(segments) > 1 and self.lock.others_live():
            # Workers that start at different segments split fewer segments' last batches
            # between them (fewer, fuller requests) and pass over fewer of each other's locked
            # rows; each still goes on through every segment until nothing is pending. (A send
            # alone keeps the plan's order: the first worker, and every single-process send.)
            first = random.Random(self.lock.owner).randrange(len(segments))
            segments = segments[first:] + segments[:first]
        run.observer.started(
            sum(n for _, n in segments), sum(-(-n // backend.max_batch) for _, n in segments)
        )
        if not segments:
            run.observer.recorded(0)
            return
        backends = [backend]
        try:
            backends = in_flight_backends(backend, run.settings)
            for each in backends:
                open_backend(each, run.retry, run.sleep, run.observer)  # before claiming anyone
            run.observer.recorded(0)
            # A test's `sleep` stands for time itself; otherwise waits are real and a stop
            # ends them.
            wait = None if run.sleep is time.sleep else run.sleep
            slots = Slots(
                backends, run.retry, Gate(run.monotonic, wait), run.observer, self._checkpoint
            )
            self._fly(slots, plan, segments)
        finally:
            for each in backends:
                each.close()

    def _fly(self, slots: Slots, plan, segments) -> None:
        """Claim and start batches while a slot is free; record them as they land. The first
        stop error (a refused request, an unknown outcome...) stops the claims: the batches in
        flight land and are recorded, then it is raised."""
        run, issue_id = self.run, self.run.issue.id
        batch_no = ledger_rows.next_batch_no(run.db, issue_id)
        stop: BaseException | None = None
        claimed: Batch | None = None  # claimed, not yet handed to a slot
        try:
            for key, _count in segments:
                while stop is None:
                    while stop is None and not slots.has_free:
                        stop = self._land(slots)
                    if stop is not None:
                        break
                    claimed = self._claim(key, plan.segments[key], batch_no)
                    if claimed is None:
                        break
                    batch_no += 1
                    start = time.perf_counter()
                    slots.start(key, claimed)  # one slot delivers here; several hand it over
                    run.stats.timed("request", start)
                    claimed = None
                    while stop is None and slots.finished:  # one slot: delivered in `start`
                        stop = self._land(slots)
                if stop is not None:
                    break
            if stop is not None:
                slots.gate.stop()  # no more retries: what waits goes back to pending
            while slots.flying:
                error = self._land(slots)
                stop = stop or error
        except BaseException as exc:
            slots.gate.stop()
            # The first error is the one to report. Should recording fail too (the database
            # itself failing), the rows stay `submitting` and the next run marks them unknown.
            with contextlib.suppress(Exception):
                if claimed is not None:  # claimed but never handed over: surely not sent
                    ledger_rows.record(run.db, issue_id, pending=_keys(claimed))
                self._after_interrupt(slots, exc)
            raise
        if stop is not None:
            raise stop

    def _land(self, slots: Slots, timeout: float | None = None) -> BaseException | None:
        """Wait for the next batch in flight to finish and record it; its stop error, if any."""
        start = time.perf_counter()
        flight = slots.next_done(timeout)
        self.run.stats.timed("request", start)  # the main thread waiting for answers
        return None if flight is None else self._record(slots, flight)

    def _after_interrupt(self, slots: Slots, exc: BaseException) -> None:
        """Stopped by an interrupt (or an unforeseen error): no more claims; the batches in
        flight get up to the delivery timeout to land, and are recorded either way."""
        run, issue_id = self.run, self.run.issue.id
        timeout = run.settings.delivery.timeout
        under_way = sum(1 for f in slots.flying if not f.done)
        if slots.threaded and under_way:
            if isinstance(exc, KeyboardInterrupt):
                run.observer.warn(
                    f"interrupted: no more batches are claimed; waiting up to {timeout:g} s "
                    f"for the {under_way} requests in flight"
                )
            deadline = time.monotonic() + timeout
            try:
                while any(not f.done for f in slots.flying):
                    flight = slots.next_done(deadline - time.monotonic())
                    if flight is None:
                        break
                    self._record(slots, flight)
            except BaseException:  # interrupted again, or the ledger failed: stop waiting
                pass
        gone = slots.abandon()
        for flight in slots.landed_unrecorded():
            self._record(slots, flight)
        for flight in gone:
            o = flight.outcome
            sent, failed = dict(o.sent), dict(o.failed)
            rest = [k for k in flight.keys if k not in sent and k not in failed]
            if slots.threaded:
                reason = (
                    f"no answer within {timeout:g} s after the send was stopped: may or may "
                    "not have been sent"
                )
                ledger_rows.record(
                    run.db, issue_id, sent=sent, failed=failed, unknown=dict.fromkeys(rest, reason)
                )
            else:
                # Interrupted in the one slot's wait between attempts (a request under way
                # ends inside deliver_with_retries): what was accepted is known, the rest
                # never left.
                ledger_rows.record(run.db, issue_id, sent=sent, failed=failed, pending=rest)

    def _claim(self, key: str, summary_ids: list[str], batch_no: int) -> Batch | None:
        """Claim a batch of a segment and fill its values; None when the segment is done."""
        run, db, issue_id, stats = self.run, self.run.db, self.run.issue.id, self.run.stats
        start = time.perf_counter()
        while True:
            after = self.claimed_up_to.get(key, 0)
            if self.lock.shared:
                claimed = ledger_rows.claim_for_worker(
                    db, issue_id, key, run.backend.max_batch, self.lock.owner, after
                )
            else:
                claimed = ledger_rows.claim(
                    db, issue_id, key, run.backend.max_batch, batch_no, self.lock.owner, after
                )
                if claimed is not None:
                    claimed = (*claimed, batch_no)
            if claimed is None:
                self.lock.held = False
                what = "lease" if self.lock.shared else "send lock"
                raise DeliveryError(
                    f"the {what} of issue {issue_id} was taken over by another process "
                    "(it thought this one dead); stopping"
                )
            rows, skipped, number = claimed
            stats.skipped += skipped
            if skipped:
                run.observer.batch_done(0, skipped, 0, 0)
            if rows:
                self.claimed_up_to[key] = rows[-1].subscriber_id
                break
            if skipped:
                continue
            if after:
                # Nothing left past our last claim: look once more from the segment's start, for
                # rows put back behind it (another worker's claim that rolled back, or a batch
                # it handed back as surely not sent).
                self.claimed_up_to[key] = 0
                continue
            stats.timed("claim", start)
            return None
        start = stats.timed("claim", start)
        email = run.renders.get(key, summary_ids)
        start = time.perf_counter()
        recipients = [
            run.personalizer.recipient(r.subscriber_id, r.email, r.name, r.topics) for r in rows
        ]
        stats.timed("values", start)
        return Batch(
            issue_id,
            number,
            email,
            recipients,
            email.subject,
            send_at=self.send_at,
            schedule_id=self.schedule_id,
        )

    def _checkpoint(self, flight: Flight, result: BatchResult) -> None:
        """Before a slot waits to retry: record what was accepted, count the coming attempt."""
        db, issue_id, outcome = self.run.db, self.run.issue.id, flight.outcome
        ledger_rows.record(db, issue_id, sent=result.sent, failed=result.failed)
        done = outcome.sent.keys() | outcome.failed.keys()
        ledger_rows.add_attempt(db, issue_id, [k for k in flight.keys if k not in done])
        self.lock.heartbeat()  # a long wait must not look like an abandoned lock

    def _record(self, slots: Slots, flight: Flight) -> BaseException | None:
        """A landed batch's outcome into the ledger; the error that stops the send, if any."""
        run, db, issue_id = self.run, self.run.db, self.run.issue.id
        batch, outcome = flight.batch, flight.outcome
        start = time.perf_counter()
        provider_ids = set(outcome.sent.values())
        whole = len(outcome.sent) == len(batch.recipients) and len(provider_ids) == 1
        if whole and outcome.error is None:
            # The common case with SendGrid: one statement for the batch instead of one a row.
            ledger_rows.record_batch_sent(
                db, issue_id, flight.segment, list(outcome.sent), batch.number, provider_ids.pop()
            )
        else:
            pending = outcome.pending
            if flight.stopped:  # its wait was cut short: the rest surely was not accepted
                pending = flight.unanswered()
            ledger_rows.record(
                db,
                issue_id,
                sent=outcome.sent,
                failed=outcome.failed,
                unknown=outcome.unknown,
                pending=pending,
            )
        slots.forget(flight)
        run.stats.timed("record", start)
        run.stats.count_batch(outcome, run.observer)
        if outcome.error is not None:
            return stop_error(outcome, batch, issue_id)
        run.observer.recorded(run.stats.batches)
        return None


def _keys(batch: Batch) -> list:
    return [r.key for r in batch.recipients]


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
    at = from_utc_text(stored_at)
    # Resumed after the scheduled time: deliver now (still under the same batch id).
    unix = int(at.timestamp()) if at > dt.datetime.now(dt.UTC) else None
    return unix, stored_id
