"""Who may send an issue: on SQLite one send at a time, a lock in the issue's `sends` row
('host:pid:token', `SendLock`); on PostgreSQL any number of workers, each with a lease of its own
(`WorkerLease`, a `send_workers` row) that they share the issue's rows under.

A lock or lease whose process is gone (same host, pid not running) is taken over at once; one
from another host, or from a pid that may have been reused, once it has not been refreshed for
`stale_after` seconds (a running send refreshes it at every batch). On PostgreSQL a worker also
holds a session lock on the server, which the server lets go when the worker's connection dies:
a worker on another host is known gone as soon as that happens.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Callable

from ..errors import DeliveryError, SendLocked
from ..store import Database
from ..store import ledger as ledger_rows

STALE_AFTER = 3600.0  # seconds without a heartbeat after which any lock is abandoned


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    # A zombie (killed, not yet reaped by its parent) still answers signal 0 but sends nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _age(lock_at: str | None, now: dt.datetime) -> float:
    if not lock_at:
        return float("inf")
    try:
        at = dt.datetime.fromisoformat(lock_at.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (now - at).total_seconds()


def abandoned(owner: str, lock_at: str | None, stale_after: float = STALE_AFTER) -> bool:
    """Whether a held lock may be taken over: its process died, or it went stale."""
    if _age(lock_at, dt.datetime.now(dt.UTC)) > stale_after:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        return not pid_alive(int(pid_text))
    return False


class SendLock:
    """`with SendLock(db, issue_id, backend):` holds the issue's send lock (SendLocked if held)."""

    shared = False  # one sender: claims go through `ledger.claim`, numbered here

    def __init__(self, db: Database, issue_id: str, backend: str, stale_after: float = STALE_AFTER):
        self.db = db
        self.issue_id = issue_id
        self.backend = backend
        self.stale_after = stale_after
        self.owner = new_owner()
        self.held = False

    def acquire(self) -> None:
        holder = ledger_rows.try_lock(
            self.db,
            self.issue_id,
            self.owner,
            self.backend,
            lambda owner, at: abandoned(owner, at, self.stale_after),
        )
        if holder is not None:
            host, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            raise SendLocked(
                f"issue {self.issue_id} is being sent by another process (pid {pid} on {host}); "
                "wait for it to finish, or stop it, then run send again"
            )
        self.held = True

    def heartbeat(self) -> bool:
        with self.db.transaction():
            return ledger_rows.heartbeat(self.db, self.issue_id, self.owner)

    def release(self, state: str, last_error: str | None = None) -> None:
        if self.held:
            ledger_rows.release_lock(self.db, self.issue_id, self.owner, state, last_error)
            self.held = False


class WorkerLease:
    """One worker's lease on an issue's send (PostgreSQL): several run at once, on any hosts.

    `join()` registers it; `gone(lease)` says whether another worker's lease is abandoned;
    `heartbeat()` refreshes it (the claims do so too); `release()` finishes it, and the last
    worker out records how the send ended. Same interface as `SendLock` for the send loop.
    """

    shared = True

    def __init__(
        self,
        db: Database,
        issue_id: str,
        backend: str,
        run_id: str,
        stale_after: float = STALE_AFTER,
    ):
        self.db = db
        self.issue_id = issue_id
        self.backend = backend
        self.run_id = run_id
        self.stale_after = stale_after
        self.owner = new_owner()
        self.held = False

    def join(self) -> None:
        """Take the liveness lock, then register the lease (call under the planning lock).
        DeliveryError when the send under way uses another backend."""
        others = [w for w in ledger_rows.live_workers(self.db, self.issue_id) if not self.gone(w)]
        differing = sorted({w["backend"] for w in others} - {self.backend})
        if differing:
            raise DeliveryError(
                f"issue {self.issue_id} is being sent with {differing[0]} by another worker; "
                f"join it with --backend {differing[0]}, or wait for it to finish"
            )
        ledger_rows.hold_worker_lock(self.db, self.owner)
        with self.db.transaction():
            ledger_rows.join_send(self.db, self.issue_id, self.owner, self.run_id, self.backend)
        self.held = True

    def gone(self, lease: dict) -> bool:
        """Whether another worker's lease is abandoned: its process died (this host), its
        connection to the server is gone (any host), or it went stale."""
        if lease["worker"] == self.owner:
            return False
        return abandoned(
            lease["worker"], lease["heartbeat_at"], self.stale_after
        ) or ledger_rows.worker_connection_gone(self.db, lease["worker"])

    def others_live(self) -> list[dict]:
        return [
            w
            for w in ledger_rows.live_workers(self.db, self.issue_id)
            if w["worker"] != self.owner and not self.gone(w)
        ]

    def abandon_gone(self) -> list[str]:
        """Finish the leases of workers that are gone (their rows in flight can then be
        recovered); returns them."""
        gone = [
            w["worker"]
            for w in ledger_rows.live_workers(self.db, self.issue_id)
            if w["worker"] != self.owner and self.gone(w)
        ]
        with self.db.transaction():
            for worker in gone:
                ledger_rows.end_worker(self.db, self.issue_id, worker, "abandoned")
        return gone

    def heartbeat(self) -> bool:
        with self.db.transaction():
            return ledger_rows.worker_heartbeat(self.db, self.issue_id, self.owner)

    def release(self, complete: Callable[[], bool], last_error: str | None = None) -> str:
        """Finish the lease; the last live worker out records the send's end ('sent' when the
        ledger is complete, else 'stopped'). Returns the issue's state now ('sending' while
        others go on)."""
        if not self.held:
            return "stopped"
        self.held = False
        outcome = "done" if last_error is None else "stopped"
        with self.db.transaction():
            ledger_rows.end_worker(self.db, self.issue_id, self.owner, outcome, last_error)
            if last_error is not None:
                ledger_rows.note_error(self.db, self.issue_id, last_error)
            if self.others_live():
                state = "sending"
            else:
                state = "sent" if complete() else "stopped"
                send = ledger_rows.get_send(self.db, self.issue_id) or {}
                error = None if state == "sent" else (last_error or send.get("last_error"))
                ledger_rows.finish_send(self.db, self.issue_id, state, error)
        ledger_rows.drop_worker_lock(self.db, self.owner)
        return state
