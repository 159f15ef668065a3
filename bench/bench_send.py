"""Benchmark: send the example issue to N synthetic subscribers through the real send path.

    python bench/bench_send.py [--subscribers 100000] [--runs 1] [--baseline 1000] [--seed 1]
        [--latency MS] [--bandwidth BYTES_PER_S] [--concurrency N] [--compress]
        [--database URL] [--until plan]

Each run happens in a fresh child process (so its peak RSS is its own) and a throw-away workspace
in a temporary folder: a copy of newsletter.yaml, summaries/, issues/ and templates/, and a CSV of
N subscribers (topics random over the vocabulary, about 10% "all", about 2% unsubscribed). The
phases:

- import: `subscribers.import_csv` of that CSV, in a child process of its own;
- plan, render, deliver: `send_issue` (what `newsletter send` runs) with the SendGrid backend
  against `tests/fake_sendgrid/` started as a separate process (`--record counts`), the ledger
  in the workspace's SQLite file. Suppression sync stays on, as configured (the fake's lists are
  empty: four GETs). Phase times come from the send's own `RunStats.timings`; "deliver" is the
  batch loop without rendering: claims, per-recipient values and signed links, requests, ledger.

Each run checks its figures against what the generated list implies: renders = distinct
selections, requests = sum over segments of ceil(recipients / 1000), accepted recipients and
ledger rows sent = eligible subscribers (OK / MISMATCH lines). Then a baseline (bench code only):
the same issue for `--baseline` subscribers, one render and one API request per subscriber.
The last line printed is one JSON object with every figure (medians over the runs, and each
run). Exit status 1 if any check is a MISMATCH (a missed time target is only reported).
`--profile FILE` writes cProfile stats of the send (`python -m pstats FILE`).

`--latency MS` (and `--bandwidth BYTES_PER_S`) start the fake with the same options: each mail
send is answered MS ms after it came, as a real provider's would be (the baseline's fake always
answers at once). `--concurrency N` writes `delivery.concurrency: N` and `--compress` writes
`delivery.sendgrid.compress: true` into the run's settings; without them the settings stay as
the example's.

`--database postgresql://USER@HOST/DB` keeps each run's data (and the baseline's) in a fresh
database on that server instead of the workspace's SQLite file (see `bench/databases.py`;
`python bench/with_postgres.py -- python bench/bench_send.py --database {url}` starts a
throw-away server). `--until plan` stops each run after the plan: the import, then
`write_plan` (what the send's plan phase runs) timed alone, checked against the list (ledger
rows pending = eligible, segments = distinct selections); no fake server, no send, no baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_import import FIRST, LAST  # noqa: E402  (names with accents, commas, quotes)
from bench.databases import fresh_database, shown, size_mb  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.delivery import SendObserver, send_issue  # noqa: E402
from newsletter.render import Renderer, fill  # noqa: E402
from newsletter.store import Database, ledger  # noqa: E402
from newsletter.tokens import LinkSigner, preferences_url, unsubscribe_url  # noqa: E402
from tests.fake_sendgrid import TEST_API_KEY, start_fake_sendgrid_process  # noqa: E402

ISSUE = "2026-12"
BATCH = 1000  # SendGrid's personalizations per request (delivery.batch_size)
SECRET = "bench-secret-key-for-signing-links-0123456789"
WORKSPACE_ITEMS = ("newsletter.yaml", "summaries", "issues", "templates")
PHASES = ("import", "plan", "render", "deliver")
DELIVER_PARTS = ("claim", "values", "request", "record")

# Targets from issue 6 (this 2-core machine).
TARGET_SEND_S = {100_000: 10.0, 1_000_000: 100.0}
AIM_SEND_S = {100_000: 5.0}
TARGET_IMPORT_S = {100_000: 10.0}
TARGET_RSS_MB = 300.0


def rss_mb() -> float:
    """This process's peak RSS so far (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The synthetic list --------------------------------------------------------------------------


def make_workspace(root: Path) -> Path:
    ws = root / "ws"
    ws.mkdir()
    for name in WORKSPACE_ITEMS:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, ws / name)
    return ws


