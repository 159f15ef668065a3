"""Run one benchmark command against a throw-away PostgreSQL server.

    python bench/with_postgres.py [--fast] -- python bench/bench_import.py --database {url}

Starts a server with `tests/support/postgres.py` (Debian's binaries, a temporary data folder, a
free port on 127.0.0.1; fsync on unless `--fast`), runs the command with `{url}` replaced by the
server's URL (user `postgres`, no password, database `postgres`), stops the server and removes
its folder, and exits with the command's status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.postgres import PostgresServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fsync off (a test server's way)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND with {url}")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")
    server = PostgresServer(fast=args.fast)
    if server.start() is None:
        print(f"PostgreSQL unavailable: {server.missing}", file=sys.stderr)
        return 1
    try:
        url = server.url()
        return subprocess.run([part.replace("{url}", url) for part in command]).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
