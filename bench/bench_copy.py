"""Benchmark `newsletter db copy`: a SQLite database into PostgreSQL and back, verified.

    python bench/with_postgres.py -- python bench/bench_copy.py --database {url} [--subscribers N] [--runs R]

Each run builds a SQLite file in a temporary folder: N generated subscribers imported as
`bench_send.py` makes them (with their history and consent rows) and the example issue planned
(a ledger row each). `store.copy.copy` then copies it into a fresh PostgreSQL database and from
there into a new SQLite file; each copy's wall time includes its verification (every table's
row count and checksum on both sides). Prints each run and the medians; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_send  # noqa: E402
from bench.databases import fresh_database  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.content import load_issue, load_summaries, resolve_summaries  # noqa: E402
from newsletter.delivery import write_plan  # noqa: E402
from newsletter.store import Database  # noqa: E402
from newsletter.store import copy as db_copy  # noqa: E402


def one_run(subscribers: int, database: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as tmp:
        root = Path(tmp)
        ws = bench_send.make_workspace(root)
        source = root / "source.db"
        csv_path = root / "subscribers.csv"
        bench_send.generate(csv_path, subscribers, ws, seed)
        bench_send.import_in_child(ws, csv_path, source)
        settings = load_settings(ws / "newsletter.yaml")
        issue = load_issue(settings, bench_send.ISSUE)
        with Database(source) as db:
            write_plan(db, settings, issue, resolve_summaries(issue, load_summaries(settings)))
        with fresh_database(database, root) as url:
            start = time.perf_counter()
            there = db_copy.copy(source, url)
            to_postgresql = time.perf_counter() - start
            start = time.perf_counter()
            back = db_copy.copy(url, root / "back.db")
            to_sqlite = time.perf_counter() - start
    if there.tables != back.tables:
        raise SystemExit("MISMATCH: the copy back differs from the copy there")
    figures = {"rows": there.rows, "to_postgresql_s": to_postgresql, "to_sqlite_s": to_sqlite}
    print(
        f"{there.rows:,} rows in {len(there.tables)} tables: SQLite -> PostgreSQL "
        f"{to_postgresql:.2f} s, back {to_sqlite:.2f} s (verified; checksums equal both ways)"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", metavar="URL", required=True, help="postgresql://…")
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = [one_run(args.subscribers, args.database, args.seed) for _ in range(args.runs)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {len(runs)}: SQLite -> PostgreSQL {median['to_postgresql_s']:.2f} s, "
        f"back {median['to_sqlite_s']:.2f} s"
    )
    print(json.dumps({"subscribers": args.subscribers, "median": median, "runs": runs}))


if __name__ == "__main__":
    main()
