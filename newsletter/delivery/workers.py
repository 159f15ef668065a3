"""Several sending processes on one host (`newsletter send ISSUE --workers N`, PostgreSQL).

The command's own process confirms once, then starts N worker processes, each a `newsletter
send` of its own that joins the issue's send with a lease (`lock.WorkerLease`): they share one
plan (made by the first of them) and claim batches with `FOR UPDATE … SKIP LOCKED`. This module
starts them, relays their output line by line, forwards SIGINT and SIGTERM to them (as SIGINT:
each stops claiming and records its batches in flight), and waits for every one. The same
command on another host starts workers that join the same send.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..store import Database
from ..store import ledger as ledger_rows

MAX_WORKERS = 32  # processes a command may start; more hosts can each start as many
INTERRUPTED = 130  # a worker stopped by SIGINT (the CLI's exit status for "interrupted")


@dataclass
class WorkerExit:
    """How one worker process ended."""

    number: int  # 1..N, in the order started
    pid: int
    status: int  # exit status; negative: killed by that signal
    last_error: str | None  # its last line on stderr, without "error: "

    @property
    def failed(self) -> bool:
        return self.status != 0

    @property
    def why(self) -> str:
        """One line: why it failed."""
        if self.status < 0:
            try:
                name = signal.Signals(-self.status).name
            except ValueError:
                name = f"signal {-self.status}"
            return f"killed by {name}"
        if self.status == INTERRUPTED:
            return "interrupted"
        return self.last_error or f"exit status {self.status}"


def worker_command(config: str | None, issue_ref: str, run_id: str, options: Sequence[str]):
    """The command line of one worker: this Python, `-m newsletter send ISSUE --yes`, with the
    run's id (its workers plan once between them) and the command's own send options."""
    command = [sys.executable, "-m", "newsletter"]
    if config:
        command += ["--config", config]
    return [*command, "send", issue_ref, "--yes", "--worker-run", run_id, *options]


def run_workers(
    command: Sequence[str],
    count: int,
    relay: Callable[[int, str, bool], None],
) -> tuple[list[WorkerExit], bool]:
    """Run `count` processes of `command` and wait for them all; returns how each ended, and
    whether this process was interrupted (SIGINT or SIGTERM, forwarded to them as SIGINT).

    `relay(number, line, is_error)` gets each line a worker writes (stdout, or stderr when
    `is_error`), from the reading threads, as it comes. Each worker runs in a process group of
    its own, so that a terminal's Ctrl-C reaches it once, through this process.
    """
    children: list[subprocess.Popen] = []
    last_errors: dict[int, str] = {}
    readers: list[threading.Thread] = []
    interrupted = threading.Event()

    def read(number: int, stream, is_error: bool) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if is_error and line.strip():
                last_errors[number] = line.removeprefix("error: ")
            relay(number, line, is_error)

    def forward(signum, frame) -> None:
        interrupted.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        for number in range(1, count + 1):
            if interrupted.is_set():
                break
            child = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                process_group=0,
            )
            children.append(child)
            for stream, is_error in ((child.stdout, False), (child.stderr, True)):
                thread = threading.Thread(target=read, args=(number, stream, is_error), daemon=True)
                thread.start()
                readers.append(thread)
        for child in children:
            child.wait()
        for thread in readers:
            thread.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children:  # only when this process itself failed: never leave them behind
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                child.wait()
    exits = [
        WorkerExit(n, child.pid, child.returncode, last_errors.get(n))
        for n, child in enumerate(children, start=1)
    ]
    return exits, interrupted.is_set()


def rows_by_worker(db: Database, issue_id: str, exits: list[WorkerExit]) -> dict[int, dict]:
    """Worker number → ledger state → rows it claimed (in any run of the issue), for the
    workers in `exits` (a worker's id in the ledger, 'host:pid:token', names its pid)."""
    by_pid = {e.pid: e.number for e in exits}
    out: dict[int, dict] = {}
    for worker, states in ledger_rows.worker_rows(db, issue_id).items():
        pid = worker.split(":")[1] if worker.count(":") >= 2 else ""
        number = by_pid.get(int(pid)) if pid.isdigit() else None
        if number is not None:
            for state, n in states.items():
                out.setdefault(number, {})[state] = out.get(number, {}).get(state, 0) + n
    return out
