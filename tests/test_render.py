"""Rendering: the right summaries per topic choice, the email's quality bars, escaping, placeholders."""
# Not both_engines: rendering, no database.

from __future__ import annotations

import os
import re
from html.parser import HTMLParser

import lxml.html
import pytest

from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.errors import TemplateError
from newsletter.render import (
    Renderer,
    fill,
    preview_values,
    select_summaries,
)
from tests.support.content import GOLDEN


@pytest.fixture
def issue(settings):
    return load_issue(settings, "2026-12")


@pytest.fixture
def summaries(settings, issue):
    return resolve_summaries(issue, load_summaries(settings))


@pytest.fixture
def email(settings, issue, summaries):
    return Renderer(settings).render(issue, summaries)


class Page(HTMLParser):
    """Collects what the structural checks need from an HTML email."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[tuple[str, str]] = []  # (innermost open tag, text)
        self._stack: list[str] = []
        self.title = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "img", "meta", "link", "hr", "input"):
            self._stack.append(tag)

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop() == tag:
                break

    def handle_data(self, data):
        if self._stack and self._stack[-1] == "title":
            self.title += data
        elif data.strip():
            self.text.append((self._stack[-1] if self._stack else "", data.strip()))

    def all(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def visible_text(self) -> str:
        return " ".join(t for tag, t in self.text if tag not in ("style", "script"))


# Which summaries -----------------------------------------------------------------------------


def test_selection_keeps_issue_order_and_matches_any_topic(summaries):
    chosen = select_summaries(summaries, ["genetics", "womens-health"])
    assert [s.id for s in chosen] == [
        "pregnancy-breastfeeding-therapy",
        "risk-variants-brain-methylation",
    ]
    assert select_summaries(summaries, "all") == summaries
    assert select_summaries(summaries, ["repair-remyelination"])[0].id == "trem2-microglia-repair"


def test_first_summary_in_full_the_rest_as_cards(settings, issue, summaries):
    chosen = select_summaries(summaries, ["genetics", "gut-microbiome", "diagnosis-imaging"])
    email = Renderer(settings).render(issue, chosen)
    first, *rest = chosen
    text = " ".join(email.text.split())
    html_text = Page(email.html).visible_text
    for body in (text, html_text):
        for paragraph in (first.headline, first.findings, first.why_it_matters, first.limitations):
            assert " ".join(paragraph.split()) in body
        for card in rest:
            assert card.title in body
            assert card.card_teaser in body
            assert card.findings not in body  # cards are short
    # Summaries outside the selection are absent.
    for other in summaries:
        if other not in chosen:
            assert other.title not in text
            assert other.title not in html_text
    # "Read the full summary" for the first; each card's title is its link; original paper link.
    assert "Read the full summary" in email.html
    links = {a.text_content(): a.get("href") for a in lxml.html.fromstring(email.html).iter("a")}
    for card in rest:
        assert links[card.title].startswith(str(card.url))
    assert "Read more" not in html_text
    with_paper = next(s for s in chosen if s.source_url)
    shown_first = Renderer(settings).render(issue, [with_paper, first])
    assert str(with_paper.source_url) in shown_first.html
    assert str(with_paper.source_url) in shown_first.text
    assert f"The original paper in {with_paper.journal}" in shown_first.text


def test_disclaimer_names_only_the_journals_in_this_email(settings, issue, summaries):
    chosen = select_summaries(summaries, ["genetics"])
    email = Renderer(settings).render(issue, chosen)
    assert "Nature Genetics" in email.disclaimer
    assert "Neurology" not in email.disclaimer.replace("Nature Genetics", "")
    full = Renderer(settings).render(issue, summaries)
    for journal in {s.journal for s in summaries}:
        assert journal in full.disclaimer
    assert " ".join(full.disclaimer.split()) in " ".join(full.text.split())


# Per-recipient placeholders ------------------------------------------------------------------


def test_placeholders_survive_mjml_and_premailer_in_hrefs(email):
    hrefs = [a.get("href") for a in Page(email.html).all("a")]
    html_markers, text_markers = email.placeholders.html, email.placeholders.text
    assert html_markers["unsubscribe_url"] in hrefs
    assert html_markers["preferences_url"] in hrefs
    assert html_markers["name"] in email.html
    assert html_markers["topics"] in email.html
    for name in ("unsubscribe_url", "preferences_url", "name", "topics"):
        assert text_markers[name] in email.text


def test_fill_escapes_html_values_but_not_text_values(email, settings):
    values = preview_values(settings, "all") | {"name": 'Ana & "Jo" <b>'}
    subs = email.substitutions(values)
    html = fill(email.html, subs)
    text = fill(email.text, subs)
    assert "Hello Ana &amp; &quot;Jo&quot; &lt;b&gt;," in html
    assert 'Hello Ana & "Jo" <b>,' in text
    assert "%%" not in html and "%%" not in text


# Links ---------------------------------------------------------------------------------------


def test_site_links_carry_utm_and_other_links_do_not(email, settings):
    hrefs = [a["href"] for a in Page(email.html).all("a") if "href" in a]
    site = [h for h in hrefs if h.startswith(settings.site)]
    assert site, "links to the site"
    for href in site:
        assert "utm_source=newsletter" in href
        assert "utm_medium=email" in href
        assert "utm_campaign=2026-12" in href
    for href in hrefs:
        if href.startswith("https://doi.org/"):
            assert "utm_" not in href


def test_every_link_is_absolute(email):
    for attrs in Page(email.html).all("a"):
        href = attrs.get("href", "")
        assert href in email.placeholders.html.values() or re.match(r"^https://", href), href


# The quality bars ----------------------------------------------------------------------------


def test_html_size_is_under_60_kb(email):
    assert len(email.html.encode("utf-8")) <= 60 * 1024


def test_nothing_is_fetched_from_elsewhere(email):
    page = Page(email.html)
    assert page.all("link") == []
    assert "@import" not in email.html
    assert "fonts.googleapis" not in email.html
    assert "@font-face" not in email.html
    assert page.all("img") == [] or all(i["src"].startswith("https://") for i in page.all("img"))
    assert "-apple-system" in email.html  # a system font stack


def test_document_language_title_and_preheader(email, issue):
    page = Page(email.html)
    assert page.all("html")[0]["lang"] == "en"
    assert page.title.strip() == issue.subject
    hidden = [
        attrs
        for tag, attrs in page.tags
        if tag == "div" and "display:none" in attrs.get("style", "").replace(" ", "")
    ]
    assert hidden, "a hidden preheader"
    assert issue.preheader.split("…")[0][:40] in email.html


def test_real_headings(email, summaries):
    page = Page(email.html)
    headings = {tag: [t for tg, t in page.text if tg == tag] for tag in ("h1", "h2", "h3", "h4")}
    assert headings["h1"] == ["MS Research Monthly · December 2026"]
    assert headings["h2"] == ["Featured study", "More research this month", "About this research"]
    # Card titles are links, so their text sits in an <a> inside the <h3>.
    card_titles = [t for tg, t in page.text if tg == "a" and t in {s.title for s in summaries}]
    assert headings["h3"] + card_titles == [s.title for s in summaries]
    assert headings["h4"] == ["What the study found", "Why it matters", "Limitations"]


def test_body_text_is_at_least_16px(email):
    # MJML sets font-size:0 on layout wrappers (to remove gaps between inline blocks) and 1px on
    # dividers and the hidden preheader; none of them shows text. Every size that text can have is at least 16px (the browser test checks computed
    # sizes too).
    sizes = [int(px) for px in re.findall(r"font-size:\s*(\d+)px", email.html)]
    assert sizes and min(px for px in sizes if px > 1) >= 16


# Escaping ------------------------------------------------------------------------------------


def test_html_and_script_in_summary_text_is_rendered_as_text(settings, workspace, issue):
    path = workspace / "summaries" / "oct-optic-neuritis.yaml"
    text = path.read_text()
    text = text.replace("title: ", "title: <script>alert('x')</script> <b>Bold</b> & ", 1)
    text = text.replace(
        "findings: >-", "findings: >-\n  <img src=x onerror=alert(1)> Tom & Jerry <i>it</i>", 1
    )
    path.write_text(text)
    summaries = resolve_summaries(issue, load_summaries(settings))
    chosen = [s for s in summaries if s.id == "oct-optic-neuritis"]
    email = Renderer(settings).render(issue, chosen)
    assert "<script>" not in email.html
    assert "<img" not in email.html
    assert "<b>Bold</b>" not in email.html
    assert "&lt;script&gt;alert(" in email.html
    assert "&lt;img src=x onerror=alert(1)&gt; Tom &amp; Jerry" in email.html
    # The text part carries the characters as they are: it is text.
    assert "<script>alert('x')</script> <b>Bold</b> & " in email.text
    assert "Tom & Jerry <i>it</i>" in email.text


# Text part -----------------------------------------------------------------------------------


def test_text_part_holds_titles_links_disclaimer_and_footer(email, summaries, settings):
    text = email.text
    flat = " ".join(text.split())
    assert summaries[0].headline in flat
    for summary in summaries:
        assert summary.title in flat
        assert str(summary.url) in text
    for url in re.findall(r'href="(https://[^"]+)"', email.html):
        assert url.replace("&amp;", "&") in text, url
    assert " ".join(email.disclaimer.split()) in flat
    assert settings.postal_address in flat
    markers = email.placeholders.text
    assert f"Manage preferences: {markers['preferences_url']}" in text
    assert f"Unsubscribe: {markers['unsubscribe_url']}" in text


def test_text_lines_are_at_most_78_characters_where_words_allow(email):
    for line in email.text.splitlines():
        if len(line) > 78:
            # Only an unbreakable word (a URL) may run over.
            assert " " not in line.strip() or re.search(r"\S{40,}", line), line


def test_golden_text_part(email, settings):
    """The example issue's text part, all topics, with preview values. UPDATE_GOLDEN=1 rewrites it."""
    text = fill(email.text, email.substitutions(preview_values(settings, "all")))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


