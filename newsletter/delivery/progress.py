"""What a send tells as it goes, to whoever listens: the CLI's progress bar, or a test that
stops the process at an exact point. A send takes one observer; `Observers` joins several."""

from __future__ import annotations


class SendObserver:
    """Hears what a send does; every method may be left as is."""

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

    def recorded(self, batches: int) -> None:
        """The ledger holds everything this run has heard back: called once the plan is
        written and the backend open (`batches` 0, nothing in flight), then after each batch is
        recorded (the number of batches this run has recorded; with `delivery.concurrency`
        above 1, other batches may be in flight meanwhile). A list send only."""

    def finished(self) -> None:
        pass


class Observers(SendObserver):
    """Several observers heard as one, in order."""

    def __init__(self, *observers: SendObserver):
        self.observers = observers

    def warn(self, message: str) -> None:
        for o in self.observers:
            o.warn(message)

    def info(self, message: str) -> None:
        for o in self.observers:
            o.info(message)

    def started(self, recipients: int, batches: int) -> None:
        for o in self.observers:
            o.started(recipients, batches)

    def batch_done(self, sent: int, skipped: int, failed: int, unknown: int) -> None:
        for o in self.observers:
            o.batch_done(sent, skipped, failed, unknown)

    def retrying(self, batch_no: int, attempt: int, delay: float, reason: str) -> None:
        for o in self.observers:
            o.retrying(batch_no, attempt, delay, reason)

    def recorded(self, batches: int) -> None:
        for o in self.observers:
            o.recorded(batches)

    def finished(self) -> None:
        for o in self.observers:
            o.finished()
