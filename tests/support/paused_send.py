"""`python -m tests.support.paused_send N ARGS...`: the `newsletter` command with ARGS, its send
paused once N batches are recorded (N=0: planned, nothing claimed yet). At that point the process
writes PAUSE_MARK on stderr and waits for a line on stdin, so a test can SIGKILL it there.

The pause is an observer handed to the CLI through click's `ctx.meta` (`SEND_OBSERVERS`):
production code has no test hook of its own.
"""

from __future__ import annotations

import sys

import click

from newsletter.cli import cli
from newsletter.cli.sending import SEND_OBSERVERS
from newsletter.delivery import SendObserver

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
