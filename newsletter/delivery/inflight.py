"""Batches in flight at once: the slots that send them, and the gate every slot waits at.

The list send's main thread claims, fills and records (the ledger's connection is its own);
each slot is a thread with its own backend instance that only runs `deliver_with_retries`
for one batch at a time, so no backend is ever used by two threads at once. Whatever a slot
needs from the main thread (a checkpoint written to the ledger, a word to the observer) goes
through one queue, in order, and the main thread does it.

The `Gate` is shared by every slot: a provider's "wait until" (429, a 503 with Retry-After)
pauses them all, not only the one that was told, and stopping the send ends every wait.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .backends import Backend
from .batch import Batch, BatchResult
from .deliver import Outcome, deliver_with_retries
from .progress import SendObserver
from .retry import RetryPolicy

# The main thread never blocks longer than this at once: a lock wait is not always woken by a
# signal, and Ctrl-C must be heard at once even while every slot waits for an answer.
WAKE_EVERY = 0.25


class Stopped(Exception):
    """Raised in a wait once the send stops: what was not sent yet is surely not accepted."""


class Gate:
    """When the next attempt of any slot may start: after its own backoff and after the latest
    pause any slot was asked for; `stop()` ends every wait (with `Stopped`).

    `clock` is monotonic seconds. Waiting is on a condition variable, unless `sleep` is given
    (a test's): then waits call it, and time is the `clock` given with it, or else only the
    seconds slept, so a test sees exactly which waits were made and nothing really waits.
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.cond = threading.Condition()
        self.sleep = sleep
        self.slept = 0.0
        if clock is None:
            clock = time.monotonic if sleep is None else (lambda: self.slept)
        self.clock = clock
        self.until = float("-inf")  # no attempt starts before this (clock time)
        self.stopped = False

    def pause(self, seconds: float) -> None:
        """Every slot waits `seconds` from now before its next attempt (a provider's word)."""
        with self.cond:
            self.until = max(self.until, self.clock() + seconds)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def wait(self, seconds: float = 0.0) -> None:
        """Wait `seconds` (one slot's backoff), then until no pause is left; Stopped when the
        send stops meanwhile."""
        if seconds > 0:
            self._wait(seconds)
        while True:
            with self.cond:
                if self.stopped:
                    raise Stopped()
                left = self.until - self.clock()
            if left <= 0:
                return
            self._wait(left)

    def _wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
            with self.cond:
                self.slept += seconds
                if self.stopped:
                    raise Stopped()
            return
        deadline = time.monotonic() + seconds
        with self.cond:
            while not self.stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)
            raise Stopped()


@dataclass(eq=False)
class Flight:
    """One batch handed to a slot: what it is, and how it ended (`done` once it has)."""

    segment: str
    batch: Batch
    outcome: Outcome = field(default_factory=Outcome)
    done: bool = False
    stopped: bool = False  # a wait was cut short by the send's stop; the rest is pending

    @property
    def keys(self) -> list:
        return [r.key for r in self.batch.recipients]

    def unanswered(self) -> list:
        """Keys with no outcome yet."""
        o = self.outcome
        settled = o.sent.keys() | o.failed.keys() | o.unknown.keys() | set(o.pending)
        return [k for k in self.keys if k not in settled]


class _Relay(SendObserver):
    """A slot's observer: every call is done by the main thread, in order."""

    def __init__(self, events: queue.Queue):
        self.events = events

    def retrying(self, batch_no: int, attempt: int, delay: float, reason: str) -> None:
        self.events.put(("call", lambda o: o.retrying(batch_no, attempt, delay, reason)))


