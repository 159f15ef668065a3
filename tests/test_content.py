"""Summaries: the shipped examples are valid and varied; each mistake is reported, none hidden."""
# Not both_engines: summary files, no database.

from __future__ import annotations

import datetime as dt

import pytest

from newsletter.content import load_summaries, shorten
from newsletter.errors import ContentError

TODAY = dt.date(2026, 11, 26)

GOOD = """\
title: A good summary
headline: Something was found.
date: 2026-10-01
journal: Neurology
topics: [genetics]
url: https://ms-research.example.org/summaries/good
findings: They found it.
why_it_matters: It matters.
limitations: It is small.
"""


def test_example_summaries_are_valid_and_varied(settings):
    summaries = load_summaries(settings)
    assert len(summaries) >= 12
    topics = {t for s in summaries.values() for t in s.topics}
    assert 8 <= len(topics) <= 10
    dates = sorted(s.date for s in summaries.values())
    assert dates[0] >= dt.date(2026, 9, 1) and dates[-1] <= dt.date(2027, 1, 31)
    assert any(d > TODAY for d in dates), "at least one summary is scheduled after today"


def test_teaser_is_derived_from_headline_at_a_word(settings):
    summaries = load_summaries(settings)
    without = [s for s in summaries.values() if s.teaser is None]
    assert without, "some example summaries rely on the derived teaser"
    for summary in without:
        teaser = summary.card_teaser
        assert len(teaser) <= 100
        if len(summary.headline) > 100:
            assert teaser.endswith("…")
            assert summary.headline.startswith(teaser[:-1])
            assert not summary.headline[len(teaser) - 1].isalnum(), "cut at a word boundary"


def test_shorten_keeps_short_text():
    assert shorten("short  text", 100) == "short text"
    assert shorten("word " * 40, 20) == "word word word word…"


def _write(workspace, name, text):
    (workspace / "summaries" / name).write_text(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("headline: Something was found.", "headline: [unclosed"),
            "YAML syntax error",
        ),
        (
            GOOD.replace("journal: Neurology\n", ""),
            "bad.yaml: field 'journal': required field is missing",
        ),
        (
            GOOD.replace("[genetics]", "[genetics, astrology]"),
            "bad.yaml:5: field 'topics': unknown topic 'astrology' (known topics: treatment-safety",
        ),
        (
            GOOD.replace("2026-10-01", "2026-02-30"),
            "bad.yaml:3: field 'date': '2026-02-30' is not a valid ISO date",
        ),
        (
            GOOD.replace("2026-10-01", "10/1/2026"),
            "bad.yaml:3: field 'date': '10/1/2026' is not a valid ISO date",
        ),
        (
            GOOD.replace("https://ms-research", "javascript://ms-research"),
            "bad.yaml:6: field 'url': URL scheme should be 'http' or 'https'",
        ),
        (GOOD.replace("topics: [genetics]", "topics: []"), "bad.yaml:5: field 'topics'"),
        (GOOD + "colour: blue\n", "bad.yaml:10: field 'colour': unknown field"),
        ("- just\n- a list\n", "bad.yaml: expected a mapping of fields"),
    ],
)
def test_bad_summary_is_reported_with_file_and_field(settings, workspace, text, expected):
    _write(workspace, "bad.yaml", text)
    with pytest.raises(ContentError) as err:
        load_summaries(settings)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_one_bad_file_never_hides_the_others(settings, workspace):
    _write(workspace, "bad-one.yaml", GOOD.replace("journal: Neurology\n", ""))
    _write(workspace, "bad-two.yaml", GOOD.replace("2026-10-01", "soon"))
    _write(workspace, "bad-three.yaml", "title: [\n")
    with pytest.raises(ContentError) as err:
        load_summaries(settings)
    files = {p.split(":")[0].rsplit("/", 1)[-1] for p in err.value.problems}
    assert files == {f"bad-{n}.yaml" for n in ("one", "two", "three")}


def test_empty_summaries_folder(settings, workspace):
    for path in (workspace / "summaries").glob("*.yaml"):
        path.unlink()
    with pytest.raises(ContentError, match="no summaries"):
        load_summaries(settings)


@pytest.mark.parametrize(
    "command",
    [("compose", "--date", "2026-12-01", "--id", "x"), ("check", "2026-12"), ("render", "2026-12")],
)
def test_cli_reports_bad_summaries_and_writes_nothing(run, workspace, command):
    _write(workspace, "bad.yaml", GOOD.replace("[genetics]", "[astrology]"))
    before = sorted(p.name for p in workspace.rglob("*"))
    result = run(*command)
    assert result.exit_code == 1
    assert "summaries/bad.yaml:5: field 'topics': unknown topic 'astrology'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in workspace.rglob("*")) == before
