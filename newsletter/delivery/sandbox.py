"""The sandbox run (`send --sandbox`, SendGrid only): every request is validated by SendGrid and
nothing is delivered, so nothing is recorded either: the ledger and the lock are left alone."""

from __future__ import annotations

from ..store import ledger as ledger_rows
from ..store.subscribers import iter_subscribers
from .batch import Batch, Recipient
from .deliver import deliver_with_retries, open_backend
from .plan import Selector, segment_key
from .run import SendResult, SendRun


def sandbox_send(run: SendRun) -> SendResult:
    """Streams subscribers into per-segment buffers of one batch each; writes nothing."""
    backend, observer, stats, issue = run.backend, run.observer, run.stats, run.issue
    selector = Selector(run.settings, run.prepared.summaries)
    buffers: dict[tuple[str, ...], list[Recipient]] = {}
    total = ledger_rows.subscriber_counts(run.db).get("subscribed", 0)
    observer.started(total, -(-total // backend.max_batch))
    send_at = int(run.prepared.when.timestamp()) if run.prepared.when else None
    number = 0

    def flush(ids: tuple[str, ...]) -> None:
        nonlocal number
        recipients = buffers.pop(ids, [])
        if not recipients:
            return
        number += 1
        email = run.renders.get(segment_key(ids), ids)
        batch = Batch(issue.id, number, email, recipients, email.subject, send_at=send_at)
        outcome = deliver_with_retries(
            backend, batch, run.retry, sleep=run.sleep, observer=observer
        )
        stats.count_batch(outcome, observer)
        if outcome.error is not None:
            raise outcome.error

    try:
        open_backend(backend, run.retry, run.sleep, observer)
        for subscriber in iter_subscribers(run.db, "subscribed"):
            ids = selector.select(subscriber.topics)
            if not ids:
                stats.skipped += 1
                observer.batch_done(0, 1, 0, 0)
                continue
            buffer = buffers.setdefault(ids, [])
            buffer.append(
                run.personalizer.recipient(
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
    return SendResult(issue.id, backend.name, stats, None, sandbox=True)
