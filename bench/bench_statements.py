"""Where a send's database time goes: each SQL statement's count and total seconds.

    python bench/with_postgres.py -- python bench/bench_statements.py --database {url}
    python bench/bench_statements.py [--subscribers 50000]          # the same on SQLite

Imports N synthetic subscribers (as `bench_send.py` makes them) into a fresh database, sends the
example issue through the SendGrid stand-in in this process with the product's `send_issue`, and
times every statement the store runs during the send (the store's `execute`/`executemany`
wrapped for the run). Prints the phase times and the statements that took longest (on PostgreSQL
also how many of the ledger's updates stayed in their page, and its size). One run; a
tool for finding what to tune, not a benchmark to quote medians from.
"""

from __future__ import annotations

import argparse
import collections
import functools
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_send  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.delivery import send_issue  # noqa: E402
from newsletter.store import Database, postgres  # noqa: E402
from tests.fake_sendgrid import start_fake_sendgrid_process  # noqa: E402

Timings = dict[str, list]  # statement → [count, seconds]


def timed(method, label: str, timings: Timings):
    @functools.wraps(method)
    def wrapper(self, sql, params=()):
        start = time.perf_counter()
        try:
            return method(self, sql, params)
        finally:
            entry = timings.setdefault(label + " ".join(sql.split())[:100], [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    return wrapper


class TimedSqlite(sqlite3.Connection):
    """A SQLite connection that times its statements (sqlite3's methods cannot be patched)."""

    timings: Timings = {}

    def execute(self, sql, params=()):
        return timed(sqlite3.Connection.execute, "", self.timings)(self, sql, params)

    def executemany(self, sql, params=()):
        return timed(sqlite3.Connection.executemany, "many: ", self.timings)(self, sql, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--database", metavar="URL", help="postgresql://… (default: SQLite)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    timings: Timings = collections.OrderedDict()
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as tmp:
        ws = bench_send.make_workspace(Path(tmp))
        with bench_send.run_database(args.database, ws) as location:
            csv_path = Path(tmp) / "subscribers.csv"
            bench_send.generate(csv_path, args.subscribers, ws, seed=1)
            bench_send.import_in_child(ws, csv_path, location)
            fake = start_fake_sendgrid_process(record="counts")
            try:
                bench_send.use_fake(fake.url)
                settings = load_settings(ws / "newsletter.yaml")
                conn = postgres.Connection
                saved = conn.execute, conn.executemany
                conn.execute = timed(conn.execute, "", timings)
                conn.executemany = timed(conn.executemany, "many: ", timings)
                TimedSqlite.timings = timings
                real_connect = sqlite3.connect
                sqlite3.connect = functools.partial(real_connect, factory=TimedSqlite)
                try:
                    with Database(location) as db:
                        start = time.perf_counter()
                        result = send_issue(settings, db, bench_send.ISSUE, backend="sendgrid")
                        seconds = time.perf_counter() - start
                        table = ledger_table(db)
                finally:
                    conn.execute, conn.executemany = saved
                    sqlite3.connect = real_connect
            finally:
                fake.stop()
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result.run.timings.items())
    print(f"send of {result.run.sent:,} recipients: {seconds:.2f} s ({phases})")
    total = sum(seconds for _, seconds in timings.values())
    print(f"statements: {sum(n for n, _ in timings.values()):,} taking {total:.2f} s; longest:")
    for label, (count, secs) in sorted(timings.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{secs:8.2f} s {count:7,}  {label}")
    if table:
        print(table)


def ledger_table(db: Database) -> str | None:
    """PostgreSQL: how many of the ledger's row updates stayed in their page (HOT: no index
    entry written), and the sizes of the table and of its indexes."""
    if db.engine != "postgresql":
        return None
    db.conn.execute("SELECT pg_stat_force_next_flush()")  # this connection's counts, now
    row = db.conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('ledger'), pg_indexes_size('ledger') "
        "FROM pg_stat_user_tables WHERE relname = 'ledger'"
    ).fetchone()
    updates, hot, table, indexes = row
    return (
        f"ledger: {updates:,} row updates, {hot:,} of them in-page (HOT, "
        f"{hot / max(updates, 1):.0%}); table {table / 2**20:.0f} MB, indexes "
        f"{indexes / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main()
