"""`newsletter serve` serves the built archive at /archive/ as a static host would: the same bytes,
a folder's address gives its page, nothing outside the site, headers that let the search page run
its own script and nothing else."""
# Not both_engines: static files served from disk, no database.

from __future__ import annotations

import pytest

from newsletter.web.archive import ARCHIVE_CSP
from tests.archive_support import FIRST_ISSUE, add_reader, build, send
from tests.conftest import serving
from tests.support.browser import readability_problems


@pytest.fixture
def built(run, workspace):
    add_reader(run)
    send(run, workspace, FIRST_ISSUE)
    build(run)
    return workspace / "site"


def test_pages_are_the_built_files(built, client):
    for url, path in (
        ("/archive/", "index.html"),
        (f"/archive/{FIRST_ISSUE}/", f"{FIRST_ISSUE}/index.html"),
        ("/archive/feed.xml", "feed.xml"),
        ("/archive/search.json", "search.json"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.data == (built / path).read_bytes(), url
        assert response.headers["Content-Security-Policy"] == ARCHIVE_CSP
        assert "no-store" not in response.headers["Cache-Control"]
        assert response.headers["X-Robots-Tag"] == "all"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # A folder without its slash is redirected, so the pages' relative links resolve.
    response = client.get(f"/archive/{FIRST_ISSUE}")
    assert response.status_code == 308
    assert response.headers["Location"].endswith(f"/archive/{FIRST_ISSUE}/")
    # The preference centre's pages keep their no-store.
    assert client.get("/preferences/x").headers["Cache-Control"] == "no-store"


def test_nothing_else_is_served_and_nothing_changes(built, client):
    for url in (
        "/archive/.archive-files",
        "/archive/../newsletter.yaml",
        "/archive/%2e%2e/newsletter.yaml",
        "/archive/..%2fnewsletter.yaml",
        "/archive/2031-01/",
        "/archive/nothing.html",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post("/archive/").status_code == 405


def test_not_built_yet(client):
    assert client.get("/archive/").status_code == 404


def test_search_runs_under_the_served_headers(built, app, browser):
    with serving(app) as base:
        context = browser.new_context(viewport={"width": 375, "height": 800})
        page = context.new_page()
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(f"{base}/archive/search/?q=anti-CD20")
        page.locator("#search-status").filter(has_text="match").wait_for()
        assert page.locator("#search-results > li:visible").count() == 1
        assert readability_problems(page, 375) == []
        assert errors == []
        context.close()
