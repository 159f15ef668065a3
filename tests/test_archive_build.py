"""`newsletter archive build`: the sent issues (and only those) as a static site; index newest
first, issue pages as the email shows them, topic pages, `archive: false`, byte-identical and
untouched rebuilds, and clear refusals."""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest

from newsletter.config import load_settings
from newsletter.content import dump_issue, load_issue, load_summaries, resolve_summaries
from newsletter.errors import ContentError
from newsletter.render import Renderer
from newsletter.templating import long_date
from tests.archive_support import (
    SECOND_ISSUE,
    PageLinks,
    add_reader,
    build,
    compose_second_issue,
    example_archive,
    send,
    send_two_issues,
    site_files,
    text_of,
)

pytestmark = pytest.mark.both_engines

ISSUE = "2026-12"
OLD = 1_000_000_000  # a modification time long past, to see which files a rebuild touches


@pytest.fixture
def two_sent(run, workspace, db):
    send_two_issues(run, workspace, db)
    return workspace


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """Built once for the tests that only read the result (see `example_archive`)."""
    root = example_archive(tmp_path_factory.mktemp("archive") / "ws")
    return root, load_settings(root / "newsletter.yaml")


def read(site, path):
    return (site / path).read_text(encoding="utf-8")


def test_index_lists_sent_issues_newest_first(example):
    root, settings = example
    site = root / "site"
    index = read(site, "index.html")
    text = text_of(index)
    january = load_issue(settings, SECOND_ISSUE)
    december = load_issue(settings, ISSUE)
    assert text.index(january.subject) < text.index(december.subject)
    assert "Sent 5 January 2027" in text and "Sent 1 December 2026" in text
    summaries = load_summaries(settings)
    for issue in (december, january):
        for sid in issue.summaries:
            assert summaries[sid].title in text
            assert f'href="./{issue.id}/#{sid}"' in index
    # The draft was never sent: no page, not listed.
    assert "February 2027 draft" not in index
    assert not (site / "2027-02").exists()
    assert (site / ISSUE / "index.html").is_file() and (
        site / SECOND_ISSUE / "index.html"
    ).is_file()


def test_issue_page_shows_every_summary_as_the_email_does_with_the_disclaimer(example):
    root, settings = example
    page = read(root / "site", f"{ISSUE}/index.html")
    issue = load_issue(settings, ISSUE)
    summaries = resolve_summaries(issue, load_summaries(settings))
    text = text_of(page)
    first, *cards = summaries
    # The first in full, the rest as cards, in issue order, each a section with its id.
    for part in (first.headline, first.findings, first.why_it_matters, first.limitations):
        assert " ".join(part.split()) in text
    positions = [page.index(f'id="{s.id}"') for s in summaries]
    assert positions == sorted(positions)
    for card in cards:
        assert card.title in text and card.card_teaser in text
        assert " ".join(card.findings.split()) not in text
    # Real headings: one h1 (the subject), the featured title and the sections as h2.
    assert re.findall(r"<h1>(.*?)</h1>", page) == [issue.subject]
    h2 = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    assert h2 == [first.title, "More research this month", "About this research"]
    assert "<table" not in page
    # The research disclaimer, word for word as the email carries it for all topics.
    disclaimer = Renderer(settings).disclaimer(issue, summaries)
    assert " ".join(disclaimer.split()) in text
    for journal in {s.journal for s in summaries}:
        assert journal in disclaimer
    # Canonical URL and OpenGraph tags from archive_url.
    meta = PageLinks(page).meta
    canonical = f"{settings.archive_base}/{ISSUE}/"
    assert f'<link rel="canonical" href="{canonical}">' in page
    assert meta["og:url"] == canonical
    assert meta["og:title"] == issue.subject
    assert meta["og:type"] == "article"
    assert meta["og:description"] == issue.preheader


