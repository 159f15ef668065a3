"""`python -m tests.support.paused_send N ARGS...`: the `newsletter` command with ARGS, its send
paused once N batches are recorded (N=0: planned, nothing claimed yet). At that point the process
writes PAUSE_MARK on stderr and waits for a line on stdin, so a test can SIGKILL it there.

The pause is an observer handed to the CLI through click's `ctx.meta` (`SEND_OBSERVERS`):
production code has no test hook of its own.

`kill_with_a_request_in_flight` uses it to leave what a crash leaves: a batch `submitting`.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from pathlib import Path

import click

from newsletter.cli import cli
from newsletter.cli.sending import SEND_OBSERVERS
from newsletter.delivery import SendObserver
from tests.support.processes import child_env

PAUSE_MARK = "test-pause: {} batches done"


class PauseAfter(SendObserver):
    """Blocks the send on stdin once `batches` batches are recorded."""

    def __init__(self, batches: int):
        self.batches = batches

    def recorded(self, batches: int) -> None:
        if batches == self.batches:
            sys.stderr.write(PAUSE_MARK.format(batches) + "\n")
            sys.stderr.flush()
            sys.stdin.readline()


def main(argv: list[str]) -> int:
    pause_after, args = int(argv[0]), argv[1:]
    try:
        with cli.make_context("newsletter", args) as ctx:
            ctx.meta[SEND_OBSERVERS] = [PauseAfter(pause_after)]
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def kill_with_a_request_in_flight(
    workspace: Path, fake, env: dict[str, str], batches_before: int, accept: bool, wait: float = 60
) -> None:
    """Run `newsletter send ISSUE --yes --backend sendgrid` (ISSUE the example's) in a child
    process with `env` (the secret key, SendGrid's key and host: the stand-in `fake`'s); once `batches_before` batches are recorded,
    let it post the next request, which the stand-in holds (taking it when `accept`), and
    SIGKILL the process while it waits for the answer. `wait` is a safety net, never a delay."""
    child_environment = child_env(**env)
    args = ["send", "2026-12", "--yes", "--backend", "sendgrid"]
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.paused_send", str(batches_before), *args],
        cwd=workspace,
        env=child_environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    said: list[str] = []

    def read() -> None:
        for line in child.stderr:
            said.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while (line := lines.get(timeout=wait)) is not None:
            if PAUSE_MARK.format(batches_before) in line:
                break
        else:
            raise AssertionError(f"the send ended before pausing: {''.join(said)}")
        fake.script([{"hang": True, "accept": accept, "seconds": wait}])
        child.stdin.write("\n")
        child.stdin.flush()
        if not fake.wait_for("in_flight", timeout=wait):
            raise AssertionError("the send's next request never reached the stand-in")
    finally:
        child.kill()
        child.wait(timeout=wait)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