# Template errors -----------------------------------------------------------------------------


def _template(workspace, name):
    return workspace / "templates" / "email" / name


def test_jinja_syntax_error_names_template_and_line(settings, workspace, issue, summaries):
    path = _template(workspace, "issue.mjml.j2")
    lines = path.read_text().splitlines()
    lines[40] += " {% if %}"
    path.write_text("\n".join(lines))
    with pytest.raises(TemplateError, match=r"issue\.mjml\.j2:41: template syntax error"):
        Renderer(settings).render(issue, summaries)


def test_undefined_name_names_template_and_line(settings, workspace, issue, summaries):
    path = _template(workspace, "issue.txt.j2")
    path.write_text(path.read_text().replace("{{ featured.journal }}", "{{ featured.jornal }}", 1))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "jornal" in text)
    with pytest.raises(TemplateError, match=rf"issue\.txt\.j2:{line}: template error: .*jornal"):
        Renderer(settings).render(issue, summaries)


def test_mjml_error_names_template(settings, workspace, issue, summaries):
    path = _template(workspace, "issue.mjml.j2")
    path.write_text(path.read_text().replace("</mj-body>", "", 1))
    with pytest.raises(TemplateError, match=r"issue\.mjml\.j2: MJML error"):
        Renderer(settings).render(issue, summaries)