def issue_topics(ws: Path) -> list[tuple[str, frozenset[str]]]:
    """(summary id, its topics) in issue order, read straight from the YAML files, so that the
    expected segments do not depend on the product's own selection code."""
    issue = yaml.safe_load((ws / "issues" / f"{ISSUE}.yaml").read_text())
    out = []
    for sid in issue["summaries"]:
        summary = yaml.safe_load((ws / "summaries" / f"{sid}.yaml").read_text())
        out.append((sid, frozenset(summary["topics"])))
    return out


def generate(path: Path, rows: int, ws: Path, seed: int) -> dict:
    """Write the CSV; return what a send of the issue to it must do.

    10% choose "all", 2% are unsubscribed; the rest pick 1 to 4 topics at random (every topic
    selects at least one of the issue's summaries, so nobody subscribed is skipped).
    """
    rng = random.Random(seed)
    topics = load_settings(ws / "newsletter.yaml").topic_slugs
    summaries = issue_topics(ws)
    domains = [f"mail{i}.example.{tld}" for i in range(300) for tld in ("org", "com", "net")]
    segments: Counter[tuple[str, ...]] = Counter()
    unsubscribed = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "topics", "status"])
        for i in range(rows):
            email = f"reader.{i}@{rng.choice(domains)}"
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}" if i % 5 else ""
            if rng.random() < 0.10:
                chosen: list[str] | str = "all"
            else:
                chosen = rng.sample(topics, rng.randint(1, 4))
            status = "unsubscribed" if rng.random() < 0.02 else "subscribed"
            writer.writerow([email, name, chosen if chosen == "all" else ";".join(chosen), status])
            if status != "subscribed":
                unsubscribed += 1
                continue
            picked = set(topics) if chosen == "all" else set(chosen)
            selection = tuple(sid for sid, tags in summaries if tags & picked)
            segments[selection] += 1
    return {
        "rows": rows,
        "eligible": sum(segments.values()),
        "unsubscribed": unsubscribed,
        "segments": len(segments),
        "requests": sum(math.ceil(n / BATCH) for n in segments.values()),
        "selections": sorted(segments),
    }


def import_in_child(ws: Path, csv_path: Path, location: str | Path) -> dict:
    """Run the product's CSV import in a child process (its memory is not the sender's)."""
    config = str(ws / "newsletter.yaml")
    out = subprocess.run(
        [sys.executable, __file__, "--import-worker", config, str(csv_path), str(location)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def run_database(database: str | None, ws: Path):
    """Where one run keeps its data: the workspace's SQLite file, or a fresh PostgreSQL database."""
    if database is None:
        yield load_settings(ws / "newsletter.yaml").paths.database
        return
    with fresh_database(database, ws) as url:
        yield url


def import_worker(config: str, csv_path: str, location: str) -> None:
    from newsletter.subscribers import import_csv

    settings = load_settings(config)
    with Database(location) as db:
        start = time.perf_counter()
        result = import_csv(db, settings, csv_path)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "added": result.added, "rss_mb": rss_mb()}))


# One run of the product ----------------------------------------------------------------------


def use_fake(url: str) -> None:
    """Point the real SendGrid client at the fake (never through an environment proxy)."""
    no_proxy = ",".join(x for x in (os.environ.get("no_proxy"), "127.0.0.1,localhost") if x)
    os.environ.update(
        SENDGRID_API_KEY=TEST_API_KEY,
        SENDGRID_API_HOST=url,
        NEWSLETTER_SECRET_KEY=SECRET,
        no_proxy=no_proxy,
        NO_PROXY=no_proxy,
    )


class CountingRenderer(Renderer):
    """Counts renders, and which selections were rendered once the send loop began."""

    def __init__(self, settings):
        super().__init__(settings)
        self.sending = False
        self.check_renders = 0
        self.selections: list[tuple[str, ...]] = []

    def render(self, issue, summaries):
        if self.sending:
            self.selections.append(tuple(s.id for s in summaries))
        else:
            self.check_renders += 1  # the pre-send checks render twice
        return super().render(issue, summaries)


class Observer(SendObserver):
    """Notes when the plan is done (the send loop starts): the RSS then, and what the send
    announced it would do."""

    def __init__(self, renderer: CountingRenderer):
        self.renderer = renderer
        self.rss_after_plan = 0.0
        self.recipients = self.batches = 0

    def started(self, recipients: int, batches: int) -> None:
        self.renderer.sending = True
        self.rss_after_plan = rss_mb()
        self.recipients, self.batches = recipients, batches


