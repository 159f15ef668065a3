"""Pulled summaries go through compose → check → render unchanged: the example issue rendered from
summaries pulled off the example site is the golden text of the hand-written ones, byte for byte."""
# Not both_engines: pulled summary files, no database.

from __future__ import annotations

import shutil

import yaml

from newsletter.content import load_issue
from tests.pull_helpers import REPO, configure, summary_files
from tests.support.content import GOLDEN, NEWEST_EIGHT


def test_pulled_summaries_compose_check_and_render_to_the_golden_text(example_site, workspace, run):
    settings = configure(workspace, example_site)  # no summaries: everything comes from the site
    for path in (workspace / "issues").glob("*.yaml"):
        path.unlink()
    result = run("compose", "--pull", "--date", "2026-12-01")
    assert result.exit_code == 0, result.stderr
    assert "14 new written" in result.stdout
    assert all("source:\n  entry_id: tag:" in text for text in summary_files(workspace).values())
    assert load_issue(settings, "2026-12").summaries == NEWEST_EIGHT

    # The editor writes the subject and intro: here, the example issue's own.
    shutil.copy(REPO / "issues" / "2026-12.yaml", workspace / "issues" / "2026-12.yaml")
    result = run("check", "2026-12")
    assert result.exit_code == 0, result.stderr
    assert "all checks passed" in result.stdout
    result = run("render", "2026-12", "--format", "text")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOLDEN.read_text(encoding="utf-8")
    html = run("render", "2026-12").stdout
    assert "Staying on selected MS therapies in early pregnancy" in html
    assert "sha256:" not in html and "tag:ms-research" not in html  # the source block stays out


def test_compose_pull_stops_when_the_pull_fails(example_site, workspace, run):
    configure(workspace, example_site)
    for path in (workspace / "issues").glob("*.yaml"):
        path.unlink()
    example_site.answer("/summaries/oct-optic-neuritis", status=500, body="down")
    result = run("compose", "--pull", "--date", "2026-12-01")
    assert result.exit_code == 1
    assert "error: " in result.stderr and "oct-optic-neuritis: HTTP 500" in result.stderr
    assert not list((workspace / "issues").glob("*.yaml"))  # nothing composed


def test_the_source_block_is_validated_by_the_loader(example_site, workspace, run):
    configure(workspace, example_site)
    assert run("summaries", "pull").exit_code == 0
    path = workspace / "summaries" / "oct-optic-neuritis.yaml"
    data = yaml.safe_load(path.read_text())
    data["source"]["content_hash"] = "md5:abc"
    data["source"]["colour"] = "blue"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert "summaries/oct-optic-neuritis.yaml:" in result.stderr
    assert "field 'source.content_hash': String should match pattern" in result.stderr
    assert "field 'source.colour': unknown field" in result.stderr