class Slots:
    """Up to len(backends) batches in flight, one a backend, each on its own thread.

    The main thread `start`s a batch on a free slot and takes finished ones with `next_done`,
    which also does, meanwhile, what the slots hand over (checkpoints, observer calls). With
    one backend nothing runs on another thread: the batch is delivered inside `start`, exactly
    as a send one batch at a time always did.
    """

    def __init__(
        self,
        backends: list[Backend],
        retry: RetryPolicy,
        gate: Gate,
        observer: SendObserver,
        checkpoint: Callable[[Flight, BatchResult], None],
    ):
        self.free = list(reversed(backends))
        self.retry, self.gate, self.observer = retry, gate, observer
        self.checkpoint = checkpoint
        self.threaded = len(backends) > 1
        self.events: queue.Queue = queue.Queue()
        self.flying: list[Flight] = []  # started, not yet recorded (`forget`)
        self.finished: list[Flight] = []  # done, waiting to be taken (in completion order)
        self.closed = False  # abandoned: slots still under way hand nothing over any more
        self.handing = threading.Lock()

    @property
    def has_free(self) -> bool:
        return bool(self.free)

    def start(self, segment: str, batch: Batch) -> Flight:
        backend = self.free.pop()
        flight = Flight(segment, batch)
        self.flying.append(flight)
        if not self.threaded:
            try:
                self._deliver(backend, flight, self.observer, lambda r: self.checkpoint(flight, r))
            finally:
                self.free.append(backend)
            flight.done = True
            self.finished.append(flight)
            return flight
        thread = threading.Thread(
            target=self._run, args=(backend, flight), name=f"send-batch-{batch.number}"
        )
        thread.daemon = True  # an abandoned request (after an interrupt) never holds the exit
        thread.start()
        return flight

    def _deliver(self, backend, flight, observer, checkpoint) -> None:
        deliver_with_retries(
            backend,
            flight.batch,
            self.retry,
            sleep=self.gate.wait,
            observer=observer,
            checkpoint=checkpoint,
            outcome=flight.outcome,
            gate=self.gate,
        )

    def _run(self, backend: Backend, flight: Flight) -> None:
        relay = _Relay(self.events)

        def checkpoint(result: BatchResult) -> None:
            handed = threading.Event()
            with self.handing:
                if self.closed:
                    raise Stopped()
                self.events.put(("checkpoint", flight, result, handed))
            handed.wait()  # recorded by the main thread before this slot waits

        try:
            self._deliver(backend, flight, relay, checkpoint)
        except Stopped:
            flight.stopped = True
        except BaseException as exc:  # a bug: the outcome says what is known, the send stops
            o = flight.outcome
            o.unknown.update(dict.fromkeys(flight.unanswered(), f"{type(exc).__name__}: {exc}"))
            o.error = o.error or exc
        finally:
            self.events.put(("done", flight, backend))

    def next_done(self, timeout: float | None = None) -> Flight | None:
        """The next finished batch (None when `timeout` seconds pass first); meanwhile does
        what the slots hand over. Only called with batches in flight."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            left = WAKE_EVERY if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self.events.get(timeout=min(left, WAKE_EVERY))
            except queue.Empty:
                continue
            self._handle(event)
        return self.finished.pop(0)

    def forget(self, flight: Flight) -> None:
        """The batch is recorded: no longer in flight."""
        self.flying.remove(flight)

    def landed_unrecorded(self) -> list[Flight]:
        """Batches that finished but are not recorded yet (an interrupt came in between)."""
        return [f for f in self.flying if f.done]

    def abandon(self) -> list[Flight]:
        """Give up waiting: the batches still under way, forgotten. Their slots' threads end
        on their own (a request ends by its timeout) and hand nothing over any more."""
        with self.handing:
            self.closed = True
            while True:
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                if event[0] == "checkpoint":
                    event[3].set()  # not recorded: the batch is given up as a whole
                elif event[0] == "done":
                    event[1].done = True
        gone = [f for f in self.flying if not f.done]
        self.flying = [f for f in self.flying if f.done]
        self.finished = []
        return gone

    def _handle(self, event) -> None:
        kind = event[0]
        if kind == "checkpoint":
            _, flight, result, handed = event
            try:
                self.checkpoint(flight, result)
            finally:
                handed.set()
        elif kind == "call":
            event[1](self.observer)
        else:
            _, flight, backend = event
            flight.done = True
            self.free.append(backend)
            self.finished.append(flight)
