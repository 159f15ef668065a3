"""`newsletter.web.wsgi:app` under gunicorn with three worker processes, driven by many client
threads at once: on PostgreSQL (the several-hosts deployment) preference changes, one-click
unsubscribes and signups with their confirmations each land exactly once, even when the same
request comes twice at the same moment; and on a SQLite file the same app still reads and writes.

gunicorn's access log names the worker process (`%(p)s`) that served each request, so the test
sees that more than one served. gunicorn runs as a real server on 127.0.0.1, started and stopped
by the test.
"""
# both_engines by hand: each test names its engine (PostgreSQL; a SQLite file).

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from newsletter.store import consents
from newsletter.store import subscribers as store
from newsletter.tokens import LinkSigner
from tests.conftest import TEST_SECRET
from tests.support.delivery import free_port
from tests.support.processes import child_env
from tests.support.signup import CONFIRM_RE, configure_signup, signup_emails, stamp_of, text_of

WORKERS = 3
CLIENTS = 12  # client threads
DEADLINE = 90  # seconds: a safety net for a broken server, never a means of synchronisation
ACCESS_LINE = re.compile(r"^<?(\d+)>? (\w+) (\S+) (\d{3})$")  # gunicorn writes <pid>


@dataclass
class Gunicorn:
    url: str
    master: subprocess.Popen
    access_log: Path
    error_log: Path
    started: frozenset[int] = frozenset()  # the worker pids once all were up

    def workers(self) -> set[int]:
        """The pids of the master's worker processes now (from /proc)."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # the process ended while we looked
                continue
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            if ppid == self.master.pid:
                found.add(int(stat.parent.name))
        return found

    def served(self) -> list[tuple[int, str, str, int]]:
        """(worker pid, method, path, status) of each request in the access log so far."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [
            (int(m[1]), m[2], m[3], int(m[4])) for m in map(ACCESS_LINE.match, lines) if m
        ]  # fmt: skip


def until(condition, what: str, server: Gunicorn | None = None):
    """Poll `condition` until it is true (its value is returned) or DEADLINE passes."""
    end = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if server is not None and server.master.poll() is not None:
            pytest.fail(f"gunicorn exited ({server.master.returncode}): {errors(server)}")
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}: {errors(server) if server else ''}")
        time.sleep(0.05)  # the polling interval


def errors(server: Gunicorn) -> str:
    return server.error_log.read_text()[-3000:] if server.error_log.exists() else ""


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def gunicorn(workspace: Path) -> Iterator[Gunicorn]:
    """`gunicorn -w 3 newsletter.web.wsgi:app` in the workspace, with the test's database
    (NEWSLETTER_DATABASE_URL when it is PostgreSQL), until every worker is up and it answers."""
    env = child_env(
        NEWSLETTER_CONFIG=str(workspace / "newsletter.yaml"), NEWSLETTER_SECRET_KEY=TEST_SECRET
    )
    port = free_port()
    logs = workspace / "gunicorn"
    logs.mkdir()
    server = Gunicorn(
        f"http://127.0.0.1:{port}", None, logs / "access.log", logs / "error.log"
    )  # fmt: skip
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(WORKERS),
        "--bind", f"127.0.0.1:{port}", "--access-logfile", str(server.access_log),
        "--access-logformat", "%(p)s %(m)s %(U)s %(s)s", "--error-logfile", str(server.error_log),
        "newsletter.web.wsgi:app",
    ]  # fmt: skip
    server.master = subprocess.Popen(command, cwd=workspace, env=env, stdin=subprocess.DEVNULL)
    try:
        server.started = frozenset(
            until(lambda: len(server.workers()) == WORKERS and server.workers(), "workers", server)
        )
        until(lambda: answers(server.url), "the server to answer", server)
        yield server
    finally:
        server.master.terminate()  # gunicorn's graceful stop: workers finish, then exit
        try:
            server.master.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            server.master.kill()
            server.master.wait()


