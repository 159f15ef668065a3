"""Control characters (form feed, escape, vertical tab, C1 codes) in summaries, issues and settings
are refused when the file is read, with an error naming the file and field, never an MJML error."""
# Not both_engines: content and settings files, no database.

from __future__ import annotations

import re

import pytest
import yaml

ISSUE = "2026-12"
SUMMARY = "pregnancy-breastfeeding-therapy"  # the issue's first summary

CONTROL = {
    "form feed": "\x0c",
    "escape": "\x1b",
    "vertical tab": "\x0b",
    "NUL": "\x00",
    "C1 control sequence introducer": "\x9b",
}
CODES = {"\x0c": "U+000C form feed", "\x1b": "U+001B escape", "\x0b": "U+000B vertical tab"}


def rewrite(path, change):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def set_field(data, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[last] = value


def refused(result, where: str, field: str, char: str):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "MJML" not in result.stderr
    code = CODES.get(char, f"U+{ord(char):04X}")
    pattern = (
        rf"^error: {re.escape(where)}:\d+: field '{re.escape(field)}': holds a control "
        rf"character \({re.escape(code)}"
    )
    assert re.search(pattern, result.stderr, re.M), result.stderr


SUMMARY_FIELDS = [
    "title", "headline", "journal", "findings", "why_it_matters", "limitations", "teaser"
]  # fmt: skip


def each_field_and_each_character(fields):
    """Every field, and every kind of control character, at least once (not every pair)."""
    chars = list(CONTROL.items())
    count = max(len(fields), len(chars))
    return [
        pytest.param(
            fields[i % len(fields)],
            chars[i % len(chars)][1],
            id=f"{fields[i % len(fields)]}-{chars[i % len(chars)][0]}",
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(("field", "char"), each_field_and_each_character(SUMMARY_FIELDS))
def test_control_character_in_a_summary_is_refused_naming_file_and_field(
    run, workspace, field, char
):
    path = workspace / "summaries" / f"{SUMMARY}.yaml"
    rewrite(path, lambda d: set_field(d, field, f"Before{char}after the character"))

    result = run("check", ISSUE)

    refused(result, f"summaries/{SUMMARY}.yaml", field, char)


@pytest.mark.parametrize(
    ("field", "char"), each_field_and_each_character(["subject", "preheader", "intro"])
)
def test_control_character_in_the_issue_is_refused_naming_file_and_field(
    run, workspace, field, char
):
    path = workspace / "issues" / f"{ISSUE}.yaml"
    rewrite(path, lambda d: set_field(d, field, f"December{char}issue"))

    for command in (("check", ISSUE), ("render", ISSUE), ("send", ISSUE, "--yes")):
        result = run(*command)
        refused(result, f"issues/{ISSUE}.yaml", field, char)


@pytest.mark.parametrize("field", ["name", "postal_address", "sender.name", "topics.0.label"])
def test_control_character_in_the_settings_is_refused_naming_file_and_field(run, workspace, field):
    rewrite(workspace / "newsletter.yaml", lambda d: set_field(d, field, "MS\x1b[31m Research"))

    result = run("check", ISSUE)

    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: newsletter.yaml: field '{field}': holds a control character (U+001B escape)"
    ), result.stderr


def test_paragraphs_keep_line_breaks_and_tabs(run, workspace):
    path = workspace / "summaries" / f"{SUMMARY}.yaml"
    rewrite(path, lambda d: set_field(d, "findings", "First line,\nsecond line\tafter a tab."))
    rewrite(
        workspace / "issues" / f"{ISSUE}.yaml",
        lambda d: set_field(d, "intro", "Welcome.\n\nA second\tparagraph."),
    )

    result = run("check", ISSUE)

    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("field", ["title", "subject"])
def test_a_line_break_in_a_one_line_field_is_refused(run, workspace, field):
    if field == "title":
        path, where = workspace / "summaries" / f"{SUMMARY}.yaml", f"summaries/{SUMMARY}.yaml"
    else:
        path, where = workspace / "issues" / f"{ISSUE}.yaml", f"issues/{ISSUE}.yaml"
    rewrite(path, lambda d: set_field(d, field, "Two\nlines"))

    result = run("check", ISSUE)

    assert result.exit_code == 1
    assert re.search(
        rf"^error: {re.escape(where)}:\d+: field '{field}': must be a single line",
        result.stderr,
        re.M,
    ), result.stderr
