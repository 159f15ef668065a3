"""Time one render (Jinja2 → MJML → premailer, plus the text part) of an issue, all topics.

    python bench/bench_render.py [ISSUE] [--runs N]

Prints the median and spread; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from newsletter.config import load_settings
from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.render import Renderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issue", nargs="?", default="2026-12")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--config", default=None)
    args = parser.parse_args()

    settings = load_settings(args.config)
    issue = load_issue(settings, args.issue)
    summaries = resolve_summaries(issue, load_summaries(settings))
    renderer = Renderer(settings)
    renderer.render(issue, summaries)  # warm up: template compilation, imports

    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        email = renderer.render(issue, summaries)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        f"issue {issue.id}: {len(summaries)} summaries, HTML {len(email.html.encode()) / 1024:.1f} KB"
    )
    print(
        f"one render: median {median * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {args.runs} runs"
    )
    print(
        json.dumps(
            {
                "issue": issue.id,
                "runs": args.runs,
                "median_ms": round(median * 1000, 2),
                "min_ms": round(min(times) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
                "html_bytes": len(email.html.encode()),
            }
        )
    )


if __name__ == "__main__":
    main()
