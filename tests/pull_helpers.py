"""Shared helpers of the `summaries pull` tests: a workspace pointed at the example site, a fixed
clock, and a snapshot of the summaries folder to prove that nothing was written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from newsletter.config import Settings, load_settings
from newsletter.pull import PullReport, pull_summaries

REPO = Path(__file__).resolve().parent.parent
FIXED_NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return FIXED_NOW


def configure(workspace: Path, site, clear: bool = True, **source) -> Settings:
    """Point the workspace's settings at the example site (`source` overrides other settings of
    the source block) and, with `clear`, empty its summaries folder."""
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["source"] = {**data["source"], "feed_url": f"{site.url}/feed.xml", **source}
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if clear:
        for summary in (workspace / "summaries").glob("*.yaml"):
            summary.unlink()
    return load_settings(path)


def pull(settings: Settings, feed_url: str | None = None, **options) -> PullReport:
    options.setdefault("now", clock)
    return pull_summaries(settings, feed_url, **options)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (hidden ones too): its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def summary_files(workspace: Path) -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8") for p in sorted((workspace / "summaries").glob("*"))
    }


def without_source(text: str) -> dict:
    """A summary file's fields, without the pull's `source:` block."""
    data = yaml.safe_load(text)
    data.pop("source", None)
    return data


def original(slug: str) -> dict:
    """The repository's own summary file, which the example site publishes."""
    return yaml.safe_load((REPO / "summaries" / f"{slug}.yaml").read_text(encoding="utf-8"))


def actions(report: PullReport) -> dict[str, list[str]]:
    """Summary ids (or URLs when no id) by what happened to them."""
    found: dict[str, list[str]] = {}
    for item in report.items:
        found.setdefault(item.action, []).append(item.summary_id or item.url)
    return found
