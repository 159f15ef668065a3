"""``python -m tests.fake_sendgrid --port 0 [--record full|recipients|counts] [--api-key KEY]
[--latency MS] [--bandwidth BYTES_PER_S]``

Serves the fake on 127.0.0.1, prints exactly one line ``READY http://127.0.0.1:PORT`` once it
listens, and serves until SIGTERM/SIGINT, ``POST /_fake/shutdown`` or (with
``--exit-on-stdin-eof``) the end of its standard input.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Any

from .inprocess import FakeSendGrid
from .state import RECORD_MODES, TEST_API_KEY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_sendgrid",
        description="Serve a fake SendGrid v3 API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--record", choices=RECORD_MODES, default="full")
    parser.add_argument("--api-key", default=TEST_API_KEY)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="answer each mail send MS milliseconds after it came (concurrent ones overlap)",
    )
    parser.add_argument(
        "--bandwidth",
        type=float,
        default=None,
        metavar="BYTES_PER_S",
        help="also hold each mail send for its upload time at this many bytes a second",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when stdin reaches end of file (the parent process went away)",
    )
    args = parser.parse_args(argv)
    if args.latency < 0 or (args.bandwidth is not None and args.bandwidth <= 0):
        parser.error("--latency must be 0 or more and --bandwidth more than 0")

    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        # Set the event from another thread: a signal handler must not take the lock that the
        # interrupted main thread may be holding.
        threading.Thread(target=stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    fake = FakeSendGrid(
        args.port,
        api_key=args.api_key,
        record=args.record,
        latency_ms=args.latency,
        bandwidth=args.bandwidth,
        on_shutdown=stop.set,
    )
    fake.start()
    try:
        if args.exit_on_stdin_eof:

            def watch_stdin() -> None:
                # os.read on the raw descriptor: a daemon thread blocked inside a buffered
                # reader would abort interpreter shutdown.
                with contextlib.suppress(OSError):
                    while os.read(0, 65536):
                        pass
                stop.set()

            threading.Thread(target=watch_stdin, daemon=True).start()
        sys.stdout.write(f"READY {fake.url}\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