def adjust_settings(ws: Path, concurrency: int | None, compress: bool) -> None:
    """Write the run's delivery options into its copy of newsletter.yaml, only those given."""
    if concurrency is None and not compress:
        return
    path = ws / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    delivery = data.setdefault("delivery", {})
    if concurrency is not None:
        delivery["concurrency"] = concurrency
    if compress:
        delivery.setdefault("sendgrid", {})["compress"] = True
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def send_run(
    subscribers: int,
    seed: int,
    profile: str | None = None,
    *,
    latency_ms: float = 0.0,
    bandwidth: float | None = None,
    concurrency: int | None = None,
    compress: bool = False,
    database: str | None = None,
    workers: int = 1,
) -> dict:
    """One full run (generate, import, send, verify) in this process (its sends in `workers`
    child processes when more than one); returns its figures."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-send-") as tmp,
        run_database(database, make_workspace(Path(tmp))) as location,
    ):
        ws = Path(tmp) / "ws"
        adjust_settings(ws, concurrency, compress)
        csv_path = Path(tmp) / "subscribers.csv"
        start = time.perf_counter()
        expected = generate(csv_path, subscribers, ws, seed)
        generate_s = time.perf_counter() - start
        imported = import_in_child(ws, csv_path, location)

        fake = start_fake_sendgrid_process(
            record="counts", latency_ms=latency_ms, bandwidth=bandwidth
        )
        try:
            use_fake(fake.url)
            settings = load_settings(ws / "newsletter.yaml")
            renderer = CountingRenderer(settings)
            observer = Observer(renderer)
            rss_start = rss_mb()
            profiler = cProfile.Profile() if profile else None
            if workers > 1:
                return workers_run(
                    ws, location, workers, fake, expected, imported, generate_s, latency_ms
                )
            with Database(location) as db:
                start = time.perf_counter()
                if profiler:
                    profiler.enable()
                result = send_issue(
                    settings, db, ISSUE, backend="sendgrid", observer=observer, renderer=renderer
                )
                send_s = time.perf_counter() - start
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(profile)
                rss_end = rss_mb()
                states = ledger.counts(db, ISSUE)
                segments = len(ledger.get_plan(db, ISSUE).segments)
            stats = fake.stats()
        finally:
            fake.stop()
        db_mb = size_mb(location)

    run, t = result.run, result.run.timings
    sent = states.get("sent", 0)
    deliver_s = sum(t.get(k, 0.0) for k in DELIVER_PARTS)
    figures = {
        "subscribers": subscribers,
        "latency_ms": latency_ms,
        "concurrency": concurrency or 1,
        "eligible": expected["eligible"],
        "recipients": sent,
        "segments": segments,
        "renders": len(renderer.selections),
        "check_renders": renderer.check_renders,
        "requests": stats["requests"],
        "generate_s": generate_s,
        "import_s": imported["seconds"],
        "import_rss_mb": imported["rss_mb"],
        "plan_s": t.get("plan", 0.0),
        "render_s": t.get("render", 0.0),
        "deliver_s": deliver_s,
        **{f"deliver_{k}_s": t.get(k, 0.0) for k in DELIVER_PARTS},
        "other_s": send_s - t.get("plan", 0.0) - t.get("render", 0.0) - deliver_s,
        "check_s": t.get("check", 0.0),
        "send_s": send_s,
        "total_s": imported["seconds"] + send_s,
        "rss_start_mb": rss_start,
        "rss_after_plan_mb": observer.rss_after_plan,
        "rss_peak_mb": rss_end,
        "db_mb": db_mb,
    }
    checks = [
        ("plan segments == distinct selections", segments, expected["segments"]),
        ("renders == distinct selections", len(renderer.selections), expected["segments"]),
        (
            "rendered selections == expected selections",
            sorted(renderer.selections) == expected["selections"],
            True,
        ),
        ("RunStats.renders == renders seen", run.renders, len(renderer.selections)),
        ("planned batches == sum ceil(segment / 1000)", observer.batches, expected["requests"]),
        ("requests == sum ceil(segment / 1000)", stats["requests"], expected["requests"]),
        ("planned recipients == eligible", observer.recipients, expected["eligible"]),
        ("accepted recipients == eligible", stats["accepted_recipients"], expected["eligible"]),
        ("ledger sent == eligible", sent, expected["eligible"]),
        ("ledger rows == eligible (nothing else)", sum(states.values()), expected["eligible"]),
        ("all requests answered 202", stats["responses"], {202: expected["requests"]}),
    ]
    figures["checks_ok"] = all(got == want for _, got, want in checks)
    print_run(figures, checks)
    return figures


# Several workers (`--workers N`, PostgreSQL) ----------------------------------------------------


def send_worker(config: str, location: str, run_id: str) -> None:
    """One worker of a `--workers` run: the product's send, joined to the run; prints its JSON."""
    from newsletter.delivery import prepare_send, run_send

    settings = load_settings(config)
    renderer = CountingRenderer(settings)
    observer = Observer(renderer)
    with Database(location) as db:
        prepared = prepare_send(settings, db, ISSUE, backend="sendgrid", renderer=renderer)
        result = run_send(prepared, observer=observer, run_id=run_id)
    t = result.run.timings
    print(
        json.dumps(
            {
                "timings": t,
                "sent": result.run.sent,
                "batches": result.run.batches,
                "selections": renderer.selections,
                "check_renders": renderer.check_renders,
                "rss_after_plan_mb": observer.rss_after_plan,
                "rss_peak_mb": rss_mb(),
            }
        )
    )


