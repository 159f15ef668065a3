"""The status table (README, "Who may change a status"), tried cell by cell through each path.

For every source, every status a subscriber can be in and every status that source can ask for,
the change is made the way a user makes it (the CLI, the preference centre over HTTP, a webhook
batch, a suppression sync against the fake SendGrid), and the outcome and the history row are
compared with what README's table says.
"""
# both_engines by hand: the engine is the module-wide `place` fixture's parameter.

from __future__ import annotations

import ast
import datetime as dt
import itertools
import json
import re
import secrets
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.sendgrid.suppressions import sync_suppressions
from newsletter.sendgrid.webhooks import apply_events
from newsletter.signup import iso
from newsletter.signup.pending import token_hash
from newsletter.store import Database, open_database
from newsletter.store import signups as store_signups
from newsletter.store import subscribers as store
from newsletter.store.signups import PendingSignup
from newsletter.subscribers import rules as status_rules
from newsletter.tokens import LinkSigner
from newsletter.web import create_app
from tests.conftest import ENGINES, REPO, TEST_SECRET
from tests.fake_sendgrid import TEST_API_KEY, FakeSendGrid

SIGNER = LinkSigner(TEST_SECRET)
STATUSES = ("subscribed", "unsubscribed", "bounced", "invalid", "complained")
HELD = "unsubscribed, held¹"
NEW = "new address"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


# --- README's table, the expectation ---------------------------------------------------------------


def table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("| source |"))
    end = start
    while end < len(lines) and lines[end].strip().startswith("|"):
        end += 1
    return [line.strip() for line in lines[start:end]]


def parse_table(lines: list[str]) -> tuple[list[str], dict[str, dict[str, object]]]:
    def cells(line):
        return [c.strip() for c in line.strip("|").split("|")]

    header = cells(lines[0])
    rows = {}
    for line in lines[2:]:
        row = dict(zip(header, cells(line), strict=True))
        rows[row["source"]] = row
    return header, rows


def allowed_in(cell: str) -> frozenset[str] | None:
    cell = cell.rstrip("¹²")
    if cell == "·":
        return None  # the source never meets this state
    if cell == "any":
        return frozenset(STATUSES)
    if cell == "—":
        return frozenset()
    return frozenset(s.strip().rstrip("¹²") for s in cell.split(","))


README_TABLE = table_lines((REPO / "README.md").read_text(encoding="utf-8"))
COLUMNS, TABLE = parse_table(README_TABLE)


def test_the_table_in_readme_is_the_one_in_the_module():
    assert table_lines(status_rules.__doc__) == README_TABLE
    assert ["source", NEW, *STATUSES[:2], HELD, *STATUSES[2:], "otherwise"] == COLUMNS
    assert set(TABLE) == {s.value for s in status_rules.Source}


# --- Each source, the way a user reaches it ---------------------------------------------------------


class Case:
    """One cell's subscriber (an address of its own) in the module's shared workspace."""

    def __init__(self, place, email: str):
        self.settings, self.db, self.client = place.settings, place.db, place.client
        self.workspace, self.sendgrid, self.email = place.workspace, place.sendgrid, email

    def sub(self):
        return store.get_row_by_email(self.db, self.email)

    def token(self, purpose):
        return SIGNER.sign(self.sub().id, purpose)

    def cli(self, *args):
        result = CliRunner().invoke(cli, ["subscribers", *args], catch_exceptions=False)
        assert "Traceback" not in result.output
        return result


def import_csv(case: Case, to: str, *flags: str) -> str:
    (case.workspace / "list.csv").write_text(f"email,status\n{case.email},{to}\n")
    result = case.cli("import", "list.csv", *flags)
    assert result.exit_code == 0, result.output
    if "1 rows: 1 added" in result.stdout or "1 updated" in result.stdout:
        return "changed"
    assert "1 unchanged" in result.stdout
    return "kept" if "1 rows ask for a weaker status" in result.stdout else "unchanged"


def cli_outcome(result, changed_prefix: str) -> str:
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        return "refused"
    assert result.exit_code == 0, result.output
    return "changed" if result.stdout.startswith(changed_prefix) else "not changed"


def web_post(case: Case, path: str, data=None) -> str:
    before = case.sub().status
    response = case.client.post(path, data=data)
    if response.status_code == 409:
        return "refused"
    assert response.status_code == 200
    return "changed" if case.sub().status != before else "not changed"


