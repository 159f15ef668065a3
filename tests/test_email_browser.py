"""The email and the preview page in a real browser (Playwright driving Debian's Chromium).

The email is checked in the light and the dark colour scheme (`prefers-color-scheme`, as Apple
Mail and iOS Mail apply it), and with Outlook.com's dark-mode attributes, at 375 and 600 px.
Set SCREENSHOTS_DIR=docs/screenshots to refresh the screenshots README shows.
"""
# Not both_engines: the rendered email in a browser, no database.

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.render import Renderer, fill, preview_values
from newsletter.web.preview import create_preview_app
from tests.conftest import serving
from tests.support.browser import TEXT_METRICS_JS

WIDTHS = {"phone": 375, "desktop": 600}
SCHEMES = ("light", "dark")

# The background behind the summaries (the first card) and behind them (the email's wrapper,
# which is all there is of the page when a webmail shows the email inside its own).
BACKGROUNDS_JS = """
() => ['.nl-card', '.nl-body'].map(
  sel => getComputedStyle(document.querySelector(sel)).backgroundColor)
"""
# Outlook.com's dark mode ignores prefers-color-scheme; it marks the elements it recolours with
# data-ogsc (text colour) and data-ogsb (background), which the email's CSS keys on.
OUTLOOK_DARK_JS = """
() => { document.body.setAttribute('data-ogsc', ''); document.body.setAttribute('data-ogsb', ''); }
"""


def luminance(css_color: str) -> float:
    """WCAG relative luminance of an `rgb(r, g, b)` colour."""
    r, g, b = (int(v) / 255 for v in css_color[css_color.index("(") + 1 : -1].split(",")[:3])

    def f(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)


@pytest.fixture
def email_html(settings):
    issue = load_issue(settings, "2026-12")
    summaries = resolve_summaries(issue, load_summaries(settings))
    email = Renderer(settings).render(issue, summaries)
    return fill(email.html, email.substitutions(preview_values(settings, "all")))


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_email(browser, html: str, device: str, scheme: str):
    page = browser.new_page(viewport={"width": WIDTHS[device], "height": 900})
    page.emulate_media(color_scheme=scheme)
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("device", WIDTHS)
def test_no_horizontal_scrolling_and_screenshot(browser, email_html, screenshots, device, scheme):
    width = WIDTHS[device]
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme)
    # Block every request: an email must not fetch anything from elsewhere.
    fetched = []
    page.route("**/*", lambda route: (fetched.append(route.request.url), route.abort()))
    page.set_content(email_html, wait_until="load")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width
    assert fetched == []
    name = f"email-{device}.png" if scheme == "light" else f"email-{scheme}-{device}.png"
    shot = screenshots / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def check_text(page) -> None:
    metrics = page.evaluate(TEXT_METRICS_JS)
    assert len(metrics) > 30
    small = [m for m in metrics if m["size"] < 16]
    assert small == []
    low = [m for m in metrics if m["contrast"] < 4.5]
    assert low == []


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("device", WIDTHS)
def test_text_size_and_contrast(browser, email_html, device, scheme):
    page = open_email(browser, email_html, device, scheme)
    check_text(page)
    # The scheme took effect: light cards on a light page, or dark on dark.
    card, body = (luminance(c) for c in page.evaluate(BACKGROUNDS_JS))
    page.close()
    if scheme == "light":
        assert card == 1.0 and body > 0.8
    else:
        assert card < 0.02 and body < 0.02


@pytest.mark.parametrize("device", WIDTHS)
def test_outlook_com_dark_mode(browser, email_html, device):
    page = open_email(browser, email_html, device, "light")
    assert luminance(page.evaluate(BACKGROUNDS_JS)[0]) == 1.0
    page.evaluate(OUTLOOK_DARK_JS)
    check_text(page)
    card, body = (luminance(c) for c in page.evaluate(BACKGROUNDS_JS))
    page.close()
    assert card < 0.02 and body < 0.02


@pytest.fixture
def preview_server(settings):
    with serving(create_preview_app(settings, "2026-12")) as base:
        yield base


def test_preview_page_per_topic_choice(browser, preview_server, screenshots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(preview_server + "/")
    assert page.locator("#selection").inner_text().startswith("8 of 8 summaries")
    # Choose one topic, as an editor would.
    page.get_by_label("All topics").uncheck()
    page.get_by_label("Genetics").check()
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/?topics=genetics")
    assert page.locator("#selection").inner_text().startswith("1 of 8 summaries")
    for frame_id, width in (("#desktop", 640), ("#phone", 375)):
        frame = page.frame_locator(frame_id)
        featured = frame.get_by_role("heading", level=3).first  # the first summary's title
        assert "MS risk variants" in featured.inner_text()
        assert page.locator(frame_id).get_attribute("width") == str(width)
    text = page.locator("#text").inner_text()
    assert "MS risk variants leave marks on DNA" in text
    assert "Pregnancy and breastfeeding" not in text
    page.screenshot(path=str(screenshots / "preview.png"))
    # Two topics: the summaries of either.
    page.goto(preview_server + "/?topics=symptoms-daily-life&topics=infections")
    assert page.locator("#selection").inner_text().startswith("2 of 8")
    page.close()


def test_preview_says_when_a_choice_gets_no_email(settings, workspace):
    issue = workspace / "issues" / "2026-12.yaml"
    issue.write_text(issue.read_text().replace("- risk-variants-brain-methylation\n", ""))
    client = create_preview_app(settings, "2026-12").test_client()
    page = client.get("/?topics=genetics").get_data(as_text=True)
    assert "gets no email this month" in page
    assert client.get("/email.html?topics=genetics").status_code == 404
    assert client.get("/email.txt?topics=all").status_code == 200
