"""`newsletter compose`: the latest unused, published summaries, newest first, capped."""
# Not both_engines: summary and issue files, no database.

from __future__ import annotations

import datetime as dt

import yaml

from newsletter.config import load_settings
from newsletter.content import load_issue
from tests.support.content import NEWEST_EIGHT


def _clear_issues(workspace):
    for path in (workspace / "issues").glob("*.yaml"):
        path.unlink()


def test_compose_picks_newest_published_first(run, workspace):
    _clear_issues(workspace)
    result = run("compose", "--date", "2026-12-01")
    assert result.exit_code == 0, result.stderr
    issue = load_issue(load_settings(workspace / "newsletter.yaml"), "2026-12")
    assert issue.summaries == NEWEST_EIGHT
    assert issue.date == dt.date(2026, 12, 1)
    # Summaries dated after the issue date (2026-12-31, 2027-01-15) are not yet published.
    assert "il10-womens-health" not in issue.summaries
    assert issue.subject and issue.preheader
    for sid in NEWEST_EIGHT:
        assert sid in result.stdout
    assert "4 more eligible summaries" in result.stdout
    assert "Wrote" in result.stdout


def test_compose_skips_summaries_used_by_other_issues(run, workspace):
    # The shipped issue 2026-12 already holds the eight newest.
    result = run("compose", "--date", "2026-12-01", "--id", "2026-12-extra")
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load((workspace / "issues" / "2026-12-extra.yaml").read_text())
    assert data["summaries"] == [
        "exercise-fatigue-walking",
        "heat-sensitivity-cooling",
        "central-vein-sign-mri",
        "dmt-liver-safety-registry",
    ]


def test_nothing_new_is_exit_1_and_no_file(run, workspace):
    assert run("compose", "--date", "2026-12-01", "--id", "a").exit_code == 0
    result = run("compose", "--date", "2026-12-01", "--id", "b")
    assert result.exit_code == 1
    assert "nothing new to compose" in result.stderr
    assert not (workspace / "issues" / "b.yaml").exists()


def test_max_caps_the_issue(run, workspace):
    _clear_issues(workspace)
    result = run("compose", "--date", "2027-01-31", "--max", "3")
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load((workspace / "issues" / "2027-01.yaml").read_text())
    assert data["summaries"] == [
        "enterovirus-anti-cd20",
        "il10-womens-health",
        "pregnancy-breastfeeding-therapy",
    ]


def test_default_date_is_today(run, workspace):
    _clear_issues(workspace)
    result = run("compose")
    assert result.exit_code == 0, result.stderr
    today = dt.date.today()
    data = yaml.safe_load((workspace / "issues" / f"{today:%Y-%m}.yaml").read_text())
    assert str(data["date"]) == today.isoformat()


def test_existing_issue_is_never_overwritten_without_force(run, workspace):
    path = workspace / "issues" / "2026-12.yaml"
    edited = path.read_text().replace("subject:", "subject: EDITED", 1)
    path.write_text(edited)
    result = run("compose", "--date", "2026-12-01")
    assert result.exit_code == 1
    assert "exists already; use --force" in result.stderr
    assert path.read_text() == edited
    result = run("compose", "--date", "2026-12-01", "--force")
    assert result.exit_code == 0, result.stderr
    assert "EDITED" not in path.read_text()
    assert yaml.safe_load(path.read_text())["summaries"] == NEWEST_EIGHT


def test_bad_date_is_a_usage_error(run, workspace):
    result = run("compose", "--date", "1 December")
    assert result.exit_code == 2
    assert "--date" in result.stderr
