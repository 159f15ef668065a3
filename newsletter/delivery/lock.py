"""One send per issue at a time: a lock in the issue's `sends` row, 'host:pid:token'.

A lock whose process is gone (same host, pid not running) is taken over at once; one from another
host, or from a pid that may have been reused, is taken over once it has not been refreshed for
`stale_after` seconds (a running send refreshes it at every batch).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket

from ..errors import SendLocked
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
