"""The email and the preview page in a real browser (Playwright driving Debian's Chromium).

Set SCREENSHOTS_DIR=docs/screenshots to refresh the screenshots README shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.preview import create_preview_app
from newsletter.render import Renderer, fill, preview_values
from tests.conftest import serving

WIDTHS = {"phone": 375, "desktop": 600}

# WCAG 2 contrast of each element's own text against the first opaque background behind it.
TEXT_METRICS_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    if (!own) continue;
    const style = getComputedStyle(el);
    const rect = el.getBoundingClientRect();
    const hidden = style.display === 'none' || style.opacity === '0' || rect.width === 0 || rect.height === 0
      || el.closest('[style*="display:none"]') || rect.right < 0 || rect.left < -1000;
    if (hidden) continue;
    const fg = lum(parse(style.color).slice(0, 3)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    out.push({text: own.slice(0, 60), size: parseFloat(style.fontSize), contrast: ratio});
  }
  return out;
}
"""


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


@pytest.mark.parametrize("device", WIDTHS)
def test_no_horizontal_scrolling_and_screenshot(browser, email_html, screenshots, device):
    width = WIDTHS[device]
    page = browser.new_page(viewport={"width": width, "height": 900})
    # Block every request: an email must not fetch anything from elsewhere.
    fetched = []
    page.route("**/*", lambda route: (fetched.append(route.request.url), route.abort()))
    page.set_content(email_html, wait_until="load")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width
    assert fetched == []
    shot = screenshots / f"email-{device}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


@pytest.mark.parametrize("device", WIDTHS)
def test_text_size_and_contrast(browser, email_html, device):
    page = browser.new_page(viewport={"width": WIDTHS[device], "height": 900})
    page.set_content(email_html, wait_until="load")
    metrics = page.evaluate(TEXT_METRICS_JS)
    page.close()
    assert len(metrics) > 30
    small = [m for m in metrics if m["size"] < 16]
    assert small == []
    low = [m for m in metrics if m["contrast"] < 4.5]
    assert low == []


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
        assert "MS risk variants" in frame.locator("h1").inner_text()
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
