"""Shared helpers of the sending tests: small-batch settings, subscribers, parsed messages, a
scripted backend that the send loop can be given instead of a real one (no monkeypatching), a free
loopback port, and the check of request bodies against SendGrid's official schema."""

from __future__ import annotations

import email
import functools
import socket
import threading
from collections import Counter
from email import policy
from pathlib import Path

import yaml

from newsletter.config import Settings, load_settings
from newsletter.content import load_issue, load_summaries, resolve_summaries
from newsletter.delivery.backends.base import BaseBackend
from newsletter.delivery.batch import Batch, BatchResult
from newsletter.render import select_summaries
from newsletter.store import Database, open_database
from newsletter.store.subscribers import insert
from tests.fake_sendgrid import default_spec_dir, load_mail_send_schema

ISSUE = "2026-12"

# (email, name, topics, status). The 2026-12 issue covers every configured topic, so only a
# topic that no longer exists in the settings selects nothing ("no matching topics").
PEOPLE = [
    ("all1@example.org", "Alex All", "all", "subscribed"),
    ("all2@example.org", "", "all", "subscribed"),
    ("women@example.org", "Wanda", ["womens-health"], "subscribed"),
    ("women2@example.org", "Wil", ["womens-health"], "subscribed"),
    ("gut@example.org", "Gus", ["gut-microbiome"], "subscribed"),
    ("vax@example.org", "Vic", ["infections", "genetics"], "subscribed"),
    ("safety@example.org", "Sam", ["treatment-safety"], "subscribed"),
    ("retired@example.org", "Rita", ["retired-topic"], "subscribed"),
    ("gone@example.org", "Gone", "all", "unsubscribed"),
    ("bounced@example.org", "Bo", "all", "bounced"),
]
ELIGIBLE = [p[0] for p in PEOPLE if p[3] == "subscribed" and p[2] != ["retired-topic"]]


