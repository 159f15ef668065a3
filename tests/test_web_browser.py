"""The preference centre in a real browser (Playwright driving Debian's Chromium), reached through
the links of an email that `newsletter send --backend outbox` wrote.

Set SCREENSHOTS_DIR=docs/screenshots to keep the screenshots.
"""
# Not both_engines: pages in a browser; what they change: test_web_preferences, _unsubscribe.

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from newsletter.store import subscribers as store
from newsletter.web import create_app
from tests.conftest import TEST_SECRET, serving
from tests.support.browser import TEXT_METRICS_JS
from tests.support.web import db_state, footer_link, point_links_at, send_outbox

PHONE = {"width": 375, "height": 800}
NAVY = "rgb(16, 42, 67)"

# What has keyboard focus, and whether it can be seen.
FOCUS_JS = """
() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(),
    id: el.id || null,
    text: (el.innerText || el.value || '').trim().slice(0, 60),
    outline: style.outlineStyle !== 'none' ? parseFloat(style.outlineWidth) : 0,
  };
}
"""


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def live(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    with serving(create_app(settings)) as base:
        yield base


@pytest.fixture
def sent(run, workspace, live, db):
    """Two subscribers and the December issue sent to them through the outbox backend."""
    alice = store.insert(db, "alice@example.com", name="Alice", topics={"genetics", "infections"})
    bob = store.insert(db, "bob@example.com", name="Bob", topics="all")
    point_links_at(workspace, live)
    messages = send_outbox(run, workspace, "2026-12")
    assert set(messages) == {alice.id, bob.id}
    return alice, bob, messages


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.problems = problems
    yield page
    context.close()


def check_page_quality(page) -> None:
    """Readable on a phone: no sideways scrolling, 16 px text, WCAG AA contrast, our stylesheet
    applied (so the CSP let it through), and no CSP or other console errors."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    metrics = page.evaluate(TEXT_METRICS_JS)
    assert metrics
    assert [m for m in metrics if m["size"] < 16] == []
    assert [m for m in metrics if m["contrast"] < 4.5] == []
    header = page.locator("header.masthead")
    assert header.evaluate("el => getComputedStyle(el).backgroundColor") == NAVY
    assert page.problems == []


def test_preferences_from_the_email_link(sent, live, page, db, screenshots):
    alice, _bob, messages = sent
    link = footer_link(messages[alice.id], "Manage preferences")
    assert link.startswith(live + "/preferences/")

    page.goto(link)
    assert page.locator("#address").inner_text() == "alice@example.com"
    check_page_quality(page)
    page.screenshot(path=str(screenshots / "preferences-phone.png"), full_page=True)

    assert page.get_by_label("Only the topics I tick below").is_checked()
    assert page.get_by_label("Genetics").is_checked()
    assert page.get_by_label("Infections and vaccines").is_checked()
    assert not page.get_by_label("Women's health").is_checked()
    page.get_by_label("Infections and vaccines").uncheck()
    page.get_by_label("Women's health").check()
    page.get_by_role("button", name="Save my choices").click()

    page.locator("#saved").wait_for()
    assert "You will get: Genetics, Women's health." in page.locator("#saved").inner_text()
    check_page_quality(page)
    assert store.get_row(db, alice.id).topics == {"genetics", "womens-health"}
    change = store.history_rows(db, alice.id)[-1]
    assert change["field"] == "topics" and change["source"] == "web"
    # The page shows what is now saved.
    assert page.get_by_label("Women's health").is_checked()
    assert not page.get_by_label("Infections and vaccines").is_checked()

    # Nothing ticked: refused, with a way to unsubscribe instead; nothing saved.
    for label in ("Genetics", "Women's health"):
        page.get_by_label(label).uncheck()
    page.get_by_role("button", name="Save my choices").click()
    error = page.get_by_role("alert")
    assert "Please tick at least one topic." in error.inner_text()
    assert error.get_by_role("link", name="unsubscribe").count() == 1
    assert store.get_row(db, alice.id).topics == {"genetics", "womens-health"}


def test_keyboard_focus_order_and_visible_focus(sent, page):
    alice, _bob, messages = sent
    page.goto(footer_link(messages[alice.id], "Manage preferences"))
    seen = []
    for _ in range(16):
        page.keyboard.press("Tab")
        seen.append(page.evaluate(FOCUS_JS))
    # Skip link first, then the form from top to bottom, then the links after it.
    assert seen[0]["text"] == "Skip to the content"
    assert seen[1]["id"] == "choice-chosen"  # a radio group is one stop, at the checked radio
    topic_ids = [f["id"] for f in seen[2:11]]
    assert topic_ids == [
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
    assert seen[11]["tag"] == "button" and seen[11]["text"] == "Save my choices"
    assert seen[12]["tag"] == "a" and seen[12]["text"] == "unsubscribe"
    for focused in seen[:13]:
        assert focused["outline"] >= 2, focused  # the focus ring can be seen


def test_unsubscribe_from_the_email_link_and_the_next_send_skips_them(
    sent, page, db, run, workspace, screenshots
):
    alice, bob, messages = sent
    link = footer_link(messages[alice.id], "Unsubscribe")
    assert messages[alice.id]["List-Unsubscribe"] == f"<{link}>"
    before = db_state(db)

    page.goto(link)
    check_page_quality(page)
    assert db_state(db) == before  # opening the link changed nothing
    assert page.get_by_role("button").count() == 1
    page.screenshot(path=str(screenshots / "unsubscribe-phone.png"), full_page=True)

    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    check_page_quality(page)
    now = store.get_row(db, alice.id)
    assert now.status == "unsubscribed" and now.status_source == "web"
    assert page.get_by_role("button", name="Subscribe again").is_visible()
    assert page.get_by_role("link", name="Change topics instead").is_visible()
    page.screenshot(path=str(screenshots / "unsubscribed-phone.png"), full_page=True)

    # The next issue goes to Bob only.
    december = (workspace / "issues" / "2026-12.yaml").read_text()
    (workspace / "issues" / "2026-12b.yaml").write_text(
        re.sub(r"(?m)^id: 2026-12$", "id: 2026-12b", december)
    )
    following = send_outbox(run, workspace, "2026-12b")
    assert set(following) == {bob.id}

    # "Change topics instead" leads to their preference page, which offers to subscribe again.
    page.get_by_role("link", name="Change topics instead").click()
    page.locator("#address").wait_for()
    assert "You are unsubscribed" in page.locator("#status").inner_text()
    page.get_by_role("button", name="Subscribe again", exact=True).click()
    page.get_by_role("heading", name="You are subscribed again").wait_for()
    check_page_quality(page)
    assert store.get_row(db, alice.id).status == "subscribed"
    statuses = [h["source"] for h in store.history_rows(db, alice.id) if h["field"] == "status"]
    assert statuses == ["web", "web"]
