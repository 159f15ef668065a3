"""The archive in a real browser (Playwright driving Debian's Chromium), served as a static host
serves it: the index, an issue page and a topic page at 375 and 1280 px in light and dark mode, and
the search page with and without JavaScript.

Set SCREENSHOTS_DIR=docs/screenshots to refresh the screenshots README shows.
"""
# Not both_engines: the built archive in a browser (its build: test_archive_build).

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.archive_support import FIRST_ISSUE, example_archive
from tests.support.browser import readability_problems, serving_directory

PAGES = {"index": "", "issue": f"{FIRST_ISSUE}/", "topic": "topics/treatment-safety/"}
WIDTHS = {"phone": 375, "desktop": 1280}
SCHEMES = ("light", "dark")
# The screenshots README shows: (page, width, scheme).
README_SHOTS = {
    ("index", "desktop", "light"),
    ("issue", "phone", "light"),
    ("issue", "phone", "dark"),
    ("topic", "desktop", "dark"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return example_archive(tmp_path_factory.mktemp("archive") / "ws") / "site"


@pytest.fixture(scope="module")
def base_url(site):
    with serving_directory(site) as url:
        yield url


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, width: int, scheme: str, javascript: bool = True):
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        color_scheme=scheme,
        java_script_enabled=javascript,
    )
    page = context.new_page()
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    # A static page fetches nothing from elsewhere.
    page.outside = []
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("http://127.0.0.1:")
            else (page.outside.append(route.request.url), route.abort())
        ),
    )
    return context, page


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("device", WIDTHS)
def test_pages_readable_at_every_width_in_light_and_dark(
    browser, base_url, screenshots, device, scheme
):
    width = WIDTHS[device]
    context, page = open_page(browser, width, scheme)
    backgrounds = set()
    for name, path in PAGES.items():
        page.goto(f"{base_url}/{path}")
        assert readability_problems(page, width) == [], f"{name} at {width} px, {scheme}"
        backgrounds.add(page.evaluate("getComputedStyle(document.body).backgroundColor"))
        # A readable column: lines stay short on a wide screen.
        column = page.locator("main").evaluate("el => el.getBoundingClientRect().width")
        assert column <= min(width, 42 * 16)
        if (name, device, scheme) in README_SHOTS:
            shot = screenshots / f"archive-{name}-{device}-{scheme}.png"
            page.screenshot(path=str(shot), full_page=device == "desktop")
            assert shot.stat().st_size > 10_000
    assert page.errors == [] and page.outside == []
    # The scheme is honoured: a white page in light mode, a dark one in dark mode.
    assert backgrounds == {"rgb(255, 255, 255)" if scheme == "light" else "rgb(16, 22, 29)"}
    context.close()


def test_issue_page_structure_in_the_browser(browser, base_url):
    context, page = open_page(browser, 1280, "light")
    page.goto(f"{base_url}/{FIRST_ISSUE}/#oct-optic-neuritis")
    assert page.get_by_role("heading", level=1).count() == 1
    assert page.get_by_role("heading", name="About this research", level=2).is_visible()
    # The anchor of a summary brings its section into view.
    section = page.locator("#oct-optic-neuritis")
    assert section.get_by_role("heading", level=3).inner_text().startswith("Eye scans")
    top = section.evaluate("el => el.getBoundingClientRect().top")
    assert 0 <= top < 100
    assert page.locator("table").count() == 0
    context.close()


def test_search_filters_the_list_as_you_type(browser, base_url):
    context, page = open_page(browser, 375, "light")
    page.goto(f"{base_url}/search/?q=anti-CD20")
    status = page.locator("#search-status")
    status.filter(has_text="match").wait_for()
    visible = page.locator("#search-results > li:visible h2")
    assert sorted(visible.all_inner_texts()) == [
        "Rare enterovirus brain infections on anti-CD20 therapy",
        "Vaccine responses on anti-CD20 therapy depend on timing",
    ]
    assert status.inner_text() == "2 of 14 summaries match “anti-CD20”."
    # Typing filters at once; case and accents do not matter; every word must match.
    box = page.get_by_label("Search", exact=True)
    box.fill("GÚT microbes")
    page.wait_for_function(
        "document.querySelectorAll('#search-results > li:not([hidden])').length === 1"
    )
    assert visible.all_inner_texts() == ["Certain gut bacteria linked to more MS activity"]
    box.fill("")
    page.wait_for_function(
        "document.querySelectorAll('#search-results > li:not([hidden])').length === 14"
    )
    assert status.inner_text() == "14 summaries in the archive, newest first."
    assert page.errors == [] and page.outside == []
    context.close()


def test_search_without_javascript_lists_everything(browser, base_url):
    context, page = open_page(browser, 375, "light", javascript=False)
    page.goto(f"{base_url}/")
    page.get_by_label("Search", exact=True).fill("anti-CD20")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/search/?q=anti-CD20")
    assert page.locator("#search-results > li:visible").count() == 14
    assert "use your browser’s Find" in page.locator("main").inner_text()
    context.close()
