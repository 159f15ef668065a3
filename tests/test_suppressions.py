"""SendGrid's suppression lists pulled into the subscribers' status, against the fake SendGrid."""

from __future__ import annotations

import json
import time

import pytest

from newsletter import subscribers as subs
from newsletter.config import load_settings
from newsletter.errors import AuthenticationError, ConfigError, DeliveryError
from newsletter.sendgrid.client import make_client
from newsletter.sendgrid.suppressions import (
    OVERLAP_SECONDS,
    iso_from_epoch,
    sync_before_send,
    sync_suppressions,
)
from newsletter.store import events as store_events
from newsletter.store import open_database
from newsletter.store import subscribers as store
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid
from tests.support.delivery import configure

pytestmark = pytest.mark.both_engines

NOW = int(time.time())
T0 = NOW - 86_400  # entries made yesterday, so "resubscribed since" comparisons are clear-cut


@pytest.fixture(autouse=True)
def sendgrid_env(monkeypatch):
    # The client uses urllib, which honours proxy variables: keep 127.0.0.1 direct.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)


@pytest.fixture
def fake(monkeypatch):
    with FakeSendGrid() as server:
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        yield server


def add(db, email, status="subscribed"):
    return store.insert(db, email, name=email.split("@")[0], status=status, source="import")


def status_of(db, email):
    return store.get_row_by_email(db, email).status


def requests_for(fake, kind):
    return [r for r in fake.suppression_requests() if r["kind"] == kind]


def seed(fake):
    """Seven unsubscribes (two not ours), three bounces, two spam reports, two invalid."""
    fake.set_suppressions(
        "unsubscribes",
        [{"email": f"u{i}@example.com", "created": T0 + i} for i in range(5)]
        + [{"email": "stranger1@example.com", "created": T0 + 10}]
        + [{"email": "stranger2@example.com", "created": T0 + 11}],
    )
    fake.set_suppressions(
        "bounces",
        [{"email": f"b{i}@example.com", "created": T0 + 20 + i} for i in range(3)],
    )
    fake.set_suppressions(
        "spam_reports",
        [
            {"email": "s0@example.com", "created": T0 + 30},
            {"email": "S1@Example.com", "created": T0 + 31},
        ],
    )
    fake.set_suppressions(
        "invalid_emails",
        [
            {"email": "i0@example.com", "created": T0 + 40},
            {"email": "i1@example.com", "created": T0 + 41},
        ],
    )


def seed_subscribers(db):
    for prefix, n in (("u", 5), ("b", 3), ("s", 2), ("i", 2)):
        for i in range(n):
            add(db, f"{prefix}{i}@example.com")
    add(db, "bystander@example.com")


def test_sync_pages_maps_statuses_and_ignores_strangers(settings, db, fake):
    seed_subscribers(db)
    seed(fake)

    report = sync_suppressions(settings, db, page_size=3)

    for i in range(5):
        assert status_of(db, f"u{i}@example.com") == "unsubscribed"
    for i in range(3):
        assert status_of(db, f"b{i}@example.com") == "bounced"
    assert status_of(db, "s0@example.com") == status_of(db, "s1@example.com") == "complained"
    assert status_of(db, "i0@example.com") == status_of(db, "i1@example.com") == "invalid"
    assert status_of(db, "bystander@example.com") == "subscribed"
    assert store.get_row_by_email(db, "stranger1@example.com") is None  # never added

    by_name = {item.name: item for item in report.lists}
    assert by_name["unsubscribes"].fetched == 7
    assert by_name["unsubscribes"].changed == 5
    assert by_name["unsubscribes"].unknown == 2
    assert report.changed == 12 and report.unknown == 2

    # Paged with limit/offset: 7 entries at 3 a page is 3 requests; 3 entries need a 4th (empty).
    unsub = requests_for(fake, "unsubscribes")
    assert [(r["query"]["limit"], r["query"]["offset"]) for r in unsub] == [
        ("3", "0"),
        ("3", "3"),
        ("3", "6"),
    ]
    assert [r["query"]["offset"] for r in requests_for(fake, "bounces")] == ["0", "3"]
    assert all("start_time" not in r["query"] for r in fake.suppression_requests())

    # Every change is in the history with source sendgrid and a reason.
    change = store.history_rows(db, store.get_row_by_email(db, "b0@example.com").id)[-1]
    assert change["field"] == "status" and change["source"] == "sendgrid"
    assert change["new_value"] == "bounced"
    assert change["reason"].startswith("SendGrid bounce: 550 5.1.1")
    assert store.get_row_by_email(db, "s0@example.com").status_source == "sendgrid"


