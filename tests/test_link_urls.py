"""Base URLs in the settings: one with a query or fragment is refused (the token of every link
would land in it), and the links in the email carry their token in the path."""
# Not both_engines: settings and rendering, no database.

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from newsletter.store.subscribers import insert
from newsletter.tokens import LinkSigner
from tests.conftest import TEST_SECRET
from tests.support.delivery import ISSUE, database, parse, text_part


def set_setting(workspace, key, value):
    path = workspace / "newsletter.yaml"
    lines = path.read_text().splitlines()
    [i] = [n for n, line in enumerate(lines) if line.startswith(f"{key}:")]
    lines[i] = f"{key}: {value!r}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("key", ["preferences_url", "site_url"])
@pytest.mark.parametrize(
    "url",
    [
        "https://news.example.org/?ref=email",
        "https://news.example.org/#top",
        "https://news.example.org/centre?",
    ],
)
def test_a_base_url_with_a_query_or_fragment_is_refused(run, workspace, key, url):
    set_setting(workspace, key, url)

    result = run("check", ISSUE)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: newsletter.yaml: field '{key}': a base URL must not have a query ('?…') or a "
        "fragment ('#…'): links are made by adding a path to it\n"
    )


def test_a_base_url_with_a_password_is_refused(run, workspace):
    set_setting(workspace, "preferences_url", "https://admin:hunter2@news.example.org/")
    result = run("check", ISSUE)
    assert result.exit_code == 1
    assert "field 'preferences_url': a base URL must not hold a user name or password" in (
        result.stderr
    )


def test_links_carry_the_token_in_the_path_under_a_base_path(run, workspace, settings):
    set_setting(workspace, "preferences_url", "https://example.org/newsletter/")
    db = database(settings)
    ana = insert(db, "ana@example.org", topics="all")

    assert run("send", ISSUE, "--yes").exit_code == 0

    [path] = (settings.paths.outbox / ISSUE).glob("*.eml")
    msg = parse(path.read_bytes())
    signer = LinkSigner(TEST_SECRET)
    unsubscribe = urlsplit(msg["List-Unsubscribe"].strip("<>"))
    assert (unsubscribe.query, unsubscribe.fragment) == ("", "")
    prefix, token = unsubscribe.path.rsplit("/", 1)
    assert prefix == "/newsletter/unsubscribe"
    assert signer.verify(token, "unsubscribe") == ana.id
    text = text_part(msg)
    manage = urlsplit(text.split("Manage preferences: ", 1)[1].split()[0])
    assert manage.netloc == "example.org" and (manage.query, manage.fragment) == ("", "")
    assert manage.path.startswith("/newsletter/preferences/")
    assert signer.verify(manage.path.rsplit("/", 1)[1], "preferences") == ana.id


def test_link_functions_put_the_token_in_the_path_whatever_the_base():
    """The settings refuse such bases; a library caller passing one still gets working links."""
    from newsletter.tokens import preferences_url, unsubscribe_url

    signer = LinkSigner(TEST_SECRET)
    for make, purpose in ((preferences_url, "preferences"), (unsubscribe_url, "unsubscribe")):
        link = urlsplit(make("https://example.org/news/?ref=mail#top", signer, 7))
        prefix, token = link.path.rsplit("/", 1)
        assert prefix == f"/news/{purpose}"
        assert signer.verify(token, purpose) == 7
        assert (link.query, link.fragment) == ("ref=mail", "top")
