"""The preference centre's defences: signed links only, headers on every response, no scripts,
and a mail scanner fetching every link of a real sent email changes nothing."""

from __future__ import annotations

import importlib
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from newsletter.errors import ConfigError
from newsletter.store import subscribers as store
from newsletter.tokens import LinkSigner
from newsletter.web import create_app
from tests.conftest import TEST_SECRET, serving
from tests.support.postgres import workspace_database
from tests.support.web import db_state, html_of, links_in, point_links_at, send_outbox

pytestmark = pytest.mark.both_engines

SIGNER = LinkSigner(TEST_SECRET)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REQUIRED_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


# --- Fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def live(app):
    with serving(app) as base:
        yield base


@pytest.fixture
def two(db):
    a = store.insert(db, "alice@example.com", name="Alice", topics={"genetics"})
    b = store.insert(db, "bob@example.com", name="Bob", topics={"infections"})
    return a, b


# --- Headers --------------------------------------------------------------------------------------


def responses(client, a):
    prefs = SIGNER.sign(a.id, "preferences")
    unsub = SIGNER.sign(a.id, "unsubscribe")
    return {
        "preferences": client.get(f"/preferences/{prefs}"),
        "preferences saved": client.post(f"/preferences/{prefs}", data={"topics": "genetics"}),
        "preferences refused": client.post(f"/preferences/{prefs}", data={"choice": "chosen"}),
        "unsubscribe page": client.get(f"/unsubscribe/{unsub}"),
        "unsubscribed": client.post(f"/unsubscribe/{unsub}"),
        "resubscribed": client.post(f"/resubscribe/{prefs}"),
        "invalid link": client.get("/preferences/1.forged"),
        "not found": client.get("/nothing-here"),
        "wrong method": client.get(f"/resubscribe/{prefs}"),
        "stylesheet": client.get("/static/style.css"),
        "health": client.get("/healthz"),
        "webhook": client.post("/webhooks/sendgrid", data=b"[]"),
        "too large": client.post(f"/unsubscribe/{unsub}", data=b"x" * (6 * 1024 * 1024)),
    }


@pytest.mark.sqlite_only("the headers")
def test_security_headers_on_every_response(client, two):
    got = responses(client, two[0])
    expected_status = {
        "preferences refused": 422,
        "invalid link": 400,
        "not found": 404,
        "wrong method": 405,
        "webhook": 503,
        "too large": 413,
    }
    for name, response in got.items():
        assert response.status_code == expected_status.get(name, 200), name
        for header, value in REQUIRED_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert "script-src" not in directives  # so scripts fall back to 'none'
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert directives["form-action"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "Set-Cookie" not in response.headers, name
        if name != "stylesheet":
            assert response.headers["Cache-Control"] == "no-store", name


@pytest.mark.sqlite_only("the pages' markup")
def test_pages_have_no_inline_script_or_style(client, db, two):
    a, _ = two
    store.insert(db, "gone@example.com", status="unsubscribed")
    pages = [r for r in responses(client, a).values() if r.mimetype == "text/html"]
    assert len(pages) >= 8
    for response in pages:
        html = response.get_data(as_text=True)
        assert "<script" not in html.lower()
        assert "<style" not in html.lower()
        assert not re.search(r"\sstyle\s*=", html, re.I)
        assert not re.search(r"\son[a-z]+\s*=", html, re.I)
        assert 'rel="stylesheet" href="/static/style.css"' in html
        assert '<html lang="en">' in html and 'name="viewport"' in html


# --- Tokens ---------------------------------------------------------------------------------------


def bad_tokens(a, b):
    good = SIGNER.sign(a.id, "preferences")
    sig = good.split(".", 1)[1]
    flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
    return {
        "forged": f"{a.id}.{'x' * len(sig)}",
        "truncated": good[:-4],
        "altered": flipped,
        "no signature": str(a.id),
        "other subscriber's id": f"{b.id}.{sig}",
        "other key": LinkSigner("another-secret").sign(a.id, "preferences"),
        "not ascii": f"{a.id}.é{sig}",
        "unknown subscriber": SIGNER.sign(9999, "preferences"),
    }


ROUTES = [
    ("GET", "preferences"),
    ("POST", "preferences"),
    ("GET", "unsubscribe"),
    ("POST", "unsubscribe"),
    ("POST", "resubscribe"),
]


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_bad_tokens_get_400_and_change_nothing(client, db, two, method, route):
    a, b = two
    store.write_status(db, a.id, "unsubscribed", "cli")  # so that a resubscribe would show
    before = db_state(db)
    tokens = bad_tokens(a, b)
    # A token for another purpose (unsubscribe ↔ preferences) is refused as well.
    other = "unsubscribe" if route in ("preferences", "resubscribe") else "preferences"
    tokens["other purpose"] = SIGNER.sign(a.id, other)
    for name, token in tokens.items():
        path = f"/{route}/{urllib.parse.quote(token)}"
        data = {"choice": "chosen", "topics": ["infections"], "List-Unsubscribe": "One-Click"}
        response = client.open(path, method=method, data=data if method == "POST" else None)
        assert response.status_code == 400, (name, response.status_code)
        assert "This link does not work" in response.get_data(as_text=True), name
    assert db_state(db) == before


def test_a_token_acts_on_its_own_subscriber_only(client, db, two):
    a, b = two
    before_b = [
        tuple(r) for r in db.conn.execute("SELECT * FROM subscribers WHERE id = ?", (b.id,))
    ]
    client.post(f"/unsubscribe/{SIGNER.sign(a.id, 'unsubscribe')}")
    client.post(
        f"/preferences/{SIGNER.sign(a.id, 'preferences')}",
        data={"choice": "chosen", "topics": ["womens-health"], "subscribe_again": "yes"},
    )
    # ("Subscribe again with these topics", the button an unsubscribed subscriber sees.)
    assert store.get_row(db, a.id).status == "subscribed"
    assert store.get_row(db, a.id).topics == {"womens-health"}
    after_b = [tuple(r) for r in db.conn.execute("SELECT * FROM subscribers WHERE id = ?", (b.id,))]
    assert after_b == before_b
    assert {h["source"] for h in store.history_rows(db, a.id)[2:]} == {"web"}


# --- Refusing to start, and the ways to run it ----------------------------------------------------


@pytest.mark.sqlite_only("the secret key: no database")
def test_app_refuses_to_start_without_the_secret(settings, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY is not set"):
        create_app(settings)


@pytest.mark.sqlite_only("the secret key: no database")
def test_serve_refuses_without_the_secret(run):
    result = run("serve", env={"NEWSLETTER_SECRET_KEY": ""})
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: newsletter serve refuses to start: NEWSLETTER_SECRET_KEY is not set"
    )


@pytest.mark.sqlite_only("which server runs the app")
def test_serve_runs_waitress(run, monkeypatch):
    import waitress

    calls = []
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: calls.append((app, kw)))
    result = run("serve", "--host", "127.0.0.1", "--port", "8099")
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8099/" in result.stdout
    ((app, options),) = calls
    assert options["host"] == "127.0.0.1" and options["port"] == 8099
    assert app.test_client().get("/healthz").status_code == 200


