"""Click and open tracking are said on every SendGrid request, as the settings say (both off by
default), so that an account's own defaults never rewrite links or add a pixel; the requests
stay valid under SendGrid's official schema and the email itself is the same either way."""
# Not both_engines: tracking settings (the send through the ledger: test_backend_sendgrid).

from __future__ import annotations

import pytest
import yaml

from newsletter.config import load_settings
from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.render import MARKER_RE, Renderer
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import ISSUE, add_many, configure, database, schema_problems

SECRET = "k" * 40


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeSendGrid() as server:
        yield server


def send_through(run, workspace, fake, **sendgrid):
    """`newsletter send` to four subscribers through the fake SendGrid; the accepted bodies."""
    settings = configure(
        workspace,
        backend="sendgrid",
        batch_size=2,
        sendgrid={"sync_suppressions": False, **sendgrid},
    )
    db = database(settings)
    add_many(db, 4)
    db.close()
    env = {
        "SENDGRID_API_KEY": TEST_API_KEY,
        "SENDGRID_API_HOST": fake.url,
        "NEWSLETTER_SECRET_KEY": SECRET,
    }
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 0, result.output
    bodies = [r["payload"] for r in fake.accepted()]
    assert len(bodies) == 2
    assert schema_problems(bodies) == []
    return bodies


def test_both_are_off_unless_asked_for(run, workspace, fake):
    for body in send_through(run, workspace, fake):
        assert body["tracking_settings"] == {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
        }


def test_click_tracking_on_rewrites_only_the_html_part_and_opens_stay_off(run, workspace, fake):
    for body in send_through(run, workspace, fake, click_tracking=True):
        assert body["tracking_settings"]["click_tracking"] == {"enable": True, "enable_text": False}
        assert body["tracking_settings"]["open_tracking"] == {"enable": False}


def test_open_tracking_only_when_asked(run, workspace, fake):
    for body in send_through(run, workspace, fake, open_tracking=True):
        assert body["tracking_settings"]["open_tracking"] == {"enable": True}
        assert body["tracking_settings"]["click_tracking"]["enable"] is False


def test_the_email_is_the_same_with_tracking_on(run, workspace, fake):
    """No marker, parameter or pixel of ours in either part: links are known by their URL."""
    on = send_through(run, workspace, fake, click_tracking=True, open_tracking=True)
    settings = load_settings(workspace / "newsletter.yaml")
    issue = load_issue(settings, ISSUE)
    email = Renderer(settings).render(issue, resolve_summaries(issue, load_summaries(settings)))

    def unmarked(text: str) -> str:
        return MARKER_RE.sub("%%marker%%", text)

    for body in on:
        assert [unmarked(part["value"]) for part in body["content"]] == [
            unmarked(email.text),
            unmarked(email.html),
        ]


def test_a_setting_that_is_not_yes_or_no_is_refused_by_name(run, workspace):
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["delivery"] = {"sendgrid": {"click_tracking": "sometimes"}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    result = run("report", ISSUE)

    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "delivery.sendgrid.click_tracking" in line
