"""Per-recipient parts: values, signed links, RFC 5322 messages, and no header injection."""
# Not both_engines: building messages, no database.

from __future__ import annotations

import pytest

from newsletter.delivery.batch import Recipient
from newsletter.delivery.message import (
    NAME_FALLBACK,
    Personalizer,
    build_message,
    message_bytes,
    message_id,
    one_line,
)
from newsletter.errors import TokenError
from newsletter.render import Renderer
from newsletter.tokens import LinkSigner
from tests.support.delivery import ISSUE, html_part, issue_summaries, parse, text_part

SECRET = "s" * 40


@pytest.fixture
def signer():
    return LinkSigner(SECRET)


@pytest.fixture
def rendered(settings):
    issue, summaries = issue_summaries(settings)
    return Renderer(settings).render(issue, summaries[:2])


def test_values_name_fallback_topics_phrase_and_signed_links(settings, signer):
    p = Personalizer(settings, signer)
    r = p.recipient(42, "ana@example.org", "", frozenset({"genetics", "womens-health"}))
    assert r.values["name"] == NAME_FALLBACK
    assert r.values["topics"] == "Genetics, Women's health"  # in the settings' order
    base = settings.preferences_base
    assert r.values["preferences_url"].startswith(f"{base}/preferences/")
    assert r.values["unsubscribe_url"].startswith(f"{base}/unsubscribe/")
    pref_token = r.values["preferences_url"].rsplit("/", 1)[1]
    unsub_token = r.values["unsubscribe_url"].rsplit("/", 1)[1]
    assert signer.verify(pref_token, "preferences") == 42
    assert signer.verify(unsub_token, "unsubscribe") == 42
    with pytest.raises(TokenError):  # one salt per purpose
        signer.verify(unsub_token, "preferences")
    assert p.recipient(1, "x@example.org", "Jo", "all").values["topics"] == "all topics"
    assert p.recipient(1, "x@example.org", "  Jo  ", "all").values["name"] == "Jo"


def test_message_has_every_header_and_text_then_html(settings, signer, rendered):
    r = Personalizer(settings, signer).recipient(7, "ana@example.org", "Ana & Jo", "all")
    msg = parse(message_bytes(build_message(settings, rendered, r, issue_id=ISSUE)))

    for header in ("Message-ID", "Date", "From", "Reply-To", "Subject", "MIME-Version", "To"):
        assert msg[header], header
    assert msg["To"].addresses[0].addr_spec == "ana@example.org"
    assert msg["From"].addresses[0].addr_spec == settings.sender.email
    assert msg["Reply-To"].addresses[0].addr_spec == str(settings.reply_to)
    assert msg["Subject"] == rendered.subject
    assert msg["List-Unsubscribe"] == f"<{r.values['unsubscribe_url']}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text, html = text_part(msg), html_part(msg)
    assert "%%" not in text and "%%" not in html
    assert "Hello Ana & Jo," in text
    assert "Ana &amp; Jo" in html and "Ana & Jo" not in html
    assert r.values["unsubscribe_url"] in text and r.values["preferences_url"] in html


def test_list_unsubscribe_is_written_as_is_not_encoded(settings, signer, rendered):
    r = Personalizer(settings, signer).recipient(123456789, "a@example.org", "A", "all")
    raw = message_bytes(build_message(settings, rendered, r, issue_id=ISSUE))
    assert b"\r\nList-Unsubscribe: <https://" in raw  # one line, no RFC 2047 encoded words
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n")[0].split(b"List-Unsubscribe:")[1][:300]
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only


def test_a_subject_or_name_with_cr_lf_cannot_inject_headers(settings, signer, rendered):
    evil_name = "Eve\r\nBcc: victim@example.org"
    r = Personalizer(settings, signer).recipient(9, "eve@example.org", evil_name, "all")
    raw = message_bytes(
        build_message(
            settings,
            rendered,
            r,
            issue_id=ISSUE,
            subject="Hello\r\nBcc: victim@example.org\nX-Evil: 1",
        )
    )
    msg = parse(raw)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert b"\r\nBcc:" not in raw and b"\r\nX-Evil:" not in raw
    assert msg["Subject"] == "Hello Bcc: victim@example.org X-Evil: 1"
    assert msg["To"].addresses[0].addr_spec == "eve@example.org"
    assert "Hello Eve Bcc: victim@example.org," in text_part(msg)


def test_one_line():
    assert one_line("a\r\nb\nc\rd\u2028e\x00f") == "a b c d ef"
    assert one_line("  many   spaces ") == "many spaces"


def test_message_id_is_stable_per_issue_and_subscriber(settings):
    assert message_id(settings, ISSUE, 5) == message_id(settings, ISSUE, 5)
    assert message_id(settings, ISSUE, 5) != message_id(settings, ISSUE, 6)
    assert message_id(settings, ISSUE, 5).endswith("@ms-research.example.org>")
    assert message_id(settings, ISSUE, None) != message_id(settings, ISSUE, None)  # proofs


def test_non_ascii_names_and_subjects_survive(settings, signer, rendered):
    r = Recipient(1, "chen@example.com", "陈伟", {"name": "陈伟", "topics": "Genetics",
                  "preferences_url": "https://x.example/p/1", "unsubscribe_url": "https://x.example/u/1"})  # fmt: skip
    msg = parse(
        message_bytes(build_message(settings, rendered, r, issue_id=ISSUE, subject="Zoë’s"))
    )
    assert msg["To"].addresses[0].display_name == "陈伟"
    assert msg["Subject"] == "Zoë’s"
    assert "Hello 陈伟," in text_part(msg)