WEBHOOK_EVENTS = {
    "unsubscribed": {"event": "unsubscribe"},
    "bounced": {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 no such user"},
    "invalid": {"event": "dropped", "reason": "Invalid"},
    "complained": {"event": "spamreport"},
}
SYNC_LISTS = {
    "unsubscribed": "unsubscribes",
    "bounced": "bounces",
    "invalid": "invalid_emails",
    "complained": "spam_reports",
}


def webhook(case: Case, to: str) -> str:
    event = {"email": case.email, "timestamp": int(time.time()), "sg_event_id": case.email}
    event.update(WEBHOOK_EVENTS[to])
    report = apply_events(case.settings, case.db, json.loads(json.dumps([event])))
    return "changed" if report.status_changes == 1 else "not changed"


def sync(case: Case, to: str) -> str:
    for name in SYNC_LISTS.values():
        entries = [{"email": case.email, "created": int(time.time())}]
        case.sendgrid.set_suppressions(name, entries if name == SYNC_LISTS[to] else [])
    report = sync_suppressions(case.settings, case.db)
    return "changed" if report.changed == 1 else "not changed"


def signup_confirm(case: Case, to: str) -> str:
    """A signup made while the address could still join (its link in hand), confirmed now."""
    token = secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    pending = PendingSignup(
        id=None,
        email=case.email,
        token_hash=token_hash(token),
        name="",
        topics="genetics",
        requested_at=iso(now),
        expires_at=iso(now + dt.timedelta(hours=1)),
        confirmed_at=None,
        ip=None,
        user_agent=None,
        form_id="subscribe-page",
        consent_version="1",
        consent_sha256="0" * 64,
        privacy_url=None,
    )
    store_signups.put(case.db, pending)
    before = case.sub().status if case.sub() else None
    response = case.client.post(f"/confirm/{token}")
    if response.status_code == 409:
        return "refused"
    assert response.status_code == 303
    return "changed" if case.sub().status != before else "not changed"


DRIVERS = {
    # source: [(what it asks for, how), ...]; `to` None: a topics change, never a status.
    "import": (STATUSES, lambda case, to: import_csv(case, to)),
    "import --resubscribe": (STATUSES, lambda case, to: import_csv(case, to, "--resubscribe")),
    "admin add": (
        ("subscribed",),
        lambda case, to: cli_outcome(case.cli("add", case.email), "Added "),
    ),
    "admin set-topics": (
        (None,),
        lambda case, to: cli_outcome(case.cli("set-topics", case.email, "genetics"), "-"),
    ),
    "admin unsubscribe": (
        ("unsubscribed",),
        lambda case, to: cli_outcome(case.cli("unsubscribe", case.email), "Unsubscribed "),
    ),
    "admin resubscribe": (
        ("subscribed",),
        lambda case, to: cli_outcome(case.cli("resubscribe", case.email), "Resubscribed "),
    ),
    "admin resubscribe --force --reason TEXT": (
        ("subscribed",),
        lambda case, to: cli_outcome(
            case.cli("resubscribe", case.email, "--force", "--reason", "confirmed by phone"),
            "Resubscribed ",
        ),
    ),
    "preference page save": (
        (None,),
        lambda case, to: web_post(
            case,
            f"/preferences/{case.token('preferences')}",
            {"choice": "chosen", "topics": ["genetics"]},
        ),
    ),
    'preference page "Subscribe again"': (
        ("subscribed",),
        lambda case, to: web_post(case, f"/resubscribe/{case.token('preferences')}"),
    ),
    "unsubscribe page / one-click POST": (
        ("unsubscribed",),
        lambda case, to: web_post(case, f"/unsubscribe/{case.token('unsubscribe')}"),
    ),
    "one-click POST (RFC 8058)": (
        ("unsubscribed",),
        lambda case, to: web_post(case, f"/unsubscribe/{case.token('unsubscribe')}", ONE_CLICK),
    ),
    "event webhook": (tuple(WEBHOOK_EVENTS), webhook),
    "suppression sync": (tuple(SYNC_LISTS), sync),
    "signup confirm": (("subscribed",), signup_confirm),
}
# The two ways to reach the unsubscribe row of the table.
ROW_OF = {"one-click POST (RFC 8058)": "unsubscribe page / one-click POST"}

HISTORY_SOURCE = {
    "import": "import",
    "import --resubscribe": "import",
    "event webhook": "sendgrid",
    "suppression sync": "sendgrid",
    "preference page save": "web",
    'preference page "Subscribe again"': "web",
    "unsubscribe page / one-click POST": "web",
    "signup confirm": "signup",
}
REASON = {
    "import": r"imported from list\.csv:2",
    "import --resubscribe": r"imported from list\.csv:2( \(--resubscribe\))?",
    "admin add": None,
    "admin unsubscribe": None,
    "admin resubscribe": None,
    "admin resubscribe --force --reason TEXT": r"--force: confirmed by phone",
    'preference page "Subscribe again"': r"subscribed again on the preference page",
    "unsubscribe page / one-click POST": r"unsubscribe page|one-click unsubscribe",
    "event webhook": r"SendGrid (unsubscribe|bounce: 550 5\.1\.1 no such user|dropped: Invalid|spam report)",
    "suppression sync": r"SendGrid (global unsubscribe|bounce|invalid address|spam report)(: .+)?",
    "signup confirm": r"confirmed the link in the signup email",
}


def cases():
    for driver, (asks, _) in DRIVERS.items():
        row = TABLE[ROW_OF.get(driver, driver)]
        for column in COLUMNS[1:-1]:
            if allowed_in(row[column]) is None:
                continue
            for to in asks:
                yield pytest.param(driver, column, to, id=f"{driver} | {column} | {to}")


def expected(driver: str, column: str, to: str | None) -> str:
    source = ROW_OF.get(driver, driver)
    row = TABLE[source]
    current = None if column == NEW else "unsubscribed" if column == HELD else column
    if source == "admin add" and current is not None:
        return "refused"  # any existing address, whatever its status
    if to is None or to == current:
        return "unchanged"
    if to in allowed_in(row[column]):
        return "changed"
    return "refused" if row["otherwise"].startswith("refused") else "kept"


@pytest.fixture(scope="module", params=ENGINES)
def place(tmp_path_factory, request):
    """One workspace, database, app and fake SendGrid for every cell, on each engine: each cell
    has its own address, so they never meet (a fresh workspace a cell costs most of the time).
    (Module-wide, so the engine is this fixture's parameter, not the `engine` fixture's.)"""
    root = tmp_path_factory.mktemp("rules") / "ws"
    root.mkdir()
    for name in ("summaries", "issues", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    with pytest.MonkeyPatch.context() as mp, FakeSendGrid() as sendgrid:
        for name, value in {
            "NEWSLETTER_SECRET_KEY": TEST_SECRET,
            "SENDGRID_API_KEY": TEST_API_KEY,
            "SENDGRID_API_HOST": sendgrid.url,
            "no_proxy": "127.0.0.1,localhost",  # the client uses urllib, which honours proxies
            "NO_PROXY": "127.0.0.1,localhost",
        }.items():
            mp.setenv(name, value)
        mp.delenv("NEWSLETTER_CONFIG", raising=False)
        mp.delenv("NEWSLETTER_DATABASE_URL", raising=False)
        url = None
        if request.param == "postgresql":
            server = request.getfixturevalue("postgres_server")
            url = server.create_database()
            with Database(url, migrate=False) as fresh:
                fresh.migrate()
            mp.setenv("NEWSLETTER_DATABASE_URL", url)
        settings = load_settings(root / "newsletter.yaml")
        db = open_database(settings)
        client = create_app(settings).test_client()
        yield SimpleNamespace(
            workspace=root, settings=settings, db=db, client=client, sendgrid=sendgrid
        )
        db.close()
    if url:
        server.drop_database(url)


ADDRESSES = itertools.count(1)


@pytest.mark.parametrize(("driver", "column", "to"), list(cases()))
def test_every_cell_of_the_table(driver, column, to, place, monkeypatch):
    monkeypatch.chdir(place.workspace)
    case = Case(place, f"person{next(ADDRESSES)}@example.org")
    db, email = place.db, case.email
    current = None
    if column == HELD:  # bounced, then an unsubscribe from SendGrid: the bounce still holds
        sub = store.insert(db, email, status="bounced", source="sendgrid", reason="bounce")
        store.write_status(db, sub.id, "unsubscribed", "sendgrid", "SendGrid unsubscribe")
        current = "unsubscribed"
    elif column != NEW:
        store.insert(db, email, status=column, source="import")
        current = column
    before = store.history_rows(db, case.sub().id) if current else []

    outcome = DRIVERS[driver][1](case, to)

    want = expected(driver, column, to)
    if outcome == "not changed":  # the path does not tell "kept" from "already so"
        want = {"kept": "not changed", "unchanged": "not changed"}.get(want, want)
    assert outcome == want
    after = case.sub()
    status_rows = (
        [
            h
            for h in store.history_rows(db, after.id)[len(before) :]
            if h["field"] in ("status", "created")
        ]
        if after
        else []
    )
    if want != "changed":
        assert (after.status if after else None) == current
        assert status_rows == []
        return
    assert after.status == to
    source = ROW_OF.get(driver, driver)
    (row,) = status_rows
    assert row["field"] == ("created" if current is None else "status")
    assert (row["old_value"], row["new_value"]) == (current, to)
    assert row["source"] == HISTORY_SOURCE.get(source, "cli")
    pattern = REASON[source]
    if pattern is None:
        assert row["reason"] is None
    else:
        assert re.fullmatch(pattern, row["reason"] or ""), row["reason"]
    assert (after.status_source, after.status_reason) == (row["source"], row["reason"])


# --- Nothing else writes a status ------------------------------------------------------------------

WRITERS = {"write_status", "insert", "write_import_batch"}


def test_only_the_rules_call_the_store_functions_that_write_a_status():
    package = REPO / "newsletter"
    callers = set()
    for path in package.rglob("*.py"):
        if path.name == "subscribers.py" and path.parent.name == "store":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in WRITERS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id
                in {"store", "store_subscribers", "subscriber_rows", "subscribers"}
            ):
                callers.add(str(Path(path).relative_to(REPO)))
    assert callers == {"newsletter/subscribers/rules.py"}
