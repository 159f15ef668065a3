"""`newsletter check`: passes on the example issue; each problem on its own line, exit 1."""

from __future__ import annotations

import pytest


def test_example_issue_passes(run):
    result = run("check", "2026-12")
    assert result.exit_code == 0, result.stderr
    assert "8 summaries" in result.stdout
    assert "all checks passed" in result.stdout


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_unknown_summary_ids_each_on_a_line(run, workspace):
    _edit(
        workspace / "issues" / "2026-12.yaml", "- oct-optic-neuritis", "- no-such-one\n- nor-this"
    )
    result = run("check", "2026-12")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert "error: issues/2026-12.yaml: field 'summaries': no summary named 'no-such-one'" in lines
    assert "error: issues/2026-12.yaml: field 'summaries': no summary named 'nor-this'" in lines


def test_invalid_summary_is_reported_not_called_unknown(run, workspace):
    _edit(workspace / "summaries" / "oct-optic-neuritis.yaml", "date: 2026-11-04", "date: someday")
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert "summaries/oct-optic-neuritis.yaml:5: field 'date'" in result.stderr
    assert "no summary named" not in result.stderr


def test_html_over_the_size_limit(run, workspace):
    _edit(workspace / "newsletter.yaml", "max_summaries: 8", "max_summaries: 8\nmax_html_kb: 10")
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert "2026-12 (all topics): HTML is 30 KB, over the limit of 10 KB" in result.stderr


def test_missing_disclaimer(run, workspace):
    _edit(
        workspace / "templates" / "email" / "issue.mjml.j2",
        "{% for paragraph in disclaimer_paragraphs %}",
        "{% for paragraph in [] %}",
    )
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert "HTML part is missing the research disclaimer" in result.stderr
    assert "text part is missing" not in result.stderr


@pytest.mark.parametrize(
    ("template", "old", "expected"),
    [
        (
            "issue.txt.j2",
            "Unsubscribe: {{ recipient.unsubscribe_url }}",
            "text part has no unsubscribe link",
        ),
        (
            "issue.mjml.j2",
            '<a href="{{ recipient.preferences_url }}">Manage preferences</a>',
            "HTML part has no preferences link",
        ),
    ],
)
def test_missing_unsubscribe_or_preferences_link(run, workspace, template, old, expected):
    _edit(workspace / "templates" / "email" / template, old, "")
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("template", "old", "new", "marker"),
    [
        ("issue.txt.j2", "WHY IT MATTERS", "{% raw %}{{ why }}{% endraw %}", "'{{'"),
        ("issue.txt.j2", "LIMITATIONS", "{% raw %}{% if x %}{% endraw %}", "'{%'"),
        ("issue.mjml.j2", "<h3>Limitations</h3>", '<mj-image src="x" />', "'<mj-'"),
    ],
)
def test_anything_left_unrendered(run, workspace, template, old, new, marker):
    _edit(workspace / "templates" / "email" / template, old, new)
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert f"has unrendered template text {marker}" in result.stderr


def test_relative_link_is_reported(run, workspace):
    _edit(
        workspace / "templates" / "email" / "issue.mjml.j2",
        "<h2>More research this month</h2>",
        '<h2>More research this month</h2><a href="/archive">Archive</a>',
    )
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert "HTML link is not absolute: '/archive'" in result.stderr


def test_unknown_issue(run):
    result = run("check", "2099-01")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == "error: issues/2099-01.yaml: issue not found (compose it with `newsletter compose`)"
    )