def workers_run(
    ws: Path, location, workers: int, fake, expected, imported, generate_s, latency_ms
) -> dict:
    """Send the run's issue with `workers` processes; their figures, checked (the caller's fake
    is stopped by the caller)."""
    from newsletter.delivery.send import new_run_id
    from newsletter.delivery.workers import run_workers

    command = [
        sys.executable,
        __file__,
        "--send-worker",
        str(ws / "newsletter.yaml"),
        str(location),
        new_run_id(),
    ]
    results: dict[int, dict] = {}
    errors: list[str] = []

    def relay(number: int, line: str, is_error: bool) -> None:
        if is_error:
            errors.append(f"worker {number}: {line}")
        elif line.startswith("{"):
            results[number] = json.loads(line)

    start = time.perf_counter()
    exits, _ = run_workers(command, workers, relay)
    send_s = time.perf_counter() - start
    failed = [e for e in exits if e.failed]
    if failed or len(results) != workers:
        print("\n".join(errors[-20:]), file=sys.stderr)
        raise SystemExit(f"{len(failed)} of {workers} workers failed: {[e.why for e in failed]}")
    with Database(location) as db:
        states = ledger.counts(db, ISSUE)
        segments = len(ledger.get_plan(db, ISSUE).segments)
    stats = fake.stats()
    db_mb = size_mb(location)
    each = [results[n] for n in sorted(results)]

    def slowest(*keys: str) -> float:
        return max(sum(w["timings"].get(k, 0.0) for k in keys) for w in each)

    sent = states.get("sent", 0)
    selections = sorted({tuple(s) for w in each for s in w["selections"]})
    renders = sum(len(w["selections"]) for w in each)
    figures = {
        "subscribers": expected["rows"],
        "latency_ms": latency_ms,
        "concurrency": 0,  # as configured, in each worker
        "workers": workers,
        "eligible": expected["eligible"],
        "recipients": sent,
        "segments": segments,
        "renders": renders,
        "check_renders": sum(w["check_renders"] for w in each),
        "requests": stats["requests"],
        "generate_s": generate_s,
        "import_s": imported["seconds"],
        "import_rss_mb": imported["rss_mb"],
        "plan_s": slowest("plan"),
        "render_s": slowest("render"),
        "deliver_s": slowest(*DELIVER_PARTS),
        **{f"deliver_{k}_s": slowest(k) for k in DELIVER_PARTS},
        "other_s": 0.0,
        "check_s": slowest("check"),
        "send_s": send_s,
        "total_s": imported["seconds"] + send_s,
        "rss_start_mb": 0.0,
        "rss_after_plan_mb": max(w["rss_after_plan_mb"] for w in each),
        "rss_peak_mb": max(w["rss_peak_mb"] for w in each),
        "rss_min_worker_mb": min(w["rss_peak_mb"] for w in each),
        "db_mb": db_mb,
    }
    checks = [
        ("plan segments == distinct selections", segments, expected["segments"]),
        ("rendered selections == expected selections", selections, expected["selections"]),
        ("every worker sent some", all(w["sent"] > 0 for w in each), True),
        ("workers' sent add up to eligible", sum(w["sent"] for w in each), expected["eligible"]),
        # Two workers may each send part of a segment's last batch: one request more at most
        # per segment and extra worker.
        (
            "requests within sum ceil(segment / 1000) + segments x (workers - 1)",
            expected["requests"]
            <= stats["requests"]
            <= expected["requests"] + segments * (workers - 1),
            True,
        ),
        ("accepted recipients == eligible", stats["accepted_recipients"], expected["eligible"]),
        ("ledger sent == eligible", sent, expected["eligible"]),
        ("ledger rows == eligible (nothing else)", sum(states.values()), expected["eligible"]),
        ("all requests answered 202", stats["responses"], {202: stats["requests"]}),
    ]
    figures["checks_ok"] = all(got == want for _, got, want in checks)
    print(
        f"{workers} workers: send {send_s:.2f} s wall; slowest worker: plan "
        f"{figures['plan_s']:.2f} s, render {figures['render_s']:.2f} s, deliver "
        f"{figures['deliver_s']:.2f} s; import {figures['import_s']:.2f} s"
    )
    print(
        "  workers' sent: "
        + ", ".join(f"{w['sent']:,}" for w in each)
        + "; peak RSS MB: "
        + ", ".join(f"{w['rss_peak_mb']:.1f}" for w in each)
        + f"; renders {renders} for {len(selections)} selections"
    )
    print_checks(checks)
    return figures


