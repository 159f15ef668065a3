"""The List-Id header (RFC 2919) on every backend's messages, beside what held before it:
one-click unsubscribe headers, Message-ID, Date, and the text part before the HTML part."""
# Not both_engines: headers per backend (the sends through the ledger: test_backend_*).

from __future__ import annotations

import email
import re
from email import policy
from email.utils import parseaddr

import pytest

from newsletter.config import Settings
from newsletter.delivery.message import Personalizer, build_message, list_id, message_bytes
from newsletter.render import Renderer
from newsletter.tokens import LinkSigner
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, configure, issue_summaries

EXAMPLE_LIST_ID = "MS Research Monthly <ms-research-monthly.ms-research.example.org>"
# RFC 2919: list-id = [phrase] "<" list-label "." list-id-namespace ">"
LIST_ID_RE = re.compile(r"^(?P<phrase>.+) <(?P<label>[A-Za-z0-9-]+)\.(?P<namespace>[a-z0-9.-]+)>$")


def parse(data: bytes):
    return email.message_from_bytes(data, policy=policy.default)


def test_example_list_id_names_the_newsletter_under_the_sender_domain(settings):
    assert list_id(settings) == EXAMPLE_LIST_ID


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Dr. Lee's MS News, weekly", '"Dr. Lee\'s MS News, weekly"'),  # specials are quoted
        ("Ærø MS-nyt", None),  # non-ASCII: an encoded word, read back as it was
    ],
)
def test_any_name_gives_a_valid_list_id(settings, name, shown):
    other = Settings(**(settings.model_dump() | {"name": name, "base_dir": settings.base_dir}))
    value = list_id(other)
    match = LIST_ID_RE.match(value)
    assert match, value
    assert match["namespace"] == "ms-research.example.org"
    assert value.isascii()
    if shown is not None:
        assert match["phrase"] == shown
    header = parse(f"List-Id: {value}\r\n\r\n".encode())["List-Id"]
    assert parseaddr(str(header)) == (name, match["label"] + "." + match["namespace"])


def test_message_keeps_one_click_message_id_date_and_text_first(settings):
    issue, summaries = issue_summaries(settings)
    rendered = Renderer(settings).render(issue, summaries[:2])
    recipient = Personalizer(settings, LinkSigner("s" * 40)).recipient(
        7, "ana@example.org", "Ana", "all"
    )
    msg = parse(message_bytes(build_message(settings, rendered, recipient, issue_id=ISSUE)))
    assert msg["List-Id"] == EXAMPLE_LIST_ID
    assert msg["List-Unsubscribe"] == f"<{recipient.values['unsubscribe_url']}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == f"<newsletter.{ISSUE}.7@ms-research.example.org>"
    assert msg["Date"].datetime is not None
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_every_outbox_message_of_the_example_send_has_it(run, workspace, settings):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    assert run("send", ISSUE, "--yes").exit_code == 0
    assert run("send", ISSUE, "--proof", "me@example.org", "--yes").exit_code == 0
    files = sorted((workspace / "outbox" / ISSUE).rglob("*.eml"))
    assert len(files) == 21
    for path in files:
        msg = parse(path.read_bytes())
        assert msg.get_all("List-Id") == [EXAMPLE_LIST_ID], path


def test_every_sendgrid_request_has_it(run, workspace, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    configure(workspace, backend="sendgrid", sendgrid={"sync_suppressions": False})
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    with FakeSendGrid() as fake:
        env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
        assert run("send", ISSUE, "--yes", env=env).exit_code == 0
        assert run("send", ISSUE, "--proof", "me@example.org", "--yes", env=env).exit_code == 0
        bodies = [request["payload"] for request in fake.accepted()]
    assert len(bodies) >= 2
    for body in bodies:
        assert body["headers"] == {"List-Id": EXAMPLE_LIST_ID}
        for personalization in body["personalizations"]:
            # The per-recipient one-click headers stay where they were.
            assert set(personalization["headers"]) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