def post_all(client: httpx.Client, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """POST each (path, form) from CLIENTS threads at once; every response, in order."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda r: client.post(r[0], data=r[1]), requests))


@pytest.fixture
def people(workspace, db) -> list[store.Subscriber]:
    configure_signup(workspace, min_fill_seconds=0, per_ip_per_hour=10000)
    return [store.insert(db, f"reader{i}@example.org", topics="all") for i in range(40)]


@pytest.mark.postgresql_only
def test_three_workers_on_postgresql_land_every_change_exactly_once(
    workspace, settings, db, people, engine
):
    signer = LinkSigner(TEST_SECRET)
    slugs = settings.topic_slugs
    choosers, leavers = people[:20], people[20:]
    wanted = {p.id: slugs[n % len(slugs)] for n, p in enumerate(choosers)}
    newcomers = [f"new{i}@example.org" for i in range(10)]
    # Every change asked for twice, the two copies side by side: both may run at the same
    # moment in two workers.
    changes = []
    for p in choosers:
        form = {"choice": "chosen", "topics": [wanted[p.id]], "shown": "all"}
        changes += [(f"/preferences/{signer.sign(p.id, 'preferences')}", form)] * 2
    for p in leavers:
        one_click = {"List-Unsubscribe": "One-Click"}
        changes += [(f"/unsubscribe/{signer.sign(p.id, 'unsubscribe')}", one_click)] * 2

    with (
        gunicorn(workspace) as server,
        httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client,
    ):
        stamps = [stamp_of(client.get("/subscribe").text) for _ in newcomers]
        signups = [
            ("/subscribe", {"stamp": s, "email": a, "name": "", "topics": ["genetics"]})
            for s, a in zip(stamps, newcomers, strict=True)
        ]
        answered = post_all(client, changes + signups)
        assert [r.status_code for r in answered] == [200] * len(answered)

        tokens = until(lambda: confirm_tokens(workspace, newcomers), "the confirmation emails")
        confirmed = post_all(client, [(f"/confirm/{tokens[a]}", {}) for a in newcomers] * 2)
        # Each link confirms once (to the preference page); its twin is told it was used.
        n = len(newcomers)
        twins = [sorted((confirmed[i].status_code, confirmed[i + n].status_code)) for i in range(n)]
        assert twins == [[303, 410]] * n, twins
        total = len(stamps) + len(answered) + len(confirmed) + 1  # and the health check
        served = until(lambda: len(server.served()) >= total and server.served(), "the log")

    for p in choosers:
        after = store.get_row(db, p.id)
        assert after.topics == frozenset({wanted[p.id]}) and after.status == "subscribed"
        by_web = [h for h in store.history_rows(db, p.id) if h["source"] == "web"]
        assert [(h["field"], h["new_value"]) for h in by_web] == [("topics", wanted[p.id])]
    for p in leavers:
        assert store.get_row(db, p.id).status == "unsubscribed"
        by_web = [h for h in store.history_rows(db, p.id) if h["source"] == "web"]
        assert [(h["field"], h["new_value"], h["reason"]) for h in by_web] == [
            ("status", "unsubscribed", "one-click unsubscribe")
        ]
    for address in newcomers:
        joined = store.get_row_by_email(db, address)
        assert joined is not None and joined.status == "subscribed"
        assert joined.topics == frozenset({"genetics"})
        fields = [h["field"] for h in store.history_rows(db, joined.id)]
        assert "created" in fields and len(fields) == len(set(fields)), fields  # each once
        assert len(consents.for_email(db, address)) == 1
    assert store.count(db, status=None) == len(people) + len(newcomers)

    statuses = Counter(status for _, _, _, status in served)
    assert not [s for s in statuses if s >= 500], statuses
    pids = Counter(pid for pid, _, _, _ in served)
    assert len(pids) > 1, pids  # more than one worker process served
    assert set(pids) <= server.started  # by the workers started first: none died and was replaced
    assert "Traceback" not in errors(server)


def confirm_tokens(workspace: Path, addresses: list[str]) -> dict[str, str] | None:
    """address → the token of its confirmation email, once every address has one."""
    found = {}
    for _, message in signup_emails(workspace):
        match = CONFIRM_RE.search(text_of(message))
        if match and message["To"] in addresses:
            found[message["To"]] = match.group(1)
    return found if len(found) == len(addresses) else None


def test_three_workers_on_a_sqlite_file_still_read_and_write(workspace, settings, db, people):
    """SQLite with several processes is fine for the web: WAL lets each worker write in turn."""
    signer = LinkSigner(TEST_SECRET)
    choosers, leavers = people[:10], people[10:20]
    changes = [
        (f"/preferences/{signer.sign(p.id, 'preferences')}",
         {"choice": "chosen", "topics": ["genetics"], "shown": "all"})
        for p in choosers
    ] + [
        (f"/unsubscribe/{signer.sign(p.id, 'unsubscribe')}", {"List-Unsubscribe": "One-Click"})
        for p in leavers
    ]  # fmt: skip

    with (
        gunicorn(workspace) as server,
        httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client,
    ):
        answered = post_all(client, changes)
        pages = [client.get(f"/preferences/{signer.sign(p.id, 'preferences')}") for p in leavers]

    assert [r.status_code for r in answered + pages] == [200] * (len(answered) + len(pages))
    assert all("unsubscribed" in r.text for r in pages)
    assert {store.get_row(db, p.id).topics for p in choosers} == {frozenset({"genetics"})}
    assert {store.get_row(db, p.id).status for p in leavers} == {"unsubscribed"}
    assert store.count_by_status(db) == {"subscribed": 30, "unsubscribed": 10}
    assert "Traceback" not in errors(server)
