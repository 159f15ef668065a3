"""One batch through the backend: retried while the backend says it surely was not accepted,
ended with an `Outcome` that says, by recipient key, what happened and whether to stop.

What the loop does after each of the backend's exceptions is the contract written in
`backends/base.py`. Nothing here touches the ledger: the list send records the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import (
    AuthenticationError,
    DeliveryError,
    OutcomeUnknown,
    PayloadRejected,
    SendRefused,
    TemporaryFailure,
)
from .backends import Backend
from .batch import Batch, BatchResult, Recipient
from .progress import SendObserver
from .retry import MAX_WAIT, RetryPolicy

if TYPE_CHECKING:
    from .inflight import Gate

INTERRUPTED_REASON = "interrupted while being submitted ({}): may or may not have been sent"


@dataclass
class Outcome:
    """How one batch ended, by recipient key; `error` set when the send must stop."""

    sent: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    unknown: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    error: BaseException | None = None
    attempts: int = 0


def deliver_with_retries(
    backend: Backend,
    batch: Batch,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    observer: SendObserver,
    checkpoint: Callable[[BatchResult], None] | None = None,
    outcome: Outcome | None = None,
    gate: Gate | None = None,
) -> Outcome:
    """Deliver a batch, retrying only what surely was not accepted; never raises for a
    delivery problem (the outcome says what happened and whether to stop).

    `outcome` may be passed in so that the caller still knows what was accepted if an interrupt
    arrives during a wait between attempts. `gate` (shared by the batches in flight) holds
    every attempt back while any of them was told to wait, and hears such a wait.
    """
    outcome = outcome if outcome is not None else Outcome()
    remaining = list(batch.recipients)
    while True:
        if gate is not None:
            gate.wait()  # not while the provider asked any of the batches in flight to wait
        outcome.attempts += 1
        result = BatchResult()
        try:
            backend.deliver(batch.only(remaining), result)
        except TemporaryFailure as exc:
            rest = _absorb(outcome, result, remaining)
            left = set(rest)
            remaining = [r for r in remaining if r.key in left]
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
            if gate is not None and exc.retry_after is not None:
                gate.pause(float(exc.retry_after))  # the provider's word holds for every sender
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
    return [r.key for r in remaining if r.key not in sent and r.key not in failed]


def stop_error(outcome: Outcome, batch: Batch, issue_id: str) -> BaseException:
    """The error that stops a list send after this batch: the same kind as `outcome.error`
    (callers catch by type), its message saying what became of the batch and how to go on."""
    exc = outcome.error
    if isinstance(exc, OutcomeUnknown):
        message = (
            f"batch {batch.number}: {exc}. Its {len(outcome.unknown)} recipients are marked "
            "unknown and will not be sent again automatically; the send stopped. Check the "
            f"provider's activity, then run `newsletter send {issue_id}` to continue with the "
            f"rest, adding --retry-unknown to resend the unknown ones"
        )
    elif isinstance(exc, PayloadRejected):
        message = (
            f"batch {batch.number}: {exc}. {len(outcome.failed)} recipients are marked failed and "
            "the send stopped; fix the problem and run send again (failed rows are retried)"
        )
    elif isinstance(exc, AuthenticationError | SendRefused):
        message = f"{exc}. Nothing more was sent; the send stopped (run send again once fixed)"
    else:
        message = (
            f"{exc}. The batch's {len(outcome.pending)} recipients are still pending; "
            f"run `newsletter send {issue_id}` again later"
        )
    if not isinstance(exc, DeliveryError):
        return exc
    try:
        return type(exc)(message)
    except TypeError:
        return DeliveryError(message)