def test_wsgi_module_builds_the_app_from_newsletter_config(workspace, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(workspace / "newsletter.yaml"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.delitem(sys.modules, "newsletter.web.wsgi", raising=False)
    module = importlib.import_module("newsletter.web.wsgi")
    try:
        assert module.app.test_client().get("/healthz").status_code == 200
        assert module.app.extensions["newsletter"]["database"] == workspace_database(workspace)
    finally:
        sys.modules.pop("newsletter.web.wsgi", None)


# --- A mail scanner follows every link of a real email ---------------------------------------------


def test_scanner_fetching_every_link_changes_nothing(run, workspace, live, db):
    a = store.insert(db, "alice@example.com", name="Alice", topics={"genetics", "infections"})
    store.insert(db, "bob@example.com", name="Bob", topics="all")
    point_links_at(workspace, live)
    messages = send_outbox(run, workspace)
    assert set(messages) >= {a.id}
    before = db_state(db)

    fetched: dict[str, int] = {}

    def scan(url: str, depth: int) -> None:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(live + "/", url))
        if parts.scheme not in ("http", "https"):
            return  # mailto:
        # Links to other sites are fetched from our server too: a scanner must find nothing
        # there that changes state either.
        target = live + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if target in fetched:
            return
        for method in ("HEAD", "GET"):  # GET last: its body is crawled
            request = urllib.request.Request(target, method=method)
            try:
                with NO_PROXY.open(request, timeout=10) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            fetched[target] = status
        if depth < 2 and body:
            for link in links_in(body.decode("utf-8", "replace")):
                scan(urllib.parse.urljoin(target, link), depth + 1)

    for message in messages.values():
        scan(message["List-Unsubscribe"].strip("<>"), 0)
        for link in links_in(html_of(message)):
            scan(link, 0)

    ours = [u for u in fetched if "/unsubscribe/" in u or "/preferences/" in u]
    assert len(ours) >= 4  # each recipient's two links, and pages' own links
    assert all(fetched[u] == 200 for u in ours)
    assert db_state(db) == before
    assert fetched[live + "/static/style.css"] == 200  # the pages' own links were followed too