def test_second_sync_asks_only_for_what_is_new(settings, db, fake):
    seed_subscribers(db)
    seed(fake)
    sync_suppressions(settings, db, page_size=3)
    before = {s.id: store.history_rows(db, s.id) for s in store.iter_subscribers(db, status=None)}
    first_count = len(fake.suppression_requests())

    report = sync_suppressions(settings, db, page_size=3)

    second = fake.suppression_requests()[first_count:]
    starts = {r["kind"]: int(r["query"]["start_time"]) for r in second}
    # From the newest entry seen on each list, less a small overlap re-read.
    assert starts == {
        "unsubscribes": T0 + 11 - OVERLAP_SECONDS,
        "bounces": T0 + 22 - OVERLAP_SECONDS,
        "spam_reports": T0 + 31 - OVERLAP_SECONDS,
        "invalid_emails": T0 + 41 - OVERLAP_SECONDS,
    }
    assert report.changed == 0
    after = {s.id: store.history_rows(db, s.id) for s in store.iter_subscribers(db, status=None)}
    assert after == before

    # Something new appears later: the next sync picks it up, starting from the watermark.
    add(db, "late@example.com")
    fake.set_suppressions(
        "bounces",
        [{"email": f"b{i}@example.com", "created": T0 + 20 + i} for i in range(3)]
        + [{"email": "late@example.com", "created": T0 + 5_000, "reason": "mailbox gone"}],
    )
    report = sync_suppressions(settings, db, page_size=3)
    assert status_of(db, "late@example.com") == "bounced"
    assert report.changed == 1
    third = sync_suppressions(settings, db, page_size=3)
    bounces = requests_for(fake, "bounces")
    assert int(bounces[-1]["query"]["start_time"]) == T0 + 5_000 - OVERLAP_SECONDS
    assert third.changed == 0


def test_never_resubscribes_and_never_weakens(settings, db, fake):
    add(db, "complained@example.com", status="complained")
    add(db, "gone@example.com", status="unsubscribed")
    add(db, "bounced@example.com", status="bounced")
    fake.set_suppressions(
        "bounces",
        [
            {"email": "complained@example.com", "created": T0},
            {"email": "gone@example.com", "created": T0},
        ],
    )
    fake.set_suppressions("spam_reports", [{"email": "bounced@example.com", "created": T0}])
    fake.set_suppressions("unsubscribes", [{"email": "complained@example.com", "created": T0}])

    report = sync_suppressions(settings, db)

    assert status_of(db, "complained@example.com") == "complained"  # not weakened to bounced
    assert status_of(db, "gone@example.com") == "unsubscribed"  # their own choice stays
    assert status_of(db, "bounced@example.com") == "complained"  # a complaint outranks a bounce
    assert report.changed == 1
    assert "bounces: 2 entries since all time; 0 set bounced, 2 already so, 0 not subscribers" in (
        report.lines()
    )


def test_address_on_two_lists_gets_the_stronger_status(settings, db, fake):
    add(db, "both@example.com")
    fake.set_suppressions("bounces", [{"email": "both@example.com", "created": T0}])
    fake.set_suppressions("spam_reports", [{"email": "both@example.com", "created": T0 + 1}])
    sync_suppressions(settings, db)
    assert status_of(db, "both@example.com") == "complained"
    statuses = [
        h for h in store.history_rows(db, store.get_row_by_email(db, "both@example.com").id)
    ]
    assert [h["new_value"] for h in statuses if h["field"] == "status"] == ["complained"]