def print_checks(checks: list) -> None:
    """One line a check: OK, or MISMATCH with what was got and wanted."""
    for label, got, want in checks:
        verdict = "OK" if got == want else "MISMATCH"
        print(f"  {verdict}: {label}" + ("" if got == want else f" (got {got}, want {want})"))


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def print_run(f: dict, checks: list) -> None:
    n = f["recipients"]
    print(
        f"{f['subscribers']:,} subscribers ({f['eligible']:,} eligible), {f['segments']} "
        f"segments; CSV written in {f['generate_s']:.1f} s; database {f['db_mb']:.0f} MB"
    )
    head = f"{'phase':<9}{'wall s':>9}{'recip/s':>12}{'segments':>10}{'renders':>9}"
    print(head + f"{'requests':>10}{'peak RSS MB':>13}")
    rows = [
        ("import", f["import_s"], f["subscribers"], "", "", "", f["import_rss_mb"]),
        ("plan", f["plan_s"], n, f["segments"], "", "", f["rss_after_plan_mb"]),
        ("render", f["render_s"], n, "", f["renders"], "", f["rss_peak_mb"]),
        ("deliver", f["deliver_s"], n, "", "", f["requests"], f["rss_peak_mb"]),
        ("other", f["other_s"], n, "", "", "", ""),
        ("send", f["send_s"], n, f["segments"], f["renders"], f["requests"], f["rss_peak_mb"]),
        ("total", f["total_s"], n, f["segments"], f["renders"], f["requests"], f["rss_peak_mb"]),
    ]
    for name, secs, count, seg, ren, req, rss in rows:
        rss_text = f"{rss:.1f}" if rss != "" else ""
        print(
            f"{name:<9}{secs:>9.2f}{per_second(count, secs):>12}{seg!s:>10}{ren!s:>9}"
            f"{req!s:>10}{rss_text:>13}"
        )
    parts = ", ".join(f"{k} {f[f'deliver_{k}_s']:.2f}" for k in DELIVER_PARTS)
    print(
        f"  deliver = {parts} s; other = checks {f['check_s']:.2f} s "
        f"({f['check_renders']} renders), suppression sync, lock, report"
    )
    print(
        "  send = plan + render + deliver + other (send_issue, the target); total = import + send"
    )
    print(f"  sender RSS: {f['rss_start_mb']:.1f} MB before the send, peak {f['rss_peak_mb']:.1f}")
    print_checks(checks)


# Import and plan only (`--until plan`) ---------------------------------------------------------


PLAN_FIGURES = ("import_s", "plan_s", "import_rss_mb", "plan_rss_mb")


