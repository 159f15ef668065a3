"""Shared fixtures: a throw-away copy of the example workspace, and a CLI runner bound to it.

The workspace's database is SQLite, or PostgreSQL in the modules and tests marked
`@pytest.mark.both_engines` (each of their tests runs once per engine): a fresh database on a
throw-away server (`tests/support/postgres.py`) started once for the session, named to the test by
NEWSLETTER_DATABASE_URL. Without PostgreSQL installed those cases skip, unless
NEWSLETTER_TEST_REQUIRE_POSTGRES=1 (as `.ci/run` sets), which makes them fail.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from newsletter.cli import cli
from newsletter.config import Settings, load_settings
from newsletter.store import Database, open_database

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ISSUE = "2026-12"
TEST_SECRET = "test-secret-key-for-signing-links-0123456789"


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "both_engines: run each test on SQLite and on PostgreSQL (the `engine` fixture)"
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): in a both_engines module, a test of SQLite's own ways"
    )
    config.addinivalue_line(
        "markers", "postgresql_only: a test of what only PostgreSQL does (several writers)"
    )


def pytest_generate_tests(metafunc) -> None:
    marked = metafunc.definition.get_closest_marker
    if "engine" not in metafunc.fixturenames:
        return
    if marked("postgresql_only"):
        metafunc.parametrize("engine", ["postgresql"], indirect=True)
    elif marked("both_engines") and not marked("sqlite_only"):
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """One throw-away PostgreSQL server for the session (started on first use)."""
    from tests.support.postgres import PostgresServer

    server = PostgresServer()
    if server.start() is None:
        reason = f"PostgreSQL unavailable: {server.missing}"
        if os.environ.get("NEWSLETTER_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (NEWSLETTER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    yield server
    server.stop()


@pytest.fixture
def engine(request) -> str:
    """The store's engine for this test: 'sqlite', unless the test is marked both_engines."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(engine: str, request, monkeypatch) -> Iterator[str | None]:
    """On PostgreSQL: a fresh, upgraded database, given to the workspace (and to every process
    the test starts) through NEWSLETTER_DATABASE_URL. None on SQLite (the workspace's file)."""
    if engine != "postgresql":
        monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    with Database(url, migrate=False) as fresh:
        fresh.migrate()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    yield url
    server.drop_database(url)


@pytest.fixture
def another_database(engine: str, request) -> Iterator[dict[str, str]]:
    """The environment that points a command at a second, empty database: on PostgreSQL a second
    database's URL; on SQLite nothing (the test names another file in its settings)."""
    if engine != "postgresql":
        yield {}
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    with Database(url, migrate=False) as fresh:
        fresh.migrate()
    yield {"NEWSLETTER_DATABASE_URL": url}
    server.drop_database(url)


@pytest.fixture
def workspace(tmp_path: Path, database_url) -> Path:
    """A copy of the repository's workspace (settings, summaries, issues, templates, CSV); its
    database is `engine`'s."""
    root = tmp_path / "ws"
    root.mkdir()
    for name in ("summaries", "issues", "templates"):
        shutil.copytree(REPO / name, root / name)
    for name in ("newsletter.yaml", "subscribers.example.csv"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    return root


@pytest.fixture
def settings(workspace: Path) -> Settings:
    return load_settings(workspace / "newsletter.yaml")


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The workspace's database (created and migrated on first use)."""
    database = open_database(settings)
    yield database
    database.close()


@pytest.fixture
def app(settings: Settings, monkeypatch):
    """The preference centre (`newsletter serve`'s Flask app) for the workspace."""
    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@contextmanager
def serving(wsgi_app) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 in a thread, for a real browser or HTTP client; yields its URL."""
    httpd = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@pytest.fixture
def run(workspace: Path, monkeypatch):
    """Run `newsletter ARGS...` in the workspace; returns click's Result (stdout and stderr apart)."""
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    monkeypatch.delenv("SENDGRID_API_HOST", raising=False)

    def invoke(*args: str, input: str | None = None, env: dict | None = None):
        runner = CliRunner()
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)

    return invoke


CHROMIUM = "/usr/bin/chromium"
# Without these flags Chromium tries to reach Google's hosts, which this machine cannot.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (one browser for the whole session)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def example_site():
    """The example summaries site (`tests/example_site.py`) served on 127.0.0.1."""
    from tests.example_site import ExampleSite

    site = ExampleSite()
    with serving(site) as url:
        site.url = url
        try:
            yield site
        finally:
            site.release.set()  # let any answer held back for a timeout test finish