def test_an_old_entry_never_undoes_a_later_resubscribe(settings, db, fake):
    sub = add(db, "back@example.com")
    fake.set_suppressions("unsubscribes", [{"email": "back@example.com", "created": T0}])
    sync_suppressions(settings, db)
    assert status_of(db, "back@example.com") == "unsubscribed"

    # They come back through the preference page; the next sync re-reads the same entry.
    store.write_status(db, sub.id, "subscribed", "web", "subscribed again on the preference page")
    report = sync_suppressions(settings, db)
    assert status_of(db, "back@example.com") == "subscribed"
    assert report.lists[1].name == "unsubscribes" and report.lists[1].resubscribed == 1


@pytest.fixture
def clock(monkeypatch):
    """The time the store writes into the history, set by the test (Unix seconds)."""
    at = {"now": T0}
    monkeypatch.setattr(store, "now", lambda: iso_from_epoch(at["now"]))
    return at


def status_changes(db, email):
    sub = store.get_row_by_email(db, email)
    return [
        (h["at"], h["new_value"]) for h in store.history_rows(db, sub.id) if h["field"] == "status"
    ]


def test_an_entry_dated_between_an_unsubscribe_and_a_resubscribe_does_not_undo_it(
    settings, db, fake, clock
):
    people = ["back@example.com", "also@example.com"]
    for email in people:
        add(db, email)
    fake.set_suppressions("unsubscribes", [{"email": e, "created": T0 - 50} for e in people])
    clock["now"] = T0  # the sync records their unsubscribes
    sync_suppressions(settings, db)
    clock["now"] = T0 + 100  # they come back
    for email in people:
        assert subs.resubscribe(db, email, reason="wrote to us")
    # Spam reports dated in between (stronger than anything) show up on the next sync.
    fake.set_suppressions("spam_reports", [{"email": e, "created": T0 + 50} for e in people])
    clock["now"] = T0 + 200
    report = sync_suppressions(settings, db)
    assert [status_of(db, e) for e in people] == ["subscribed", "subscribed"]
    by_name = {item.name: item for item in report.lists}
    assert by_name["spam_reports"].resubscribed == 2
    assert by_name["unsubscribes"].resubscribed == 2
    assert report.changed == 0
    assert "spam_reports: 2 entries since" in report.lines()[0]
    assert report.lines()[0].endswith(", 2 resubscribed since")


def test_only_the_latest_return_counts_in_a_long_history(settings, db, fake, clock):
    add(db, "often@example.com")
    for at, status in ((T0, "unsubscribed"), (T0 + 10, "subscribed"), (T0 + 20, "unsubscribed")):
        clock["now"] = at
        if status == "subscribed":
            subs.resubscribe(db, "often@example.com")
        else:
            subs.unsubscribe(db, "often@example.com")
    clock["now"] = T0 + 40
    subs.resubscribe(db, "often@example.com")
    clock["now"] = T0 + 45  # a later topics change is not a status change
    subs.set_topics(db, settings, "often@example.com", "genetics", "cli")

    # Dated after the first return but before the last one: stale.
    fake.set_suppressions("bounces", [{"email": "often@example.com", "created": T0 + 30}])
    report = sync_suppressions(settings, db)
    assert status_of(db, "often@example.com") == "subscribed"
    assert report.lists[2].name == "bounces" and report.lists[2].resubscribed == 1

    # Dated after the last return: applied.
    fake.set_suppressions("bounces", [{"email": "often@example.com", "created": T0 + 41}])
    report = sync_suppressions(settings, db)
    assert status_of(db, "often@example.com") == "bounced"
    assert status_changes(db, "often@example.com")[-1] == (iso_from_epoch(T0 + 45), "bounced")


