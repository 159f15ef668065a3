"""Benchmark: import a generated subscribers CSV (100,000 rows by default) through the library.

    python bench/bench_import.py [--rows N] [--seed S]

Everything is made in a temporary folder (never in the repository) and removed afterwards. The
CSV is imported into a fresh database, then a changed copy is imported again (the update path).
The last line printed is JSON: wall seconds of each import, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    settings = load_settings(REPO / "newsletter.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        first, second = Path(tmp) / "first.csv", Path(tmp) / "second.csv"
        generate(first, args.rows, settings.topic_slugs, args.seed)
        generate(second, args.rows, settings.topic_slugs, args.seed, changed=True)
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with Database(Path(tmp) / "bench.db") as db:
            fresh_s, fresh = timed_import(db, settings, first)
            again_s, again = timed_import(db, settings, second)
            total = store.count(db)
            history = db.conn.execute("SELECT count(*) FROM history").fetchone()[0]
        db_mb = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*")) / 2**20
    print(
        f"fresh import: {fresh.rows} rows, {fresh.added} added in {fresh_s:.2f} s; "
        f"re-import: {again.updated} updated, {again.unchanged} unchanged in {again_s:.2f} s; "
        f"{total} subscribers, {history} history rows, database {db_mb:.0f} MB"
    )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(
        json.dumps(
            {
                "rows": args.rows,
                "import_seconds": round(fresh_s, 3),
                "reimport_seconds": round(again_s, 3),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "rss_before_import_mb": round(rss_before_kb / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
