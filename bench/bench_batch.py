"""Benchmark: what one SendGrid batch of 1000 recipients costs the sender, step by step.

    python bench/bench_batch.py [--batches 50] [--recipients 1000] [--compress] [--profile FILE]

Renders the example issue (all topics) once, makes `--recipients` synthetic recipients with
their signed links (names with accents, commas and quotes, as bench_import's), and sends the same
batch `--batches` times with the real `SendGridBackend` (the official `sendgrid` client) to the
local fake started as a separate process (`--record counts`, answering at once). Each delivery is
timed as a whole and in parts, by timing wrappers put around the functions that do each step:

- body: `SendGridBackend.payload` (the mail-send body as a dict);
- json: the JSON encoding of that body, wherever it happens (`json.dumps` inside
  python_http_client, or `newsletter.sendgrid.request_body.encode`);
- gzip: the compression, with `--compress` (`delivery.sendgrid.compress: true`);
- round trip: `python_http_client.Client._make_request` (urllib: connect, send, the fake's
  parsing and checking, the answer);
- client overhead: the rest of `deliver` (what the HTTP client does around the request: its
  debug log lines are formatted even when logging is off, headers, the opener; our checks).

Prints the median of each in milliseconds a batch, the body's size (and compressed size), and a
JSON object as its last line; each step in wall time and in this thread's CPU time (the CPU
figures hold up on a busy machine, the wall ones do not). The sender's own work is the total
apart from the round trip, which is what concurrency hides behind the provider's latency.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gzip as gzip_module
import importlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_import import FIRST, LAST  # noqa: E402
from bench.bench_send import ISSUE, SECRET, make_workspace, use_fake  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.content import load_issue, load_summaries, resolve_summaries  # noqa: E402
from newsletter.delivery.batch import Batch, BatchResult  # noqa: E402
from newsletter.delivery.message import Personalizer  # noqa: E402
from newsletter.render import Renderer  # noqa: E402
from newsletter.tokens import LinkSigner  # noqa: E402
from tests.fake_sendgrid import start_fake_sendgrid_process  # noqa: E402

STEPS = ("body", "json", "gzip", "round_trip")


class Timer:
    """Seconds spent in each step during the current delivery: wall time, and this thread's
    CPU time (what a busy machine's other processes do not inflate)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.spent = dict.fromkeys(STEPS, 0.0)
        self.cpu = dict.fromkeys(STEPS, 0.0)

    def wrap(self, step: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[step] += time.perf_counter() - start
                self.cpu[step] += time.thread_time() - cpu

        return timed


def instrument(timer: Timer) -> None:
    """Put timing wrappers around each step's function, in whichever form this version has."""
    import python_http_client.client as http_client

    from newsletter.delivery.backends.sendgrid import SendGridBackend

    SendGridBackend.payload = timer.wrap("body", SendGridBackend.payload)
    http_client.Client._make_request = timer.wrap("round_trip", http_client.Client._make_request)
    # The official client encodes with the json module it imported (the path before issue 12).
    shim = type(sys)("json_timed")
    shim.dumps = timer.wrap("json", json.dumps)
    shim.loads = json.loads
    http_client.json = shim
    try:  # issue 12: our own encoder, and gzip when asked for
        request_body = importlib.import_module("newsletter.sendgrid.request_body")
    except ImportError:
        return
    request_body.encode = timer.wrap("json", request_body.encode)
    if hasattr(request_body, "compress"):
        request_body.compress = timer.wrap("gzip", request_body.compress)


def recipients(settings, count: int, seed: int) -> list:
    rng = random.Random(seed)
    personalizer = Personalizer(settings, LinkSigner(SECRET))
    topics = settings.topic_slugs
    out = []
    for i in range(count):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}" if i % 5 else ""
        chosen = "all" if rng.random() < 0.1 else frozenset(rng.sample(topics, rng.randint(1, 4)))
        out.append(
            personalizer.recipient(i + 1, f"reader.{i}@mail{i % 300}.example.org", name, chosen)
        )
    return out


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        ws = make_workspace(Path(tmp))
        if args.compress:
            from bench.bench_send import adjust_settings

            adjust_settings(ws, None, True)
        settings = load_settings(ws / "newsletter.yaml")
        issue = load_issue(settings, ISSUE)
        summaries = resolve_summaries(issue, load_summaries(settings))
        email = Renderer(settings).render(issue, summaries)
        batch = Batch(
            issue_id=ISSUE,
            number=1,
            email=email,
            recipients=recipients(settings, args.recipients, args.seed),
            subject=issue.subject,
        )
        fake = start_fake_sendgrid_process(record="counts")
        try:
            use_fake(fake.url)
            from newsletter.delivery.backends.sendgrid import SendGridBackend

            backend = SendGridBackend(settings)
            timer = Timer()
            instrument(timer)
            rows = []
            profiler = cProfile.Profile() if args.profile else None
            for number in range(args.batches + 1):  # the first one warms up
                timer.reset()
                result = BatchResult()
                if profiler and number:
                    profiler.enable()
                start, cpu = time.perf_counter(), time.thread_time()
                backend.deliver(batch, result)
                total, total_cpu = time.perf_counter() - start, time.thread_time() - cpu
                if profiler and number:
                    profiler.disable()
                if len(result.sent) != len(batch.recipients):
                    raise SystemExit(f"batch {number}: only {len(result.sent)} accepted")
                if number:
                    row = {k: v * 1000 for k, v in timer.spent.items()}
                    row["total"] = total * 1000
                    row["client"] = row["total"] - sum(row[k] for k in STEPS)
                    row.update({f"{k}_cpu": v * 1000 for k, v in timer.cpu.items()})
                    row["total_cpu"] = total_cpu * 1000
                    row["client_cpu"] = row["total_cpu"] - sum(row[f"{k}_cpu"] for k in STEPS)
                    rows.append(row)
            if profiler:
                profiler.dump_stats(args.profile)
            stats = fake.stats()
        finally:
            fake.stop()
        body = json.dumps(SendGridBackend.payload(backend, batch), separators=(",", ":")).encode()
    if stats["accepted_requests"] != args.batches + 1:
        raise SystemExit(f"the fake accepted {stats['accepted_requests']} requests")
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "batches": args.batches,
        "recipients": args.recipients,
        "compress": args.compress,
        "body_bytes": len(body),
        "gzip": {level: gzip_cost(body, level) for level in (1, 6)},
        "median_ms": {k: round(v, 3) for k, v in median.items()},
    }


