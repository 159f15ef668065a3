"""The "View in your browser" link: at the very top of both parts of every email, the same URL for
every reader (the issue's archive page, nothing personal in it), absent for `archive: false`;
`check` refuses an email whose link would lead nowhere; and the link of a sent email opens a page
of the built archive."""
# Not both_engines: the email's first link, no database.

from __future__ import annotations

import re

import pytest

from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.render import Renderer, select_summaries
from tests.archive_support import (
    ARCHIVE_URL,
    PageLinks,
    add_reader,
    build,
    file_for_url,
    send,
    text_of,
)

ISSUE = "2026-12"
PAGE = f"{ARCHIVE_URL}{ISSUE}/"


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def summaries(settings):
    return resolve_summaries(load_issue(settings, ISSUE), load_summaries(settings))


def first_link(html: str) -> tuple[str, str]:
    """(href, text) of the first link in the body."""
    match = re.search(r'<a href="([^"]+)"[^>]*>([^<]*)</a>', html.split("<body", 1)[1])
    assert match
    return match.group(1), match.group(2)


def test_link_at_the_top_of_both_parts_same_for_every_selection(settings, summaries):
    renderer = Renderer(settings)
    issue = load_issue(settings, ISSUE)
    for topics in ("all", ["genetics"], ["womens-health", "infections"]):
        email = renderer.render(issue, select_summaries(summaries, topics))
        assert first_link(email.html) == (PAGE, "View in your browser")
        assert email.text.splitlines()[0] == f"View in your browser: {PAGE}"
        # Before anything else a reader sees: the greeting comes after it in both parts.
        assert text_of(email.html).index("View in your browser") < text_of(email.html).index(
            "Hello"
        )


def test_no_link_for_an_issue_left_out_of_the_archive(run, workspace, settings, summaries):
    _edit(workspace / "issues" / f"{ISSUE}.yaml", "\nsummaries:", "\narchive: false\nsummaries:")
    issue = load_issue(settings, ISSUE)
    assert issue.archive is False
    email = Renderer(settings).render(issue, summaries)
    for body in (email.html, email.text):
        assert "View in your browser" not in body
        assert ARCHIVE_URL not in body
    result = run("check", ISSUE)
    assert result.exit_code == 0, result.stderr


def test_check_fails_when_archive_url_is_unset(run, workspace):
    config = workspace / "newsletter.yaml"
    config.write_text(re.sub(r"(?m)^archive_url: .*\n", "", config.read_text()))
    result = run("check", ISSUE)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {ISSUE}: archive_url is not set in the settings, so the email's 'View in your "
        "browser' link has no page to lead to (set archive_url, or 'archive: false' in the issue "
        "file to send it without an archive page)"
    ]
    # The send is refused the same way, before anyone is mailed.
    add_reader(run)
    result = run("send", ISSUE, "--backend", "outbox", "--yes")
    assert result.exit_code == 1
    assert "archive_url is not set" in result.stderr
    assert not (workspace / "outbox" / ISSUE).exists()


def test_check_fails_when_a_template_links_an_issue_left_out(run, workspace):
    _edit(workspace / "issues" / f"{ISSUE}.yaml", "\nsummaries:", "\narchive: false\nsummaries:")
    # A template that links whatever the issue says (the archive will have no such page).
    for name in ("issue.mjml.j2", "issue.txt.j2"):
        template = workspace / "templates" / "email" / name
        template.write_text(
            template.read_text().replace("{% if view_in_browser %}", "{% if true %}", 1)
        )
        template.write_text(
            template.read_text().replace(
                "{{ view_in_browser }}", "{{ settings.archive_url }}{{ issue.id }}/"
            )
        )
    result = run("check", ISSUE)
    assert result.exit_code == 1
    for part in ("HTML", "text"):
        assert (
            f"error: {ISSUE} (all topics): {part} part links to the issue's archive page, but "
            "the issue has 'archive: false', so that page will not exist"
        ) in result.stderr.splitlines()


def test_check_fails_when_a_template_drops_the_link(run, workspace):
    template = workspace / "templates" / "email" / "issue.txt.j2"
    _edit(template, "View in your browser: {{ view_in_browser }}", "")
    result = run("check", ISSUE)
    assert result.exit_code == 1
    assert (
        f"error: {ISSUE} (all topics): text part has no 'View in your browser' link to {PAGE}"
    ) in result.stderr.splitlines()


def test_the_sent_link_opens_the_issue_page_of_the_built_archive(run, workspace, settings):
    add_reader(run)
    result = run("subscribers", "add", "second@example.org", "--topics", "genetics")
    assert result.exit_code == 0, result.output
    messages = send(run, workspace, ISSUE)
    assert len(messages) == 2
    links = set()
    for message in messages.values():
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        href, label = first_link(html)
        assert label == "View in your browser"
        assert text.splitlines()[0] == f"View in your browser: {href}"
        links.add(href)
    # One URL for every reader: no token, no id, no query.
    assert links == {PAGE}
    build(run)
    page = file_for_url(workspace / "site", PAGE)
    assert page.is_file()
    html = page.read_text()
    assert PageLinks(html).meta["og:url"] == PAGE
    assert re.findall(r"<h1>(.*?)</h1>", html) == [load_issue(settings, ISSUE).subject]