def configure(workspace: Path, **delivery) -> Settings:
    """Rewrite the workspace's `delivery:` settings (nested dicts merge) and load them."""
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    section = data.setdefault("delivery", {})
    for key, value in delivery.items():
        if isinstance(value, dict):
            section.setdefault(key, {}).update(value)
        else:
            section[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_settings(path)


def database(settings: Settings) -> Database:
    return open_database(settings)


def add_people(db: Database, people=PEOPLE) -> dict[str, int]:
    """Insert subscribers; returns email → id."""
    ids = {}
    for address, name, topics, status in people:
        ids[address] = insert(db, address, name=name, topics=topics, status=status).id
    return ids


def add_many(db: Database, count: int, topics: str = "all", start: int = 0) -> None:
    """Many subscribers at once (one transaction), named user<N>@example.org."""
    from newsletter.store import now

    at = now()
    with db.transaction():
        db.conn.executemany(
            "INSERT INTO subscribers (email, name, topics, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'subscribed', ?, ?)",
            (
                (f"user{i}@example.org", f"User {i}", topics, at, at)
                for i in range(start, start + count)
            ),
        )


def issue_summaries(settings: Settings):
    issue = load_issue(settings, ISSUE)
    return issue, resolve_summaries(issue, load_summaries(settings))


def titles_for(settings: Settings, topics) -> list[str]:
    """Titles of the summaries a subscriber with these topics gets, in issue order."""
    _, summaries = issue_summaries(settings)
    if topics != "all":
        topics = [t for t in topics if t in settings.topic_slugs]
    return [s.title for s in select_summaries(summaries, topics)]


def all_titles(settings: Settings) -> list[str]:
    return titles_for(settings, "all")


def titles_in(text: str, settings: Settings) -> list[str]:
    """Which of the issue's summary titles appear in a message body."""
    flat = " ".join(text.split())
    return [t for t in all_titles(settings) if t in flat]


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


def text_part(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def html_part(msg) -> str:
    return msg.get_body(("html",)).get_content()


def ledger_states(db: Database, issue_id: str = ISSUE) -> dict[str, str]:
    """email → ledger state."""
    rows = db.conn.execute(
        "SELECT s.email, l.state FROM ledger l JOIN subscribers s ON s.id = l.subscriber_id "
        "WHERE l.issue_id = ?",
        (issue_id,),
    )
    return {r[0]: r[1] for r in rows}


def free_port() -> int:
    """A loopback port that nothing listens on (until the test starts a server there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def duplicates(addresses) -> list[str]:
    return [a for a, n in Counter(addresses).items() if n > 1]


class ScriptedBackend(BaseBackend):
    """A backend for send-loop tests: records every call; `script` says what each call does.

    A script entry is None (accept everyone), an exception (raised before anything is accepted),
    or a callable (batch, result) -> None that does what it likes.
    """

    name = "scripted"
    requires_secret = False

    def __init__(self, script=(), max_batch: int = 3):
        self.script = list(script)
        self.max_batch = max_batch
        self.calls: list[list] = []
        self.received: list = []  # every accepted recipient key, in order
        self.batches: list[Batch] = []
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def accept(self, batch: Batch, result: BatchResult, recipients=None) -> None:
        for r in recipients if recipients is not None else batch.recipients:
            result.sent[r.key] = f"msg-{len(self.calls)}"
            self.received.append(r.key)

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        self.calls.append([r.subscriber_id for r in batch.recipients])
        self.batches.append(batch)
        action = self.script.pop(0) if self.script else None
        if action is None:
            self.accept(batch, result)
        elif isinstance(action, BaseException):
            raise action
        else:
            action(batch, result)


def expected_deliveries(settings: Settings, db: Database) -> dict[str, list[str]]:
    """email → titles, for every subscribed subscriber whose topics select something."""
    from newsletter.store.subscribers import iter_subscribers

    expected = {}
    for s in iter_subscribers(db, "subscribed"):
        titles = titles_for(settings, s.topics)
        if titles:
            expected[s.email] = titles
    return expected


def check_deliveries(settings: Settings, db: Database, received: dict[str, list[str]]) -> None:
    """Each eligible subscriber got exactly one message holding exactly their summaries, in
    issue order; nobody else got anything. `received` maps email → body text of each message."""
    expected = expected_deliveries(settings, db)
    assert sorted(received) == sorted(expected), "who got a message"
    for address, bodies in received.items():
        assert len(bodies) == 1, f"{address} got {len(bodies)} messages"
        assert titles_in(bodies[0], settings) == expected[address], address


@functools.cache
def _mail_send_schema():
    schema = load_mail_send_schema()
    assert schema is not None, f"SendGrid's tsg_mail_v3.json is not in {default_spec_dir()}"
    return schema


def schema_problems(bodies) -> list[str]:
    """Where request bodies break SendGrid's official mail-send schema."""
    schema = _mail_send_schema()
    return [f"{list(e.path)}: {e.message}" for body in bodies for e in schema.iter_errors(body)]


class SlotBackend(BaseBackend):
    """A backend for tests of batches in flight at once: `clone()` gives another instance
    sharing the same record, so the send uses one a slot. `act(backend, batch, attempt,
    result)` says what each call does (None: accept everyone), `attempt` counting that batch's
    calls from 1. Records every call (batch number, attempt, the test clock's time), who was
    accepted, how many calls were under way at once at most, and any instance used by two
    threads at once."""

    name = "slots"
    requires_secret = False

    class Shared:
        def __init__(self, act, max_batch, clock):
            self.act, self.max_batch, self.clock = act, max_batch, clock
            self.cond = threading.Condition()
            self.calls: list[tuple[int, int, float]] = []  # (batch, attempt, time)
            self.received: list = []
            self.under_way = self.most_under_way = 0
            self.reentered = False
            self.instances = 0

    def __init__(self, act=None, max_batch: int = 3, clock=None, shared=None):
        self.shared = shared or SlotBackend.Shared(act, max_batch, clock)
        self.max_batch = self.shared.max_batch
        self.busy = False
        with self.shared.cond:
            self.shared.instances += 1

    def clone(self) -> SlotBackend:
        return SlotBackend(shared=self.shared)

    def wait_for(self, predicate, timeout: float = 30) -> bool:
        """Block the calling thread until `predicate(shared)` holds (a safety timeout only)."""
        with self.shared.cond:
            return self.shared.cond.wait_for(lambda: predicate(self.shared), timeout)

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        s = self.shared
        with s.cond:
            s.reentered |= self.busy
            self.busy = True
            attempt = 1 + sum(1 for b, _, _ in s.calls if b == batch.number)
            s.calls.append((batch.number, attempt, s.clock() if s.clock else 0.0))
            s.under_way += 1
            s.most_under_way = max(s.most_under_way, s.under_way)
            s.cond.notify_all()
        try:
            if s.act is not None:
                s.act(self, batch, attempt, result)
            if not result.sent and not result.failed:
                for r in batch.recipients:
                    result.sent[r.key] = f"msg-{batch.number}-{attempt}"
            with s.cond:
                s.received.extend(result.sent)
        finally:
            with s.cond:
                s.under_way -= 1
                self.busy = False
                s.cond.notify_all()