def test_topic_pages_list_every_summary_of_the_topic_newest_first(example):
    root, settings = example
    site = root / "site"
    summaries = load_summaries(settings)
    sent_in = {sid: ISSUE for sid in load_issue(settings, ISSUE).summaries}
    sent_in |= {sid: SECOND_ISSUE for sid in load_issue(settings, SECOND_ISSUE).summaries}
    for topic in settings.topics:
        page = read(site, f"topics/{topic.slug}/index.html")
        assert re.findall(r"<h1>(.*?)</h1>", page) == [topic.label.replace("'", "&#39;")]
        expected = [sid for sid in sent_in if topic.slug in summaries[sid].topics]
        # Each entry: a link to the summary's section on its issue page, and to the site's page.
        linked = re.findall(r'<h2><a href="\.\./\.\./([^"#]+)/#([^"]+)">', page)
        assert sorted(sid for _, sid in linked) == sorted(expected), topic.slug
        for issue_id, sid in linked:
            assert sent_in[sid] == issue_id
            assert f'href="{summaries[sid].url}"' in page
        # Newest first: January's summaries before December's.
        order = [issue_id for issue_id, _ in linked]
        assert order == sorted(order, reverse=True), topic.slug
    infections = text_of(read(site, "topics/infections/index.html"))
    assert "2 summaries sent on this topic, newest first." in infections
    assert "1 summary sent on this topic" in text_of(read(site, "topics/genetics/index.html"))


def test_archive_false_is_left_out_everywhere(run, workspace, db, settings):
    add_reader(run)
    send(run, workspace, ISSUE)
    compose_second_issue(run)
    path = workspace / "issues" / f"{SECOND_ISSUE}.yaml"
    path.write_text(path.read_text() + "archive: false\n")
    messages = send(run, workspace, SECOND_ISSUE)
    # Its email has no "View in your browser" link, in either part.
    for message in messages.values():
        for part in message.walk():
            if part.get_content_maintype() == "text":
                assert "View in your browser" not in part.get_content()
                assert f"/archive/{SECOND_ISSUE}/" not in part.get_content()
    out = build(run)
    assert out == (
        "Archive of 1 issue in site: 18 files, 18 written, 0 unchanged, 0 removed; "
        f"left out (archive: false): {SECOND_ISSUE}\n"
    )
    site = workspace / "site"
    assert not (site / SECOND_ISSUE).exists()
    hidden = load_issue(settings, SECOND_ISSUE)
    for name, data in site_files(site).items():
        text = data.decode("utf-8")
        assert hidden.subject not in text, name
        assert f"{SECOND_ISSUE}/" not in text, name
    summaries = load_summaries(settings)
    only_there = [summaries[sid].title for sid in hidden.summaries]
    assert not any(title in read(site, "search/index.html") for title in only_there)


def test_archive_false_survives_an_issue_file_rewrite(settings, workspace):
    path = workspace / "issues" / f"{ISSUE}.yaml"
    path.write_text(path.read_text() + "archive: false\n")
    issue = load_issue(settings, ISSUE)
    assert issue.archive is False
    assert "\narchive: false\n" in dump_issue(issue)
    assert "archive" not in dump_issue(issue.model_copy(update={"archive": True}))
    path.write_text(path.read_text().replace("archive: false", "archive: perhaps"))
    with pytest.raises(ContentError, match=r"issues/2026-12.yaml:\d+: field 'archive'"):
        load_issue(settings, ISSUE)


def test_rebuild_is_byte_identical_and_touches_nothing(run, two_sent, tmp_path):
    out = build(run)
    assert "Archive of 2 issues in site: 19 files, 19 written, 0 unchanged, 0 removed" in out
    site = two_sent / "site"
    first = site_files(site)
    for path in site.rglob("*"):
        os.utime(path, (OLD, OLD))
    out = build(run)
    assert "0 written" in out and "0 removed" in out
    assert site_files(site) == first
    assert {p.stat().st_mtime for p in site.rglob("*") if p.is_file()} == {OLD}
    # A fresh build elsewhere gives the same bytes: nothing depends on when or where it ran.
    build(run, "-o", str(tmp_path / "elsewhere"))
    assert site_files(tmp_path / "elsewhere") == first
    # No time of the build inside: the sends are dated December and January, the build is today.
    today = dt.datetime.now(dt.UTC).date()
    for name, data in first.items():
        for stamp in (today.isoformat(), long_date(today)):
            assert stamp not in data.decode("utf-8"), name


def test_only_changed_files_are_rewritten_and_gone_pages_removed(run, two_sent, settings):
    build(run)
    site = two_sent / "site"
    for path in site.rglob("*"):
        os.utime(path, (OLD, OLD))
    # The editor corrects a December summary's title.
    path = two_sent / "summaries" / "oct-optic-neuritis.yaml"
    old_title = load_summaries(settings)["oct-optic-neuritis"].title
    path.write_text(path.read_text().replace(old_title, "Retinal scans and optic neuritis"))
    build(run)
    touched = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*")
        if p.is_file() and p.stat().st_mtime != OLD
    )
    assert touched == [
        f"{ISSUE}/index.html",
        "feed.xml",
        "index.html",
        "search.json",
        "search/index.html",
        "topics/diagnosis-imaging/index.html",
    ]
    # The January issue is taken out of the archive: its page and folder go, nothing else does.
    issue_file = two_sent / "issues" / f"{SECOND_ISSUE}.yaml"
    issue_file.write_text(issue_file.read_text() + "archive: false\n")
    out = build(run)
    assert "1 removed" in out
    assert not (site / SECOND_ISSUE).exists()
    assert (site / ISSUE / "index.html").exists()


