"""`newsletter check`: passes on the example issue; each problem on its own line, exit 1."""
# Not both_engines: the issue and summary files, no database.

from __future__ import annotations

import re

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
    assert re.search(
        r"2026-12 \(all topics\): HTML is \d\d KB, over the limit of 10 KB", result.stderr
    )


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
            "text part has no unsubscribe link ({{ recipient.unsubscribe_url }})",
        ),
        (
            "issue.mjml.j2",
            '<a href="{{ recipient.preferences_url }}">Manage preferences</a>',
            "HTML part has no preferences link ({{ recipient.preferences_url }})",
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
        ("issue.mjml.j2", "<h4>Limitations</h4>", '<mj-image src="x" />', "'<mj-'"),
    ],
)
def test_anything_left_unrendered_names_the_template(run, workspace, template, old, new, marker):
    _edit(workspace / "templates" / "email" / template, old, new)
    result = run("check", "2026-12")
    assert result.exit_code == 1
    part = "text" if template.endswith(".txt.j2") else "HTML"
    assert (
        f"error: templates/email/{template}: 2026-12 (all topics): {part} part has unrendered "
        f"template text {marker}"
    ) in result.stderr.splitlines()


def test_summary_text_that_looks_like_template_syntax_is_only_text(run, workspace):
    """A summary about templates or MJML is content, not a template left unrendered."""
    lookalike = "Tools write {{ name }}, {% if x %} and <mj-text> in their templates."
    path = workspace / "summaries" / "pregnancy-breastfeeding-therapy.yaml"
    text = path.read_text()
    text = text.replace("findings: >-\n", f"findings: >-\n  {lookalike}\n", 1)
    text = text.replace("source_url: https://doi.org/", "source_url: https://doi.org/x?q={{a}}&", 1)
    path.write_text(text)
    _edit(workspace / "issues" / "2026-12.yaml", "Welcome to", "{{ Welcome }} <mj-raw> to")

    result = run("check", "2026-12")

    assert result.exit_code == 0, result.stderr
    assert "unrendered template text" not in result.output
    plain = run("render", "2026-12", "--format", "text").stdout
    assert lookalike in " ".join(plain.split())
    assert "{{ Welcome }} <mj-raw> to" in plain
    html = run("render", "2026-12").stdout
    assert "Tools write {{ name }}, {% if x %} and &lt;mj-text&gt; in their templates." in html


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