def gzip_cost(body: bytes, level: int, runs: int = 15) -> dict:
    """The compressed size of the compact JSON body, and the median ms to compress it."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        data = gzip_module.compress(body, level, mtime=0)
        times.append(time.perf_counter() - start)
    return {"bytes": len(data), "ms": round(statistics.median(times) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compress", action="store_true", help="delivery.sendgrid.compress")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of the batches")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    figures = run(args)
    m = figures["median_ms"]
    size = figures["body_bytes"]
    print(
        f"{figures['batches']} batches of {figures['recipients']} recipients, body "
        f"{size / 1e6:.2f} MB of compact JSON"
    )
    for level, cost in figures["gzip"].items():
        print(
            f"  gzip level {level}: {cost['bytes'] / 1e6:.3f} MB ({size / cost['bytes']:.1f}x "
            f"smaller) in {cost['ms']:.2f} ms"
        )
    print(f"median ms a batch: {'wall':>8}{'CPU':>8}")
    for key in ("body", "json", "gzip", "client", "round_trip", "total"):
        print(f"  {key:<17}{m[key]:8.2f}{m[key + '_cpu']:8.2f}")
    print(
        "  the sender's own work (total - round trip): "
        f"{m['total'] - m['round_trip']:.2f} ms wall, "
        f"{m['total_cpu'] - m['round_trip_cpu']:.2f} ms CPU"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
