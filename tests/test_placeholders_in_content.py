"""Text from summaries, issues and subscribers that looks like a per-recipient placeholder stays
text: it is never filled in, by our own `fill` (outbox, SMTP) or by SendGrid's substitutions."""
# Not both_engines: rendering, no database.

from __future__ import annotations

import html
import re

import pytest
import yaml

from newsletter.render import Renderer
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import (
    ISSUE,
    configure,
    database,
    html_part,
    issue_summaries,
    parse,
    schema_problems,
    text_part,
)

# What someone who read the README would type to get at other people's links and names.
LOOKALIKE = "%%unsubscribe_url|html%% %%unsubscribe_url%% %%preferences_url%% %%name|html%%"
FEATURED = "pregnancy-breastfeeding-therapy"  # the issue's first summary: shown in full
CARD = "gut-bacteria-disease-activity"  # the second: shown as a card
SUMMARY_FIELDS = {
    FEATURED: ("title", "headline", "journal", "findings", "why_it_matters", "limitations"),
    CARD: ("title", "teaser"),
}
ISSUE_FIELDS = ("subject", "preheader", "intro")


def literal(where: str) -> str:
    return f"[{where}] {LOOKALIKE}"


@pytest.fixture
def lookalike_workspace(workspace):
    """Every content field that reaches an email holds placeholder look-alikes."""
    for summary_id, fields in SUMMARY_FIELDS.items():
        path = workspace / "summaries" / f"{summary_id}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name in fields:
            data[name] = literal(f"{summary_id}.{name}")
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    path = workspace / "issues" / f"{ISSUE}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name in ISSUE_FIELDS:
        data[name] = literal(f"issue.{name}")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return workspace


NAMED_LIKE_A_PLACEHOLDER = "%%unsubscribe_url|html%%"


def add_readers(settings):
    db = database(settings)
    insert(db, "mallory@example.org", name=NAMED_LIKE_A_PLACEHOLDER, topics="all")
    insert(db, "ana@example.org", name="Ana", topics="all")
    db.close()


def check_received(subject: str, text: str, body_html: str, unsubscribe: str, name: str) -> None:
    """What a reader sees: every field as written, their own link only where the template puts it."""
    flat_text = " ".join(text.split())
    flat_html = " ".join(html.unescape(body_html).split())
    assert subject == literal("issue.subject")
    for summary_id, fields in SUMMARY_FIELDS.items():
        for field in fields:
            expected = literal(f"{summary_id}.{field}")
            assert expected in flat_text, f"text part: {summary_id}.{field}"
            assert expected in flat_html, f"HTML part: {summary_id}.{field}"
    for field in ISSUE_FIELDS:
        expected = literal(f"issue.{field}")
        assert expected in flat_html, f"HTML part: issue.{field}"
        if field == "intro":
            assert expected in flat_text, "text part: issue.intro"
    assert f"Hello {name}," in flat_text
    assert f"Hello {name}," in flat_html
    # The reader's unsubscribe link: once in each part (the footer), nowhere else.
    assert unsubscribe.startswith("https://")
    assert flat_text.count(unsubscribe) == 1
    assert flat_html.count(unsubscribe) == 1


def test_placeholder_lookalikes_in_content_and_names_stay_text_in_the_outbox(
    run, lookalike_workspace, settings
):
    add_readers(settings)

    result = run("send", ISSUE, "--yes")

    assert result.exit_code == 0, result.output
    messages = [parse(p.read_bytes()) for p in (settings.paths.outbox / ISSUE).glob("*.eml")]
    assert len(messages) == 2
    for msg in messages:
        [to] = msg["To"].addresses
        name = NAMED_LIKE_A_PLACEHOLDER if to.addr_spec.startswith("mallory") else "Ana"
        unsubscribe = msg["List-Unsubscribe"].strip("<>")
        check_received(msg["Subject"], text_part(msg), html_part(msg), unsubscribe, name)


def sendgrid_substitutes(text: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions: each key replaced wherever it
    occurs, one after the other (so a value holding another key would be replaced too)."""
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def test_placeholder_lookalikes_in_content_and_names_stay_text_through_sendgrid(
    run, lookalike_workspace, monkeypatch
):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    settings = configure(
        lookalike_workspace, backend="sendgrid", sendgrid={"sync_suppressions": False}
    )
    add_readers(settings)
    with FakeSendGrid() as fake:
        env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
        result = run("send", ISSUE, "--yes", env=env)
        accepted = fake.accepted()

    assert result.exit_code == 0, result.output
    [request] = accepted
    payload = request["payload"]
    assert schema_problems([payload]) == []  # (SendGrid's own schema, when its spec is present)
    text, body_html = (part["value"] for part in payload["content"])
    assert len(payload["personalizations"]) == 2
    for personalization in payload["personalizations"]:
        subs = personalization["substitutions"]
        [to] = personalization["to"]
        name = NAMED_LIKE_A_PLACEHOLDER if to["email"].startswith("mallory") else "Ana"
        unsubscribe = personalization["headers"]["List-Unsubscribe"].strip("<>")
        check_received(
            sendgrid_substitutes(payload["subject"], subs),
            sendgrid_substitutes(text, subs),
            sendgrid_substitutes(body_html, subs),
            unsubscribe,
            name,
        )


def test_a_placeholder_seen_in_one_render_is_not_one_in_the_next(settings):
    """The markers are made per render: one copied from an email (or an old render) into a
    summary is only text the next time."""
    issue, summaries = issue_summaries(settings)
    renderer = Renderer(settings)
    first = renderer.render(issue, summaries)
    second = renderer.render(issue, summaries)
    assert first.placeholders.text["unsubscribe_url"] in first.text
    assert first.placeholders.nonce != second.placeholders.nonce
    assert not set(first.substitutions({})) & set(second.substitutions({}))
    for marker in first.substitutions({}):
        assert marker not in second.text and marker not in second.html
    assert re.fullmatch(r"[0-9a-f]{16}", second.placeholders.nonce)
