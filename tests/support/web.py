"""Helpers of the preference-centre tests: a real send through the outbox, the links in the
emails it wrote, and a snapshot of the subscriber tables to compare before and after."""

from __future__ import annotations

import email
import re
from email import policy
from html.parser import HTMLParser
from pathlib import Path

from newsletter.store import Database


class LinkCollector(HTMLParser):
    """Every href and src in a document, unescaped as a browser reads them."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def links_in(html: str) -> list[str]:
    collector = LinkCollector()
    collector.feed(html)
    return collector.links


def point_links_at(workspace: Path, base_url: str) -> None:
    """Make the emails' links lead to our test server, as production points them at its host."""
    path = workspace / "newsletter.yaml"
    text = re.sub(r"(?m)^preferences_url: .*$", f"preferences_url: {base_url}", path.read_text())
    path.write_text(text)


def send_outbox(
    run, workspace: Path, issue: str = "2026-12"
) -> dict[int, email.message.EmailMessage]:
    """`newsletter send ISSUE --backend outbox --yes`; the .eml files written, by subscriber id."""
    result = run("send", issue, "--backend", "outbox", "--yes")
    assert result.exit_code == 0, result.output
    folder = workspace / "outbox" / issue
    return {
        int(path.stem): email.message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in folder.glob("*.eml")
    }


def html_of(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def footer_link(message, text: str) -> str:
    html = html_of(message)
    match = re.search(r'<a href="([^"]+)"[^>]*>' + re.escape(text) + "</a>", html)
    assert match, f"no {text!r} link in the email"
    return match.group(1).replace("&amp;", "&")


def db_state(db: Database):
    """Every subscriber row and every history row: a full picture to compare before/after."""
    subscribers = [tuple(r) for r in db.conn.execute("SELECT * FROM subscribers ORDER BY id")]
    history = [tuple(r) for r in db.conn.execute("SELECT * FROM history ORDER BY id")]
    return subscribers, history