def test_a_complaint_dated_before_an_unsubscribe_still_counts(settings, db, fake, clock):
    # Only a return to `subscribed` makes older reports stale; an unsubscribe is no return.
    add(db, "angry@example.com")
    clock["now"] = T0 + 100
    assert subs.unsubscribe(db, "angry@example.com")
    fake.set_suppressions("spam_reports", [{"email": "angry@example.com", "created": T0 + 50}])
    report = sync_suppressions(settings, db)
    assert status_of(db, "angry@example.com") == "complained"
    assert report.changed == 1


@pytest.mark.parametrize(("created", "stays"), [(-1, "subscribed"), (0, "unsubscribed")])
def test_an_entry_from_the_second_of_the_resubscribe(settings, db, fake, clock, created, stays):
    # Within one second the order cannot be told: the suppression wins, so that no one who
    # may have just left is mailed; one second earlier is before the return, and stale.
    add(db, "tie@example.com", status="unsubscribed")
    clock["now"] = T0 + 100
    subs.resubscribe(db, "tie@example.com")
    fake.set_suppressions(
        "unsubscribes", [{"email": "tie@example.com", "created": T0 + 100 + created}]
    )
    sync_suppressions(settings, db)
    assert status_of(db, "tie@example.com") == stays


def test_entries_without_a_date_do_not_stop_the_sync(settings, db, clock):
    add(db, "back@example.com", status="unsubscribed")
    add(db, "other@example.com")
    clock["now"] = T0 + 100
    subs.resubscribe(db, "back@example.com")
    # SendGrid always dates its entries; one that is not (the fake refuses to serve it) must
    # not abort the sync that every SendGrid send runs first.
    entries = [
        {"email": "back@example.com"},  # no date: cannot be older than the return, applied
        {"email": "other@example.com", "created": None},
        {"email": "third@example.com", "created": T0 + 5},  # not a subscriber
    ]
    stub = StubClient(body=json.dumps(entries).encode())
    report = sync_suppressions(settings, db, client=stub)
    # Every list answers the same page here; spam reports, the strongest, come first.
    assert status_of(db, "back@example.com") == status_of(db, "other@example.com") == "complained"
    assert report.changed == 2 and report.unknown == 4
    # The dated entry still moves each list's watermark.
    assert store_events.get_meta(db, "sendgrid.suppressions.bounces.created") == str(T0 + 5)


