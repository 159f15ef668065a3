"""Benchmark: import a generated subscribers CSV (100,000 rows by default) through the library.

    python bench/bench_import.py [--rows N] [--seed S] [--runs R] [--database URL]

Everything is made in a temporary folder (never in the repository) and removed afterwards. The
CSV is imported into a fresh database, then a changed copy is imported again (the update path).
The database is a SQLite file, or with `--database postgresql://…` a fresh database per run on
that server (see `bench/databases.py`; `bench/with_postgres.py` starts a throw-away server).
Each run is a process of its own, so its peak RSS is its own. The last line printed is JSON:
wall seconds of each import and peak RSS, the medians and each run.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.databases import fresh_database, shown, size_mb  # noqa: E402
from newsletter import subscribers as subs  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.store import Database  # noqa: E402
from newsletter.store import subscribers as store  # noqa: E402

FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eve", "Fatima", "Gustav", "Hana", "Ígor", "Jo", "陈"]
ASCII_FIRST = ["ana", "ben", "chloe", "dmitri", "eve", "fatima", "gustav", "hana", "igor", "jo"]
LAST = ["Lopez", "Baptiste", "Núñez", "Okafor", "Smith, Jr.", "Keller", "O'Brien", "Yılmaz"]
STATUSES = ["subscribed"] * 46 + ["", "unsubscribed", "bounced", "complained"]


def generate(path: Path, rows: int, topics: list[str], seed: int, changed: bool = False) -> None:
    """A realistic list: a few hundred domains, names with commas and accents, mixed case."""
    rng = random.Random(seed)
    domains = [f"mail{i}.example.{tld}" for i in range(300) for tld in ("org", "com", "net")]
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "topics", "status"])
        for i in range(rows):
            # Local parts are ASCII: the address rule refuses non-ASCII before the @ (no backend
            # speaks SMTPUTF8); names keep their accents.
            local = f"{rng.choice(ASCII_FIRST)}.{i}" if i % 3 else f"user{i}"
            email = f"{local}@{rng.choice(domains)}"
            email = email.upper() if i % 17 == 0 else email
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}" if i % 5 else ""
            picked = rng.sample(topics, rng.randint(0, 3))
            chosen = ";".join(picked) if picked else rng.choice(["all", ""])
            if changed and i % 10 == 0:  # the update path: one row in ten changes its topics
                chosen = "all" if chosen not in ("all", "") else topics[i % len(topics)]
            writer.writerow([email, name, chosen, rng.choice(STATUSES)])


def timed_import(db: Database, settings, path: Path) -> tuple[float, subs.ImportResult]:
    start = time.perf_counter()
    result = subs.import_csv(db, settings, path)
    return time.perf_counter() - start, result


def one_run(rows: int, seed: int, database: str | None) -> dict:
    """Generate, import, import the changed copy; the figures of this process."""
    settings = load_settings(REPO / "newsletter.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        first, second = Path(tmp) / "first.csv", Path(tmp) / "second.csv"
        generate(first, rows, settings.topic_slugs, seed)
        generate(second, rows, settings.topic_slugs, seed, changed=True)
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with fresh_database(database, Path(tmp)) as location:
            with Database(location) as db:
                fresh_s, fresh = timed_import(db, settings, first)
                again_s, again = timed_import(db, settings, second)
                total = store.count(db)
                history = db.conn.execute("SELECT count(*) FROM history").fetchone()[0]
            db_mb = size_mb(location)
    print(
        f"fresh import: {fresh.rows} rows, {fresh.added} added in {fresh_s:.2f} s; "
        f"re-import: {again.updated} updated, {again.unchanged} unchanged in {again_s:.2f} s; "
        f"{total} subscribers, {history} history rows, database {db_mb:.0f} MB"
    )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "import_seconds": round(fresh_s, 3),
        "reimport_seconds": round(again_s, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "rss_before_import_mb": round(rss_before_kb / 1024, 1),
        "added": fresh.added,
        "updated": again.updated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="each in a fresh process")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://USER@HOST/DB: a fresh database per run on that server (default: SQLite)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(one_run(args.rows, args.seed, args.database)))
        return

    runs = []
    for number in range(1, args.runs + 1):
        print(f"--- run {number} of {args.runs}, database: {shown(args.database)}", flush=True)
        argv = [sys.executable, __file__, "--worker", "--rows", str(args.rows)]
        argv += ["--seed", str(args.seed)]
        if args.database:
            argv += ["--database", args.database]
        lines = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        *text, last = lines.rstrip().splitlines()
        print("\n".join(text), flush=True)
        runs.append(json.loads(last))
    keys = ("import_seconds", "reimport_seconds", "peak_rss_mb")
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(
        f"median of {len(runs)}: import {median['import_seconds']:.2f} s, re-import "
        f"{median['reimport_seconds']:.2f} s, peak RSS {median['peak_rss_mb']:.1f} MB"
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "database": shown(args.database),
                "runs": len(runs),
                "median": median,
                "per_run": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