def plan_run(subscribers: int, seed: int, database: str | None) -> dict:
    """Generate, import (in a child), then `write_plan` in this process; checked, timed."""
    from newsletter.content import load_issue, load_summaries, resolve_summaries
    from newsletter.delivery import write_plan

    with (
        tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp,
        run_database(database, make_workspace(Path(tmp))) as location,
    ):
        ws = Path(tmp) / "ws"
        csv_path = Path(tmp) / "subscribers.csv"
        expected = generate(csv_path, subscribers, ws, seed)
        imported = import_in_child(ws, csv_path, location)
        settings = load_settings(ws / "newsletter.yaml")
        issue = load_issue(settings, ISSUE)
        summaries = resolve_summaries(issue, load_summaries(settings))
        with Database(location) as db:
            start = time.perf_counter()
            planned = write_plan(db, settings, issue, summaries)
            plan_s = time.perf_counter() - start
            states = ledger.counts(db, ISSUE)
            segments = len(ledger.get_plan(db, ISSUE).segments)
    figures = {
        "import_s": imported["seconds"],
        "plan_s": plan_s,
        "import_rss_mb": imported["rss_mb"],
        "plan_rss_mb": rss_mb(),
    }
    checks = [
        ("import added == subscribers", imported["added"], subscribers),
        ("write_plan's count == eligible", planned, expected["eligible"]),
        ("ledger pending == eligible (nothing else)", states, {"pending": expected["eligible"]}),
        ("plan segments == distinct selections", segments, expected["segments"]),
    ]
    figures["checks_ok"] = all(got == want for _, got, want in checks)
    print(
        f"import {figures['import_s']:.2f} s (peak RSS {figures['import_rss_mb']:.1f} MB), "
        f"plan {plan_s:.2f} s for {planned:,} rows (peak RSS {figures['plan_rss_mb']:.1f} MB)"
    )
    print_checks(checks)
    return figures


def report_plan(args, runs: list[dict]) -> bool:
    """Medians of the import-and-plan runs, then the JSON line; True if all checks OK."""
    median = {k: statistics.median(r[k] for r in runs) for k in PLAN_FIGURES}
    checks_ok = all(r["checks_ok"] for r in runs)
    print(
        f"\nmedian of {len(runs)} run(s), {args.subscribers:,} subscribers, database "
        f"{shown(args.database)}: import {median['import_s']:.2f} s "
        f"(peak RSS {median['import_rss_mb']:.1f} MB), plan {median['plan_s']:.2f} s "
        f"(peak RSS {median['plan_rss_mb']:.1f} MB); checks {'OK' if checks_ok else 'MISMATCH'}"
    )
    print(
        json.dumps(
            {
                "subscribers": args.subscribers,
                "database": shown(args.database),
                "until": "plan",
                "runs": len(runs),
                "median": {k: round(v, 3) for k, v in median.items()},
                "checks_ok": checks_ok,
                "per_run": [{k: round(v, 3) for k, v in r.items()} for r in runs],
            }
        )
    )
    return checks_ok


# The baseline: one render and one request per subscriber (bench code only) -------------------


