"""Shared helpers of the archive tests: send real issues through the outbox, build the archive,
and map the archive's public URLs back to the files that were built."""

from __future__ import annotations

import email
import html as html_lib
import re
import shutil
from email import policy
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.store import Database
from tests.conftest import REPO, TEST_SECRET

ARCHIVE_URL = "https://news.ms-research.example.org/archive/"
FIRST_ISSUE = "2026-12"
SECOND_ISSUE = "2027-01"


def send(run, workspace: Path, issue: str) -> dict[int, email.message.EmailMessage]:
    """`newsletter send ISSUE --backend outbox --yes`; the messages written, by subscriber id."""
    result = run("send", issue, "--backend", "outbox", "--yes")
    assert result.exit_code == 0, result.output
    return {
        int(path.stem): email.message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted((workspace / "outbox" / issue).glob("*.eml"))
    }


def import_example_subscribers(run) -> None:
    result = run("subscribers", "import", "subscribers.example.csv")
    assert result.exit_code == 0, result.output


def add_reader(run) -> None:
    """One subscriber of all topics: one render an issue, so a send takes a moment."""
    result = run("subscribers", "add", "reader@example.org", "--name", "Reader", "--topics", "all")
    assert result.exit_code == 0, result.output


def compose_second_issue(run) -> None:
    """A second issue (January 2027) from the summaries the first one did not use."""
    result = run("compose", "--date", "2027-01-20", "--id", SECOND_ISSUE)
    assert result.exit_code == 0, result.output


def set_sent_day(db: Database, issue: str, day: str) -> None:
    """Date a send as if it had begun on `day` (the tests all run on one day)."""
    with db.transaction():
        db.conn.execute(
            "UPDATE sends SET created_at = ? WHERE issue_id = ?", (f"{day}T09:30:00Z", issue)
        )


def send_two_issues(run, workspace: Path, db: Database) -> None:
    """The December issue and a January one sent to a reader (outbox), dated as if sent on
    1 December and 5 January, and a third issue file composed but never sent (2027-02)."""
    add_reader(run)
    send(run, workspace, FIRST_ISSUE)
    compose_second_issue(run)
    send(run, workspace, SECOND_ISSUE)
    set_sent_day(db, FIRST_ISSUE, "2026-12-01")
    set_sent_day(db, SECOND_ISSUE, "2027-01-05")
    draft = workspace / "issues" / "2027-02.yaml"
    draft.write_text(
        (workspace / "issues" / f"{FIRST_ISSUE}.yaml")
        .read_text()
        .replace("id: 2026-12", "id: 2027-02")
        .replace("December 2026", "February 2027 draft")
    )


def example_archive(root: Path) -> Path:
    """A copy of the example workspace in `root` where the December and January issues were sent
    to two readers (outbox, dated 1 December and 5 January), a February draft was never sent, and
    the archive was built into site/. For module-scoped fixtures of tests that only look."""
    root.mkdir(parents=True)
    for name in ("summaries", "issues", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("NEWSLETTER_CONFIG", raising=False)
        mp.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)

        def run(*args: str):
            return CliRunner().invoke(cli, list(args), catch_exceptions=False)

        db = Database(root / "newsletter.db")
        try:
            send_two_issues(run, root, db)
        finally:
            db.close()
        build(run)
    return root


def build(run, *args: str) -> str:
    result = run("archive", "build", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def site_files(folder: Path) -> dict[str, bytes]:
    """Every file of a built site, by path below it."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def page_file(site: Path, path: str) -> Path:
    """The file a static host serves for a URL path below the archive's root."""
    path = path.lstrip("/")
    return site / (path + "index.html" if path == "" or path.endswith("/") else path)


def file_for_url(site: Path, url: str, base: str = ARCHIVE_URL) -> Path | None:
    """The built file behind an absolute archive URL; None when the URL is not in the archive."""
    if not url.startswith(base):
        return None
    return page_file(site, urlsplit(url).path[len(urlsplit(base).path) :])


class PageLinks(HTMLParser):
    """The links (href/src of a, link, script; og:url), ids and headings of one page."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.ids: list[str] = []
        self.meta: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append((tag, attrs[name]))
        if tag == "meta" and attrs.get("property"):
            self.meta[attrs["property"]] = attrs.get("content", "")
        if tag == "form" and attrs.get("action"):
            self.links.append((tag, attrs["action"]))


def resolve(page_url: str, href: str) -> str:
    return urljoin(page_url, href)


def text_of(html: str) -> str:
    """Visible text of a page, spaces collapsed."""
    without = re.sub(r"(?s)<(script|style|head)\b.*?</\1>", " ", html)
    text = re.sub(r"<[^>]+>", " ", without)
    return " ".join(html_lib.unescape(text).split())