def test_unauthorized_is_a_clear_error_without_the_key(settings, db, fake, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-key-value")
    add(db, "u0@example.com")
    fake.set_suppressions("unsubscribes", [{"email": "u0@example.com", "created": T0}])
    with pytest.raises(AuthenticationError) as info:
        sync_suppressions(settings, db)
    message = str(info.value)
    assert "401" in message and "SENDGRID_API_KEY" in message
    assert "wrong-key-value" not in message
    assert status_of(db, "u0@example.com") == "subscribed"


def test_missing_key_and_unreachable_host(settings, db, monkeypatch):
    monkeypatch.delenv("SENDGRID_API_KEY")
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY is not set"):
        sync_suppressions(settings, db)
    # A port nobody listens on: a clear error, not a traceback.
    with FakeSendGrid() as server:
        url = server.url
    monkeypatch.setenv("SENDGRID_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    with pytest.raises(DeliveryError, match="cannot reach SendGrid at http://127.0.0.1"):
        sync_suppressions(settings, db)


def test_client_has_the_configured_timeout(settings, fake):
    client = make_client(settings)
    assert client.client.timeout == settings.delivery.timeout
    assert client.host == fake.url


def test_sync_before_send_obeys_the_setting(workspace, settings, db, fake):
    add(db, "u0@example.com")
    fake.set_suppressions("unsubscribes", [{"email": "u0@example.com", "created": T0}])
    path = workspace / "newsletter.yaml"
    path.write_text(path.read_text().replace("sync_suppressions: true", "sync_suppressions: false"))
    off = load_settings(path)
    assert sync_before_send(off, db) is None
    assert fake.suppression_requests() == []
    report = sync_before_send(settings, db)
    assert report is not None and report.changed == 1


# --- The command ----------------------------------------------------------------------------------


def test_cli_sync(run, workspace, fake):
    db = open_database(load_settings(workspace / "newsletter.yaml"))
    add(db, "u0@example.com")
    db.close()
    fake.set_suppressions(
        "unsubscribes",
        [{"email": "u0@example.com", "created": T0}, {"email": "x@example.com", "created": T0}],
    )
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}
    result = run("suppressions", "sync", "--page-size", "1", env=env)
    assert result.exit_code == 0, result.output
    assert "1 subscribers' status changed; 1 addresses were not subscribers" in result.stdout
    assert len(requests_for(fake, "unsubscribes")) == 3
    db = open_database(load_settings(workspace / "newsletter.yaml"))
    assert status_of(db, "u0@example.com") == "unsubscribed"
    db.close()


def test_cli_sync_errors(run, fake):
    result = run("suppressions", "sync")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: SENDGRID_API_KEY is not set")

    env = {"SENDGRID_API_KEY": "SG.not-the-key", "SENDGRID_API_HOST": fake.url}
    result = run("suppressions", "sync", env=env)
    assert result.exit_code == 1
    assert "error: SendGrid refused the API key (401" in result.stderr
    assert "not-the-key" not in result.output and "Traceback" not in result.output


def test_a_sendgrid_send_pulls_the_suppressions_before_it_plans(run, workspace, fake):
    configure(workspace, backend="sendgrid")  # delivery.sendgrid.sync_suppressions: true
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    fake.set_suppressions("spam_reports", [{"email": "maria.keller@example.org", "created": T0}])
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", "2026-12", "--yes", env=env)

    assert result.exit_code == 0, result.output
    assert "suppressions synced: 1 subscribers newly suppressed" in result.output
    assert fake.recipients() and "maria.keller@example.org" not in fake.recipients()
    db = open_database(load_settings(workspace / "newsletter.yaml"))
    assert status_of(db, "maria.keller@example.org") == "complained"
    db.close()


def test_a_send_through_another_backend_asks_sendgrid_nothing(run, workspace, fake):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    fake.set_suppressions("spam_reports", [{"email": "maria.keller@example.org", "created": T0}])
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": fake.url}

    result = run("send", "2026-12", "--yes", "--backend", "outbox", env=env)

    assert result.exit_code == 0, result.output
    assert fake.suppression_requests() == []
    db = open_database(load_settings(workspace / "newsletter.yaml"))
    assert status_of(db, "maria.keller@example.org") == "subscribed"
    db.close()


# --- Refusals the fake server does not make (it answers 403 only on mail sends) -------------------


class StubClient:
    """Just enough of SendGridAPIClient for `sync_suppressions`: every GET raises `error`."""

    host = "https://api.sendgrid.example"

    def __init__(self, error=None, body=b"[]"):
        self.error, self.body = error, body
        outer = self

        class Endpoint:
            def _(self, name):
                return self

            def get(self, query_params):
                if outer.error is not None:
                    raise outer.error
                return type("Response", (), {"body": outer.body})()

        class Client:
            timeout = None
            suppression = Endpoint()

        self.client = Client()


def test_forbidden_names_the_missing_permission(settings, db):
    from python_http_client.exceptions import ForbiddenError

    body = b'{"errors":[{"field":null,"message":"access forbidden"}]}'
    stub = StubClient(ForbiddenError(403, "FORBIDDEN", body, {}))
    with pytest.raises(AuthenticationError, match="403: access forbidden.*Suppressions read"):
        sync_suppressions(settings, db, client=stub)
    assert stub.client.timeout == settings.delivery.timeout  # a timeout is set on any client


def test_other_failures_are_delivery_errors(settings, db):
    from python_http_client.exceptions import InternalServerError

    stub = StubClient(InternalServerError(500, "ERR", b"oops", {}))
    with pytest.raises(DeliveryError, match="SendGrid answered 500 for the spam_reports list"):
        sync_suppressions(settings, db, client=stub)
    with pytest.raises(DeliveryError, match="not a list"):
        sync_suppressions(settings, db, client=StubClient(body=b'{"a": 1}'))
