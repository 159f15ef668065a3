"""`newsletter report ISSUE --clicks`, `report --topics [--since]` and their `--html` page:
per summary, the readers who clicked against the recipients who got it, scanners left out; the
page, opened in Chromium, has one bar per summary as long as its share."""

from __future__ import annotations

import pytest

from newsletter.sendgrid.webhooks import apply_events
from newsletter.store import open_database
from tests.support.browser import readability_problems
from tests.support.clicks import (
    DELIVERED_AT,
    GUT,
    PEOPLE,
    PREGNANCY,
    TREM2,
    VARIANTS,
    add_subscribers,
    click,
    delivered,
    link_to,
    send_example,
)
from tests.support.delivery import ISSUE

pytestmark = pytest.mark.both_engines

T0 = DELIVERED_AT
# Readers / audience: Ana, Dee and Eve get every summary, Ben the variants one, Cy gut and
# variants. Dee's scanner follows five links at once and counts nowhere but "automated".
WIDE = {"COLUMNS": "200"}  # titles on one line each
SHARES = {PREGNANCY: 1 / 3, GUT: 2 / 4, VARIANTS: 1 / 5}


@pytest.fixture
def clicked(settings, workspace):
    db = open_database(settings)
    add_subscribers(db, PEOPLE)
    r = {k.split("@")[0]: v for k, v in send_example(settings, db).items()}
    ana, ben, cy, dee = r["ana"], r["ben"], r["cy"], r["dee"]
    events = [delivered(x) for x in r.values()] + [
        click(ana, link_to(ana, f"summaries/{PREGNANCY}"), T0 + 600),
        click(ana, link_to(ana, f"summaries/{GUT}"), T0 + 700),
        click(ana, link_to(ana, f"summaries/{GUT}"), T0 + 800),
        click(ben, link_to(ben, f"summaries/{VARIANTS}"), T0 + 300),
        click(cy, link_to(cy, f"summaries/{GUT}"), T0 + 400),
        *(
            click(dee, link_to(dee, f"summaries/{s}"), T0 + 3600)
            for s in (PREGNANCY, GUT, VARIANTS, TREM2, "oct-optic-neuritis")
        ),
    ]
    report = apply_events(settings, db, events)
    assert report.applied == len(events) and not report.unmatched
    db.close()
    return r


def test_clicks_per_summary_on_the_command_line(run, clicked):
    result = run("report", ISSUE, "--clicks", env=WIDE)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "5 clicks by people on 5 emails; 5 automated" in out
    for title in ("Pregnancy and breastfeeding", "Certain gut bacteria", "MS risk variants"):
        assert title in out
    for figures in ("1 of 3", "33.3%", "2 of 4", "50.0%", "1 of 5", "20.0%", "0 of 3"):
        assert figures in out, figures


def test_topics_over_issues_since_a_date(run, clicked):
    result = run("report", "--topics", "--since", "2026-01-01", env=WIDE)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"1 issue sent since 2026-01-01: {ISSUE}" in out
    assert "Gut microbiome" in out and "Genetics" in out and "Women's health" in out
    gut = out[out.index("Gut microbiome") :]
    assert "Certain gut bacteria" in gut and "2 of 4" in gut

    later = run("report", "--topics", "--since", "2099-01-01")
    assert later.exit_code == 0
    assert "no clicks recorded for issues sent since 2099-01-01" in later.stdout


def bar_widths(browser, path) -> dict[str, float]:
    """Each summary's bar as a share of its track, as Chromium lays the page out; and every
    request the page made."""
    page = browser.new_page(viewport={"width": 800, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(path.as_uri())
        widths = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('li.summary')].map(li => [
                li.dataset.summary,
                li.querySelector('.bar').getBoundingClientRect().width
                    / li.querySelector('.track').getBoundingClientRect().width]))"""
        )
        texts = page.evaluate("() => document.body.innerText")
        bold = page.evaluate("() => document.querySelectorAll('b, script').length")
        assert readability_problems(page, 800) == []
        page.set_viewport_size({"width": 375, "height": 800})  # a phone
        assert readability_problems(page, 375) == []
    finally:
        page.close()
    return widths, requests, texts, bold


def test_the_html_page_shows_one_bar_per_summary_as_long_as_its_share(
    run, clicked, workspace, browser
):
    # A title that looks like markup stays text on the page.
    path = workspace / "summaries" / f"{GUT}.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "title: Certain gut bacteria", "title: <b>Certain</b> gut bacteria & <script>"
        ),
        encoding="utf-8",
    )
    page = workspace / "clicks.html"

    result = run("report", ISSUE, "--clicks", "--html", str(page))

    assert result.exit_code == 0, result.output
    widths, requests, texts, markup = bar_widths(browser, page)
    assert requests == [page.as_uri()]  # nothing else: no script, font or stylesheet
    assert len(widths) == 8  # one bar per summary of the issue
    top = max(SHARES.values())
    for summary_id, width in widths.items():
        assert width == pytest.approx(SHARES.get(summary_id, 0) / top, abs=0.01), summary_id
    assert "<b>Certain</b> gut bacteria & <script>" in texts
    assert markup == 0


def test_the_topics_page_has_a_chart_per_topic(run, clicked, workspace, browser):
    page = workspace / "topics.html"

    result = run("report", "--topics", "--html", str(page))

    assert result.exit_code == 0, result.output
    widths, requests, texts, _ = bar_widths(browser, page)
    assert requests == [page.as_uri()]
    assert "Gut microbiome" in texts and "Genetics" in texts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--clicks"], "give an ISSUE to report on, or --topics"),
        (["report", ISSUE, "--topics"], "--topics reports over every issue"),
        (["report", "--topics", "--since", "last month"], "--since 'last month': not a date"),
        (["report", ISSUE, "--since", "2026-01-01"], "--since goes with --topics"),
        (["report", ISSUE, "--html", "x.html"], "--html writes the click report"),
        (["report", ISSUE, "--clicks", "--html", "no/such/folder/x.html"], "no/such/folder"),
    ],
)
def test_mistakes_get_one_line_and_exit_1(run, clicked, args, message):
    result = run(*args)

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert message in line


def test_an_issue_never_sent_has_no_click_report(run):
    result = run("report", ISSUE, "--clicks")

    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"error: issue {ISSUE} has not been sent: it has no clicks to report"
    )