def test_subscribe_link_only_when_signup_is_offered(run, two_sent, settings):
    config = two_sent / "newsletter.yaml"
    offered = config.read_text()
    assert "signup:\n  enabled: true\n" in offered  # the example offers it
    config.write_text(offered.replace("signup:\n  enabled: true\n", "signup:\n  enabled: false\n"))
    build(run)
    site = two_sent / "site"
    assert "Subscribe" not in read(site, "index.html")
    config.write_text(offered)
    build(run)
    link = f'href="{settings.preferences_base}/subscribe">Subscribe</a>'
    for name in ("index.html", f"{ISSUE}/index.html", "topics/genetics/index.html"):
        assert link in read(site, name), name


def test_summary_text_is_escaped_everywhere(run, workspace, settings):
    add_reader(run)
    send(run, workspace, ISSUE)
    # Edited after the send (`check` would refuse "{{" in an email): still text, never a template.
    path = workspace / "summaries" / "oct-optic-neuritis.yaml"
    path.write_text(
        path.read_text().replace("title: ", "title: <script>alert(1)</script> Tom & {{ x }} ", 1)
    )
    build(run)
    for name, data in site_files(workspace / "site").items():
        assert b"<script>alert(1)" not in data, name
    page = read(workspace / "site", f"{ISSUE}/index.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Tom &amp; {{ x }}" in page


# Refusals: one clear line, exit 1, nothing written ---------------------------------------------


def test_nothing_sent_yet(run, workspace):
    result = run("archive", "build")
    assert result.exit_code == 1
    assert (
        result.stderr == "error: no issue has been sent yet: the archive has nothing to publish\n"
    )
    assert not (workspace / "site").exists()
    assert not (workspace / "newsletter.db").exists()


def test_archive_url_unset(run, workspace):
    config = workspace / "newsletter.yaml"
    config.write_text(re.sub(r"(?m)^archive_url: .*\n", "", config.read_text()))
    result = run("archive", "build")
    assert result.exit_code == 1
    assert "error: archive_url is not set in the settings" in result.stderr
    assert not (workspace / "site").exists()


@pytest.mark.parametrize("url", ["https://example.org/archive/?ref=1", "https://example.org/a#top"])
def test_archive_url_with_query_or_fragment_is_refused(run, workspace, url):
    config = workspace / "newsletter.yaml"
    config.write_text(re.sub(r"(?m)^archive_url: .*$", f"archive_url: {url}", config.read_text()))
    result = run("archive", "build")
    assert result.exit_code == 1
    assert "newsletter.yaml: field 'archive_url': a base URL must not have a query" in (
        result.stderr
    )


def test_sent_issue_whose_file_is_gone(run, workspace):
    add_reader(run)
    send(run, workspace, ISSUE)
    (workspace / "issues" / f"{ISSUE}.yaml").unlink()
    result = run("archive", "build")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: issues/{ISSUE}.yaml: issue {ISSUE} was sent on ")
    assert "its archive page cannot be built" in result.stderr
    assert not (workspace / "site").exists()


def test_invalid_summary_of_a_sent_issue_writes_nothing(run, workspace):
    add_reader(run)
    send(run, workspace, ISSUE)
    build(run)
    before = site_files(workspace / "site")
    path = workspace / "summaries" / "oct-optic-neuritis.yaml"
    path.write_text(path.read_text().replace("date: 2026-11-04", "date: someday"))
    result = run("archive", "build")
    assert result.exit_code == 1
    assert "summaries/oct-optic-neuritis.yaml:5: field 'date'" in result.stderr
    assert "Traceback" not in result.stderr
    assert site_files(workspace / "site") == before


def test_refuses_a_folder_it_did_not_write(run, workspace):
    add_reader(run)
    send(run, workspace, ISSUE)
    result = run("archive", "build", "-o", "summaries")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: summaries: the folder is not empty and was not written by `newsletter archive "
        "build`; choose a new or empty folder with -o\n"
    )
    assert not (workspace / "summaries" / "index.html").exists()