def baseline_run(subscribers: int, seed: int, database: str | None = None) -> dict:
    """What sending without segments would cost: a render, two signatures and a request each."""
    import sendgrid

    from newsletter.content import load_issue, load_summaries, resolve_summaries
    from newsletter.store.subscribers import iter_subscribers

    with (
        tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp,
        run_database(database, make_workspace(Path(tmp))) as location,
    ):
        ws = Path(tmp) / "ws"
        csv_path = Path(tmp) / "subscribers.csv"
        expected = generate(csv_path, subscribers, ws, seed)
        import_in_child(ws, csv_path, location)
        settings = load_settings(ws / "newsletter.yaml")
        issue = load_issue(settings, ISSUE)
        summaries = resolve_summaries(issue, load_summaries(settings))
        renderer = Renderer(settings)
        signer = LinkSigner(SECRET)
        base = settings.preferences_base
        fake = start_fake_sendgrid_process(record="counts")
        try:
            use_fake(fake.url)
            client = sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=fake.url)
            client.client.timeout = 30
            sent = 0
            with Database(location) as db:
                start = time.perf_counter()
                for sub in iter_subscribers(db, "subscribed"):
                    chosen = set(settings.topic_slugs) if sub.topics == "all" else set(sub.topics)
                    selection = [s for s in summaries if chosen.intersection(s.topics)]
                    email = renderer.render(issue, selection)
                    values = {
                        "name": sub.name or "reader",
                        "topics": "your topics",
                        "preferences_url": preferences_url(base, signer, sub.id),
                        "unsubscribe_url": unsubscribe_url(base, signer, sub.id),
                    }
                    subs = email.substitutions(values)
                    to = {"email": sub.email}
                    if sub.name:
                        to["name"] = " ".join(sub.name.replace(",", " ").split())
                    body = {
                        "personalizations": [
                            {
                                "to": [to],
                                "headers": {"List-Unsubscribe": f"<{values['unsubscribe_url']}>"},
                                "custom_args": {"newsletter_subscriber": str(sub.id)},
                            }
                        ],
                        "from": {"email": settings.sender.email, "name": settings.sender.name},
                        "subject": email.subject,
                        "content": [
                            {"type": "text/plain", "value": fill(email.text, subs)},
                            {"type": "text/html", "value": fill(email.html, subs)},
                        ],
                    }
                    client.client.mail.send.post(request_body=body)
                    sent += 1
                seconds = time.perf_counter() - start
            stats = fake.stats()
        finally:
            fake.stop()
    ok = stats["requests"] == sent == stats["accepted_recipients"] == expected["eligible"]
    print(
        f"baseline: {sent:,} recipients, {sent} renders, {stats['requests']} requests in "
        f"{seconds:.2f} s = {seconds / sent * 1e6:,.0f} µs a recipient"
    )
    print(f"  {'OK' if ok else 'MISMATCH'}: baseline requests == renders == accepted == eligible")
    return {
        "recipients": sent,
        "seconds": seconds,
        "us_per_recipient": seconds / sent * 1e6,
        "requests": stats["requests"],
        "checks_ok": ok,
    }


# The driver ----------------------------------------------------------------------------------


