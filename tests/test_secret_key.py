"""The key that signs every subscriber's links: `serve`, SMTP and SendGrid sends refuse the public
development key and short keys; the outbox works with any, and warns only when none is set."""
# Not both_engines: the signing key's checks, no database.

from __future__ import annotations

import re

import pytest

from newsletter.config import DEV_SECRET
from newsletter.store import ledger
from newsletter.store.subscribers import insert
from newsletter.tokens import LinkSigner
from tests.conftest import TEST_SECRET
from tests.support.delivery import ISSUE, database, parse, text_part

HOW_TO_MAKE_ONE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
WEAK_KEYS = {
    "the development key": (DEV_SECRET, "is the public development key"),
    "ten characters": ("tiny-key-7", "is too short: a secret key has at least 32 characters"),
    "31 characters": ("q" * 31, "is too short"),
}


@pytest.fixture
def servers_started(monkeypatch):
    """Every server `newsletter serve` would start (none is, here)."""
    import newsletter.web

    started = []
    monkeypatch.setattr(newsletter.web, "run_server", lambda *a, **kw: started.append(a))
    return started


@pytest.mark.parametrize(("key", "problem"), WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_serve_refuses_a_weak_key_and_says_how_to_make_one(run, servers_started, key, problem):
    result = run("serve", env={"NEWSLETTER_SECRET_KEY": key})

    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: newsletter serve refuses to start: NEWSLETTER_SECRET_KEY {problem}"
    )
    assert HOW_TO_MAKE_ONE in result.stderr
    if key != DEV_SECRET:
        assert key not in result.output  # a secret is never printed
    assert servers_started == []


def test_serve_starts_with_a_key_of_32_characters(run, servers_started):
    result = run("serve", env={"NEWSLETTER_SECRET_KEY": "k" * 32})
    assert result.exit_code == 0, result.stderr
    assert len(servers_started) == 1


@pytest.mark.parametrize("backend", ["smtp", "sendgrid"])
@pytest.mark.parametrize(("key", "problem"), WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_smtp_and_sendgrid_sends_refuse_a_weak_key(run, settings, backend, key, problem):
    db = database(settings)
    insert(db, "ana@example.org", topics="all")
    # (A port nothing listens on: were the key not refused, nothing would leave this machine.)
    env = {
        "NEWSLETTER_SECRET_KEY": key,
        "SENDGRID_API_KEY": "SG.x",
        "SENDGRID_API_HOST": "http://127.0.0.1:9",
    }

    result = run("send", ISSUE, "--yes", "--backend", backend, env=env)

    assert result.exit_code == 1
    assert f"NEWSLETTER_SECRET_KEY {problem}" in result.stderr
    assert HOW_TO_MAKE_ONE in result.stderr
    assert ledger.counts(db, ISSUE) == {}  # nothing planned, nobody mailed


def test_the_outbox_signs_with_the_real_key_and_warns_of_nothing(run, settings):
    db = database(settings)
    ana = insert(db, "ana@example.org", name="Ana", topics="all")

    result = run("send", ISSUE, "--yes")  # NEWSLETTER_SECRET_KEY is TEST_SECRET

    assert result.exit_code == 0, result.output
    assert "NEWSLETTER_SECRET_KEY" not in result.output
    assert "development key" not in result.output
    [path] = (settings.paths.outbox / ISSUE).glob("*.eml")
    text = text_part(parse(path.read_bytes()))
    token = re.search(r"Unsubscribe: \S+/unsubscribe/(\S+)", text)[1]
    assert LinkSigner(TEST_SECRET).verify(token, "unsubscribe") == ana.id


def test_the_outbox_without_a_key_signs_with_the_development_key_and_says_so(run, settings):
    db = database(settings)
    ana = insert(db, "ana@example.org", name="Ana", topics="all")

    result = run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET_KEY": ""})  # empty: unset

    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "NEWSLETTER_SECRET_KEY is not set: links are signed with the development key" in said
    [path] = (settings.paths.outbox / ISSUE).glob("*.eml")
    text = text_part(parse(path.read_bytes()))
    token = re.search(r"Unsubscribe: \S+/unsubscribe/(\S+)", text)[1]
    assert LinkSigner(DEV_SECRET).verify(token, "unsubscribe") == ana.id


def test_the_wsgi_app_refuses_the_development_key(settings, monkeypatch):
    """`newsletter.web.wsgi:app` under gunicorn or waitress builds the app the same way."""
    from newsletter.errors import ConfigError
    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", DEV_SECRET)
    with pytest.raises(ConfigError, match="public development key.*secrets.token_urlsafe"):
        create_app(settings)
