"""Signing up in a real browser (Playwright driving Debian's Chromium): the form, the
confirmation email from the outbox, its link, the button, the preference page, and the next
issue sent to the new subscriber on their topics. Also the form pasted into another site's page
(`newsletter signup-form`), from a site that may post it and from one that may not.

The app reads the test's clock, which moves between showing the form and sending it (the
minimum fill time) without any sleep. Set SCREENSHOTS_DIR=docs/screenshots to keep screenshots.
"""
# Not both_engines: pages in a browser; what they write: test_signup_form, test_signup_confirm.

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from newsletter.config import load_settings
from newsletter.store import subscribers as store
from tests.conftest import REPO, TEST_SECRET
from tests.support.browser import readability_problems, serving_directory
from tests.support.delivery import free_port, titles_for, titles_in
from tests.support.signup import (
    Clock,
    configure_signup,
    dump,
    emails_to,
    html_of,
    mailer,
    make_app,
)
from tests.support.web import links_in, point_links_at, send_outbox

PHONE = {"width": 375, "height": 800}


@pytest.fixture
def screenshots(tmp_path) -> Path:
    # Relative to the repository: the `run` fixture moves the current folder.
    folder = REPO / os.environ["SCREENSHOTS_DIR"] if "SCREENSHOTS_DIR" in os.environ else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def serving_on(app, port: int):
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def live(workspace, clock, monkeypatch):
    """`newsletter serve`'s app on 127.0.0.1, with `preferences_url` pointing at it (so the
    emails' links lead there); yields (url, app)."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    port = free_port()
    point_links_at(workspace, f"http://127.0.0.1:{port}")
    app = make_app(load_settings(workspace / "newsletter.yaml"), clock)
    with serving_on(app, port) as url:
        yield url, app
        mailer(app).wait()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.problems = problems
    yield page
    context.close()


def check_page(page) -> None:
    """Readable on a phone, our stylesheet applied, no console (or CSP) errors."""
    assert readability_problems(page, PHONE["width"]) == []
    assert page.problems == []


def test_sign_up_confirm_and_get_the_next_issue_on_ones_topics(
    live, page, clock, workspace, db, run, screenshots
):
    url, app = live
    page.goto(url + "/subscribe")
    check_page(page)
    assert page.get_by_label("All topics, including new ones").is_checked() is False
    page.screenshot(path=str(screenshots / "subscribe-phone.png"), full_page=True)
    page.get_by_label("Email address").fill("Ana.Lima@Example.org")
    page.get_by_label("Your name (optional)").fill("Ana Lima")
    page.get_by_label("Genetics").check()
    page.get_by_label("Women's health").check()
    clock.advance(seconds=15)  # the time a person takes over the form
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    check_page(page)
    assert store.get_row_by_email(db, "ana.lima@example.org") is None  # not before confirming

    mailer(app).wait()
    (message,) = emails_to(workspace, "ana.lima@example.org")
    (link,) = {href for href in links_in(html_of(message)) if "/confirm/" in href}
    assert link.startswith(url + "/confirm/")
    before = dump(db)
    page.goto(link)
    check_page(page)
    assert dump(db) == before  # opening the link changed nothing
    assert page.get_by_role("button").count() == 1
    assert page.locator("#topics li").all_inner_texts() == ["Genetics", "Women's health"]
    page.get_by_role("button", name="Confirm my subscription").click()

    page.locator("#confirmed").wait_for()
    assert "/preferences/" in page.url
    check_page(page)
    assert page.locator("#address").inner_text() == "ana.lima@example.org"
    assert page.get_by_label("Genetics").is_checked()
    assert page.get_by_label("Women's health").is_checked()
    assert not page.get_by_label("Infections and vaccines").is_checked()
    page.screenshot(path=str(screenshots / "subscribed-phone.png"), full_page=True)
    ana = store.get_row_by_email(db, "ana.lima@example.org")
    assert (ana.status, ana.status_source, ana.name) == ("subscribed", "signup", "Ana Lima")

    # The next send mails them their topics, and only theirs.
    messages = send_outbox(run, workspace, "2026-12")
    body = messages[ana.id].get_body(("plain",)).get_content()
    settings = load_settings(workspace / "newsletter.yaml")
    assert titles_in(body, settings) == titles_for(settings, ["genetics", "womens-health"])
    assert "Hello Ana Lima," in body


def test_keyboard_reaches_every_field_in_order(live, page):
    url, _ = live
    page.goto(url + "/subscribe")
    order = []
    for _ in range(15):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.innerText"))
    assert order[:4] == ["Skip to the content", "email", "name", "topic-all"]
    assert order[4:13] == [
        "topic-treatment-safety",
        "topic-diagnosis-imaging",
        "topic-other-conditions",
        "topic-gut-microbiome",
        "topic-genetics",
        "topic-repair-remyelination",
        "topic-womens-health",
        "topic-infections",
        "topic-symptoms-daily-life",
    ]
    assert "website" not in order  # the honeypot is out of the tab order
    assert order[13:15] == ["Our privacy notice", "Subscribe"]


def test_no_topic_ticked_is_refused_pointing_to_all_topics(live, page, db):
    url, _ = live
    page.goto(url + "/subscribe")
    page.get_by_label("Email address").fill("ana@example.org")
    page.get_by_role("button", name="Subscribe").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Please tick at least one topic, or “All topics, including new ones”." in (
        alert.inner_text()
    )
    assert page.get_by_label("Email address").input_value() == "ana@example.org"
    assert readability_problems(page, PHONE["width"]) == []
    # The browser notes the 422 answer; nothing else went wrong.
    assert [p for p in page.problems if "status of 422" not in p] == []
    assert db.conn.execute("SELECT count(*) FROM signups").fetchone()[0] == 0


def embedding_page(folder: Path, run) -> None:
    result = run("signup-form", "--form-id", "partner-site")
    assert result.exit_code == 0, result.output
    folder.mkdir()
    (folder / "index.html").write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Partner</title>"
        f"</head><body><h1>A partner site</h1>{result.stdout}</body></html>",
        encoding="utf-8",
    )


def test_the_form_on_another_site_that_may_post_it(
    workspace, clock, monkeypatch, page, run, tmp_path, db
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    port = free_port()
    point_links_at(workspace, f"http://127.0.0.1:{port}")
    embedding_page(tmp_path / "partner", run)
    with serving_directory(tmp_path / "partner") as partner:
        settings = configure_signup(workspace, allowed_origins=[partner])
        app = make_app(settings, clock)
        with serving_on(app, port):
            page.goto(partner + "/")
            page.get_by_label("Email address").fill("bo@example.org")
            page.get_by_label("Infections and vaccines").check()
            page.get_by_role("button", name="Subscribe to MS Research Monthly").click()
            # Our own page, filled in, asks for the last step (the snippet has no time).
            page.locator("#notice").wait_for()
            assert "One more step" in page.locator("#notice").inner_text()
            assert page.get_by_label("Email address").input_value() == "bo@example.org"
            assert page.get_by_label("Infections and vaccines").is_checked()
            clock.advance(seconds=5)
            page.get_by_role("button", name="Subscribe").click()
            page.get_by_role("heading", name="Check your inbox").wait_for()
            mailer(app).wait()
    (message,) = emails_to(workspace, "bo@example.org")
    pending = db.conn.execute("SELECT form_id FROM signups WHERE email = 'bo@example.org'")
    assert pending.fetchone()[0] == "partner-site"


def test_the_form_on_a_site_that_may_not_post_it(
    workspace, clock, monkeypatch, page, run, tmp_path, db
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    port = free_port()
    point_links_at(workspace, f"http://127.0.0.1:{port}")
    embedding_page(tmp_path / "elsewhere", run)
    app = make_app(load_settings(workspace / "newsletter.yaml"), clock)
    with serving_directory(tmp_path / "elsewhere") as elsewhere, serving_on(app, port):
        before = dump(db)
        page.goto(elsewhere + "/")
        page.get_by_label("Email address").fill("bo@example.org")
        page.get_by_label("Genetics").check()
        clock.advance(seconds=5)
        page.get_by_role("button", name="Subscribe to MS Research Monthly").click()
        page.get_by_role("heading", name="This form cannot be sent from there").wait_for()
        assert dump(db) == before
        mailer(app).wait()
    assert emails_to(workspace, "bo@example.org") == []