def child(args: list[str]) -> dict:
    """Run this script with `args` in a fresh process; relay its output, return its JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True
    )
    lines = proc.stdout.rstrip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def report(args, runs: list[dict], baseline: dict | None) -> bool:
    """Print the medians, the ratio and the targets, then the JSON line; True if all checks OK."""
    n = args.subscribers
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "checks_ok"}
    us = median["send_s"] / median["recipients"] * 1e6
    print()
    pace = f"latency {args.latency:g} ms" + (f", {args.bandwidth:g} B/s" if args.bandwidth else "")
    options = (
        f"concurrency {args.concurrency or 'as configured'}"
        + (f", {args.workers} workers" if args.workers > 1 else "")
        + (", gzip" if args.compress else "")
    )
    print(
        f"median of {len(runs)} run(s), {n:,} subscribers ({median['recipients']:,.0f} sent), "
        f"{pace}, {options}, database {shown(args.database)}:"
    )
    for phase in PHASES:
        secs = median[f"{phase}_s"]
        count = n if phase == "import" else median["recipients"]
        print(f"  {phase:<8}{secs:8.2f} s  {per_second(count, secs):>10} /s")
    print(
        f"  send    {median['send_s']:8.2f} s  {per_second(median['recipients'], median['send_s']):>10}"
        f" /s  ({us:.1f} µs a recipient; {median['segments']:.0f} segments, "
        f"{median['renders']:.0f} renders, {median['requests']:.0f} requests)"
    )
    print(f"  peak RSS of the sender {median['rss_peak_mb']:.1f} MB")
    ratio = None
    if baseline:
        ratio = us / baseline["us_per_recipient"]
        print(
            f"per-recipient cost, product / baseline: {us:.1f} / "
            f"{baseline['us_per_recipient']:,.0f} µs = {ratio:.4f} "
            f"({1 / ratio:,.0f}x cheaper than a render and a request each)"
        )
    targets = []
    if n in TARGET_SEND_S:
        targets.append((f"send ≤ {TARGET_SEND_S[n]:g} s", median["send_s"] <= TARGET_SEND_S[n]))
    if n in AIM_SEND_S:
        targets.append((f"send ≤ {AIM_SEND_S[n]:g} s (aim)", median["send_s"] <= AIM_SEND_S[n]))
    if n in TARGET_IMPORT_S:
        targets.append(
            (f"import ≤ {TARGET_IMPORT_S[n]:g} s", median["import_s"] <= TARGET_IMPORT_S[n])
        )
    targets.append((f"peak RSS ≤ {TARGET_RSS_MB:g} MB", median["rss_peak_mb"] <= TARGET_RSS_MB))
    checks_ok = all(r["checks_ok"] for r in runs) and (baseline is None or baseline["checks_ok"])
    targets.append(("every OK check", checks_ok))
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    print(
        json.dumps(
            {
                "subscribers": n,
                "runs": len(runs),
                "median": {k: round(v, 3) for k, v in median.items()},
                "us_per_recipient": round(us, 2),
                "baseline": baseline and {k: round(v, 3) for k, v in baseline.items()},
                "ratio_product_over_baseline": ratio and round(ratio, 5),
                "checks_ok": checks_ok,
                "per_run": [{k: round(v, 3) for k, v in r.items()} for r in runs],
            }
        )
    )
    return checks_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", type=int, default=1000, help="0: no baseline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", metavar="FILE", help="write cProfile stats of the send (of the last run)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="MS", help="the fake answers after MS ms"
    )
    parser.add_argument(
        "--bandwidth", type=float, metavar="BYTES_PER_S", help="the fake's upload bandwidth"
    )
    parser.add_argument(
        "--concurrency", type=int, metavar="N", help="write delivery.concurrency: N (when given)"
    )
    parser.add_argument(
        "--compress", action="store_true", help="write delivery.sendgrid.compress: true"
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://USER@HOST/DB: a fresh database per run on that server (default: SQLite)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="send with N worker processes (PostgreSQL only; 1: in this process)",
    )
    parser.add_argument(
        "--until", choices=["plan"], help="plan: stop each run after the plan (import and plan)"
    )
    # Internal: what the child processes run.
    parser.add_argument("--run-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--import-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--plan-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--send-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers > 1 and not args.database:
        parser.error("--workers above 1 needs --database postgresql://… (SQLite takes one sender)")

    if args.import_worker:
        import_worker(*args.import_worker)
    elif args.send_worker:
        send_worker(*args.send_worker)
    elif args.plan_worker:
        print(json.dumps(plan_run(args.subscribers, args.seed, args.database)))
    elif args.until == "plan":
        runs = []
        database = ["--database", args.database] if args.database else []
        for number in range(1, args.runs + 1):
            print(f"--- run {number} of {args.runs} (import and plan)", flush=True)
            argv = ["--plan-worker", "--subscribers", str(args.subscribers)]
            runs.append(child([*argv, "--seed", str(args.seed), *database]))
        sys.exit(0 if report_plan(args, runs) else 1)
    elif args.run_worker:
        figures = send_run(
            args.subscribers,
            args.seed,
            args.profile,
            latency_ms=args.latency,
            bandwidth=args.bandwidth,
            concurrency=args.concurrency,
            compress=args.compress,
            database=args.database,
            workers=args.workers,
        )
        print(json.dumps(figures))
    elif args.baseline_worker:
        print(json.dumps(baseline_run(args.baseline, args.seed, args.database)))
    else:
        common = ["--seed", str(args.seed)]
        if args.database:
            common += ["--database", args.database]
        runs = []
        for number in range(1, args.runs + 1):
            print(f"--- run {number} of {args.runs}", flush=True)
            extra = ["--profile", args.profile] if args.profile else []
            extra += ["--latency", str(args.latency)]
            if args.bandwidth:
                extra += ["--bandwidth", str(args.bandwidth)]
            if args.concurrency is not None:
                extra += ["--concurrency", str(args.concurrency)]
            if args.compress:
                extra.append("--compress")
            if args.workers > 1:
                extra += ["--workers", str(args.workers)]
            runs.append(
                child(["--run-worker", "--subscribers", str(args.subscribers), *common, *extra])
            )
        baseline = None
        if args.baseline:
            print("--- baseline", flush=True)
            baseline = child(["--baseline-worker", "--baseline", str(args.baseline), *common])
        # A MISMATCH (a wrong count, not a missed target) is a failure.
        sys.exit(0 if report(args, runs, baseline) else 1)


if __name__ == "__main__":
    main()