def test_template_error_through_cli_is_one_line_exit_1(run, workspace):
    path = _template(workspace, "disclaimer.txt.j2")
    path.write_text("{{ journals | nosuchfilter }}\n")
    result = run("render", "2026-12")
    assert result.exit_code == 1
    assert "disclaimer.txt.j2" in result.stderr
    assert "Traceback" not in result.stderr


# CLI -----------------------------------------------------------------------------------------


def test_render_cli_writes_html_and_text(run, workspace):
    result = run("render", "2026-12", "--topics", "genetics", "-o", "out/genetics.html")
    assert result.exit_code == 0, result.stderr
    html = (workspace / "out" / "genetics.html").read_text()
    assert "MS risk variants" in html and "Pregnancy and breastfeeding" not in html
    assert "%%" not in html  # filled with preview values
    result = run("render", "2026-12", "--format", "text", "--raw")
    assert result.exit_code == 0
    assert re.search(r"Unsubscribe: %%unsubscribe_url\|[0-9a-f]{16}%%", result.stdout)


def test_render_cli_bad_topics_and_no_match(run, workspace):
    result = run("render", "2026-12", "--topics", "astrology")
    assert result.exit_code == 2
    assert "unknown topic astrology" in result.stderr
    # A topic choice that matches nothing in the issue: no email, a clear message.
    issue = workspace / "issues" / "2026-12.yaml"
    issue.write_text(issue.read_text().replace("- risk-variants-brain-methylation\n", ""))
    result = run("render", "2026-12", "--topics", "genetics")
    assert result.exit_code == 1
    assert "no summary in issue 2026-12 matches" in result.stderr


def test_render_unknown_issue(run):
    result = run("render", "2031-01")
    assert result.exit_code == 1
    assert "issues/2031-01.yaml: issue not found" in result.stderr
