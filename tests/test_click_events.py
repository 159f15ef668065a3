"""SendGrid click events through the signed webhook: counted per summary and kind of link,
people apart from scanners (too soon after delivery, every link at once, a scanner's user
agent), replays ignored, and nothing kept about who clicked unless asked for."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from newsletter.config import load_settings
from newsletter.engagement.report import issue_clicks
from newsletter.sendgrid.webhooks import apply_events
from newsletter.store import Database, open_database
from newsletter.store import clicks as store_clicks
from newsletter.store.copy import tables
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.clicks import (
    BROWSER,
    DELIVERED_AT,
    FIRST_ID,
    GUT,
    PEOPLE,
    PREGNANCY,
    SCANNER,
    TREM2,
    VARIANTS,
    add_subscribers,
    click,
    delivered,
    link_to,
    send_example,
)
from tests.support.delivery import ISSUE
from tests.support.webhooks import make_key_pair, post_events

T0 = DELIVERED_AT
OCT = "oct-optic-neuritis"

pytestmark = pytest.mark.both_engines


def configure_tracking(workspace, **tracking):
    path = workspace / "newsletter.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["tracking"] = tracking
    data.setdefault("delivery", {}).setdefault("sendgrid", {})["click_tracking"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_settings(path)


@pytest.fixture
def world(workspace, monkeypatch, request):
    """The example issue sent to PEOPLE, their deliveries recorded; a webhook client."""
    tracking = getattr(request, "param", {})
    settings = configure_tracking(workspace, **tracking)
    private, public = make_key_pair()
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public)
    db = open_database(settings)
    add_subscribers(db, PEOPLE)
    readers = send_example(settings, db)
    client = create_app(settings).test_client()
    answer = post_events(client, private, [delivered(r) for r in readers.values()])
    assert answer.status_code == 200 and answer.get_json()["ledger_updates"] == len(PEOPLE)

    def post(events):
        answer = post_events(client, private, events)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    yield settings, db, {r.email.split("@")[0]: r for r in readers.values()}, post
    db.close()


def people_and_scanners(r):
    """Clicks from people and from scanners, in the order SendGrid might post them."""
    ana, ben, cy, dee, eve = r["ana"], r["ben"], r["cy"], r["dee"], r["eve"]
    return [
        click(ana, link_to(ana, f"summaries/{PREGNANCY}"), T0 + 600),
        click(ana, link_to(ana, f"summaries/{PREGNANCY}"), T0 + 900),  # again: a click, 1 reader
        click(ana, link_to(ana, "doi.org/10.5555/example.2026.078"), T0 + 1200),  # the paper
        click(ana, link_to(ana, "/unsubscribe/"), T0 + 2000),
        click(ben, link_to(ben, f"summaries/{VARIANTS}"), T0 + 300),
        click(cy, link_to(cy, f"summaries/{GUT}"), T0 + 5),  # 5 s after delivery: a scanner
        click(cy, link_to(cy, f"summaries/{GUT}"), T0 + 400),
        # Dee's mail gateway follows five links in the same second, with a browser's agent.
        *(
            click(dee, link_to(dee, part), T0 + 3600)
            for part in ("/archive/", f"summaries/{PREGNANCY}", "10.5555/example.2026.078")
        ),
        *(click(dee, link_to(dee, f"summaries/{s}"), T0 + 3601) for s in (GUT, TREM2)),
        click(eve, link_to(eve, f"summaries/{OCT}"), T0 + 5000, agent=SCANNER),
    ]


def figures(settings, db):
    report = issue_clicks(settings, db, ISSUE)
    return report, {
        s.id: (s.readers, s.clicks, s.automated, s.audience) for s in report.summaries if s.audience
    }


def test_people_count_and_scanners_are_counted_apart(world):
    settings, db, r, post = world

    answer = post(people_and_scanners(r))

    assert answer["applied"] == 13 and answer["invalid"] == 0
    report, by_summary = figures(settings, db)
    # (readers, people's clicks, automated clicks, audience: emails that held the summary)
    assert by_summary[PREGNANCY] == (1, 3, 2, 3)  # Ana: page twice and the paper; Dee's scanner
    assert by_summary[GUT] == (1, 1, 2, 4)  # Cy once he had read it; 5 s after delivery: not
    assert by_summary[VARIANTS] == (1, 1, 0, 5)
    assert by_summary[TREM2] == (0, 0, 1, 3)
    assert by_summary[OCT] == (0, 0, 1, 3)  # the scanner's user agent
    pregnancy = next(s for s in report.summaries if s.id == PREGNANCY)
    assert pregnancy.by_kind == {"summary": 2, "paper": 1}
    assert pregnancy.share == pytest.approx(1 / 3)
    assert report.other == {"unsubscribe": (1, 0), "archive": (0, 1)}
    assert report.automated == 7 and report.clicks == 6
    assert report.recipients == len(PEOPLE)


def test_a_burst_split_over_two_batches_is_moved_to_automated(world):
    settings, db, r, post = world
    dee = r["dee"]
    links = [link_to(dee, f"summaries/{s}") for s in (PREGNANCY, GUT, TREM2)]

    post([click(dee, links[0], T0 + 3600), click(dee, links[1], T0 + 3600)])
    _, before = figures(settings, db)
    post([click(dee, links[2], T0 + 3601)])
    _, after = figures(settings, db)

    assert before[PREGNANCY][:3] == (1, 1, 0)  # two links in a second: could be a person
    assert [after[s][:3] for s in (PREGNANCY, GUT, TREM2)] == [(0, 0, 1)] * 3


def test_slow_clicks_on_many_links_are_a_person(world):
    settings, db, r, post = world
    ana = r["ana"]
    summaries = (PREGNANCY, GUT, TREM2, OCT)

    post(
        [
            click(ana, link_to(ana, f"summaries/{s}"), T0 + 600 + 5 * n)
            for n, s in enumerate(summaries)
        ]
    )

    _, by_summary = figures(settings, db)
    assert [by_summary[s][:3] for s in summaries] == [(1, 1, 0)] * 4


def test_a_replayed_batch_changes_nothing(world):
    settings, db, r, post = world
    batch = people_and_scanners(r)
    post(batch)
    first = figures(settings, db)[1]

    answer = post(batch)

    assert answer["replayed"] == len(batch) and answer["applied"] == 0
    assert figures(settings, db)[1] == first


def test_clicks_without_a_sent_email_count_nothing(world):
    settings, db, r, post = world
    stranger = click(r["ana"], r["ana"].links[1], T0 + 600)
    stranger["newsletter_subscriber"] = str(FIRST_ID + 99)
    proof = click(r["ana"], r["ana"].links[1], T0 + 600)
    del proof["newsletter_subscriber"]
    proof["newsletter_proof"] = "true"

    answer = post([stranger, proof])

    assert answer["applied"] == 2
    assert store_clicks.counts(db, ISSUE) == []


def test_a_click_without_a_user_agent_is_automated(world):
    settings, db, r, post = world
    ana = r["ana"]

    post([click(ana, link_to(ana, f"summaries/{GUT}"), T0 + 600, agent=None)])

    assert figures(settings, db)[1][GUT][:3] == (0, 0, 1)


def table_rows(db: Database) -> dict[str, set[tuple]]:
    return {
        name: {tuple(row) for row in db.conn.execute(f'SELECT * FROM "{name}"')}
        for name in tables(db)
    }


def mentions(value, ids: list[int], emails: list[str]) -> bool:
    text = value.hex() if isinstance(value, bytes) else str(value)
    return any(str(i) in text for i in ids) or any(e in text.lower() for e in emails)


def test_the_aggregate_mode_stores_no_subscriber_anywhere(world):
    settings, db, r, post = world
    before = table_rows(db)

    post(people_and_scanners(r))

    after = table_rows(db)
    added = {name: rows - before.get(name, set()) for name, rows in after.items()}
    assert sum(map(len, added.values())) > 10  # the clicks were written somewhere
    ids = [reader.id for reader in r.values()]
    emails = [reader.email for reader in r.values()]
    found = [
        (name, row)
        for name, rows in added.items()
        for row in rows
        if any(mentions(value, ids, emails) for value in row)
    ]
    assert found == []
    assert not added["click_subscribers"]


@pytest.mark.parametrize("world", [{"per_subscriber": True}], indirect=True)
def test_the_per_subscriber_mode_stores_who_clicked_what(world):
    settings, db, r, post = world

    post(people_and_scanners(r))

    rows = db.conn.execute(
        "SELECT subscriber_id, summary_id, kind, automated FROM click_subscribers "
        "ORDER BY subscriber_id, at, id"
    ).fetchall()
    ana = [tuple(x)[1:] for x in rows if x[0] == r["ana"].id]
    assert ana == [
        (PREGNANCY, "summary", 0),
        (PREGNANCY, "summary", 0),
        (PREGNANCY, "paper", 0),
        ("", "unsubscribe", 0),
    ]
    dee = {tuple(x)[3] for x in rows if x[0] == r["dee"].id}
    assert dee == {1}  # the scanner's burst, marked as such
    assert {x[0] for x in rows} == {r[n].id for n in ("ana", "ben", "cy", "dee", "eve")}
    # The figures are the same as in the aggregate mode.
    assert figures(settings, db)[1][PREGNANCY] == (1, 3, 2, 3)


@pytest.mark.parametrize("world", [{"automated_after_delivery": 60}], indirect=True)
def test_the_delivery_window_is_a_setting(world):
    settings, db, r, post = world
    ana = r["ana"]

    post([click(ana, link_to(ana, f"summaries/{GUT}"), T0 + 30)])

    assert figures(settings, db)[1][GUT][:3] == (0, 0, 1)


def test_once_the_key_is_discarded_clicks_count_but_add_no_readers(world):
    settings, db, r, post = world
    ana, ben = r["ana"], r["ben"]
    post([click(ana, link_to(ana, f"summaries/{VARIANTS}"), T0 + 600)])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.tracking.clicker_key_days, hours=1)
    with db.transaction():
        store_clicks.discard_expired_keys(db, later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert [tuple(row) for row in db.conn.execute("SELECT key FROM click_keys")] == [(None,)]
    assert db.conn.execute("SELECT count(*) FROM click_recent").fetchone()[0] == 0

    post([click(ben, link_to(ben, f"summaries/{VARIANTS}"), T0 + 90000, agent=BROWSER)])

    report, by_summary = figures(settings, db)
    assert by_summary[VARIANTS][:2] == (1, 2)
    assert report.readers_closed


def test_a_paper_two_summaries_cite_goes_to_the_one_in_the_readers_email(world, workspace):
    settings, db, r, post = world
    ben = r["ben"]  # genetics: his email holds the variants summary only, in full, with its paper
    paper = link_to(ben, "doi.org/")
    gut = workspace / "summaries" / f"{GUT}.yaml"
    data = yaml.safe_load(gut.read_text(encoding="utf-8"))
    data["source_url"] = paper  # the gut summary (earlier in the issue) cites it too
    gut.write_text(yaml.safe_dump(data), encoding="utf-8")

    post([click(ben, paper, T0 + 600)])

    report, by_summary = figures(settings, db)
    assert by_summary[VARIANTS][:2] == (1, 1)
    assert by_summary[GUT][:2] == (0, 0)
    assert next(s for s in report.summaries if s.id == VARIANTS).by_kind == {"paper": 1}


def test_links_of_no_summary_are_told_apart_by_kind(world):
    settings, db, r, post = world
    ana = r["ana"]
    parts = ("/preferences/", "/unsubscribe/", "/archive/", "utm_campaign")
    site = next(link for link in ana.links if link.startswith(settings.site + "/?"))

    post(
        [click(ana, link_to(ana, p), T0 + 600 + 60 * n) for n, p in enumerate(parts[:3])]
        + [click(ana, site, T0 + 900)]
    )

    report, _ = figures(settings, db)
    assert report.other == {k: (1, 0) for k in ("preferences", "unsubscribe", "archive", "site")}


def test_an_unreadable_click_counts_nothing_and_the_others_count(world):
    settings, db, r, post = world
    ana = r["ana"]
    broken = click(ana, link_to(ana, f"summaries/{GUT}"), T0 + 600)
    broken["url"] = ["not", "a", "url"]

    answer = post([broken, click(ana, link_to(ana, f"summaries/{OCT}"), T0 + 700)])

    assert answer["applied"] == 2
    _, by_summary = figures(settings, db)
    assert by_summary[GUT][:3] == (0, 0, 0)
    assert by_summary[OCT][:3] == (1, 1, 0)


def test_without_a_delivered_event_the_window_runs_from_when_sendgrid_took_the_email(
    workspace,
):
    settings = configure_tracking(workspace)
    db = open_database(settings)
    add_subscribers(db, PEOPLE[:1])
    ana = send_example(settings, db)["ana@example.org"]
    [accepted] = [
        row[0] for row in db.conn.execute("SELECT updated_at FROM ledger WHERE state = 'sent'")
    ]
    taken = int(dt.datetime.fromisoformat(accepted).timestamp())
    link = link_to(ana, f"summaries/{GUT}")

    apply_events(settings, db, [click(ana, link, taken + 5), click(ana, link, taken + 60)])

    assert figures(settings, db)[1][GUT][:3] == (1, 1, 1)
    db.close()
