"""The plan: segments by selection, skipped rows, resumable planning, and a dry run that writes
nothing."""

from __future__ import annotations

import pytest

from newsletter.delivery import (
    OutcomeUnknown,
    SendRefused,
    preview_plan,
    segment_key,
    send_issue,
    write_plan,
)
from newsletter.delivery import plan as planning
from newsletter.errors import DeliveryError
from newsletter.render import Renderer, select_summaries
from newsletter.store import ledger as store
from newsletter.store.subscribers import insert
from tests.support.delivery import (
    ISSUE,
    ScriptedBackend,
    add_many,
    add_people,
    database,
    issue_summaries,
)

pytestmark = pytest.mark.both_engines


@pytest.fixture
def db(settings):
    db = database(settings)
    yield db
    db.close()


def rows(db):
    return {
        r["email"]: dict(r)
        for r in db.conn.execute(
            "SELECT s.email, l.segment, l.state, l.reason FROM ledger l "
            "JOIN subscribers s ON s.id = l.subscriber_id WHERE l.issue_id = ?",
            (ISSUE,),
        )
    }


def test_segments_group_subscribers_by_their_selection_in_issue_order(settings, db):
    add_people(db)
    issue, summaries = issue_summaries(settings)
    assert write_plan(db, settings, issue, summaries) == 8  # the 8 subscribed people

    planned = rows(db)
    assert "gone@example.org" not in planned and "bounced@example.org" not in planned
    # Same selection, same segment; "all" gets every summary in issue order.
    assert planned["all1@example.org"]["segment"] == planned["all2@example.org"]["segment"]
    assert planned["women@example.org"]["segment"] == planned["women2@example.org"]["segment"]
    assert planned["women@example.org"]["segment"] != planned["all1@example.org"]["segment"]
    meaning = store.get_plan(db, ISSUE).segments
    assert meaning[planned["all1@example.org"]["segment"]] == issue.summaries
    women = meaning[planned["women@example.org"]["segment"]]
    assert women == ["pregnancy-breastfeeding-therapy"]
    vax = meaning[planned["vax@example.org"]["segment"]]
    assert vax == [i for i in issue.summaries if i in vax]  # issue order
    assert set(vax) == {"risk-variants-brain-methylation", "vaccine-response-anti-cd20"}
    assert segment_key(vax) == planned["vax@example.org"]["segment"]
    # A topic that no longer exists selects nothing: a skipped row with the reason.
    assert planned["retired@example.org"]["state"] == "skipped"
    assert planned["retired@example.org"]["reason"] == "no matching topics"
    assert {r["state"] for e, r in planned.items() if e != "retired@example.org"} == {"pending"}


def test_planning_again_adds_only_the_missing_rows(settings, db):
    add_people(db)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    assert write_plan(db, settings, issue, summaries) == 0
    insert(db, "late@example.org", name="Late", topics=["genetics"])
    assert write_plan(db, settings, issue, summaries) == 1
    assert rows(db)["late@example.org"]["state"] == "pending"


def test_planning_streams_pages_and_a_crash_half_way_is_completed_next_time(
    settings, db, monkeypatch
):
    monkeypatch.setattr(planning, "PLAN_PAGE", 50)
    add_many(db, 230)
    issue, summaries = issue_summaries(settings)
    # Simulate a plan killed after its first page: only the first 50 rows exist.
    calls = []
    original = store.add_rows

    def crash_after_first_page(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(store, "add_rows", crash_after_first_page)
    with pytest.raises(KeyboardInterrupt):
        write_plan(db, settings, issue, summaries)
    assert store.counts(db, ISSUE) == {"pending": 50}
    monkeypatch.setattr(store, "add_rows", original)
    assert write_plan(db, settings, issue, summaries) == 180
    assert store.counts(db, ISSUE) == {"pending": 230}


def test_an_issue_edited_after_its_send_began_is_refused(settings, db):
    add_people(db)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    edited = issue.model_copy(update={"summaries": issue.summaries[:-1]})
    with pytest.raises(DeliveryError, match="edited after its send began"):
        write_plan(db, settings, edited, summaries[:-1])


def test_preview_counts_segments_requests_skipped_and_suppressed_and_writes_nothing(settings, db):
    add_people(db)
    add_many(db, 7)  # seven more "all" subscribers
    issue, summaries = issue_summaries(settings)
    before = db.conn.execute("SELECT count(*) FROM meta").fetchone()[0]

    preview = preview_plan(db, settings, issue, summaries, "sendgrid", batch_size=3)

    assert store.counts(db, ISSUE) == {}
    assert store.get_send(db, ISSUE) is None
    assert db.conn.execute("SELECT count(*) FROM meta").fetchone()[0] == before
    assert preview.recipients == 14  # 7 people with a selection + 7 more "all"
    assert preview.skipped == 1
    assert preview.not_subscribed == {"unsubscribed": 1, "bounced": 1}
    assert preview.suppressed == 2
    by_ids = {s.summary_ids: s.recipients for s in preview.segments}
    assert by_ids[tuple(issue.summaries)] == 9
    assert by_ids[("pregnancy-breastfeeding-therapy",)] == 2
    assert preview.segments[0].summary_ids == tuple(issue.summaries)  # largest first
    # 9 "all" → 3 requests of 3; every other segment fits in one.
    assert preview.requests == 3 + (len(preview.segments) - 1)


def test_preview_of_a_partly_sent_issue_counts_only_what_is_left(settings, db, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    add_people(db)
    issue, summaries = issue_summaries(settings)
    backend = ScriptedBackend([None, SendRefused("stop here")], max_batch=3)
    with pytest.raises(SendRefused):
        send_issue(settings, db, ISSUE, backend=backend, sleep=lambda s: None)
    sent = store.counts(db, ISSUE)["sent"]
    insert(db, "new@example.org", topics="all")

    preview = preview_plan(db, settings, issue, summaries, "outbox", batch_size=3)

    assert preview.recipients == 7 - sent + 1
    assert preview.existing["sent"] == sent


def test_each_segment_is_rendered_once(settings, db, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    add_people(db)
    add_many(db, 10)

    class CountingRenderer(Renderer):
        calls: list = []

        def render(self, issue, summaries):
            self.calls.append(tuple(s.id for s in summaries))
            return super().render(issue, summaries)

    renderer = CountingRenderer(settings)
    backend = ScriptedBackend(max_batch=2)
    send_issue(settings, db, ISSUE, backend=backend, renderer=renderer)

    segments = {tuple(b.email.summary_ids) for b in backend.batches}
    assert len(backend.batches) > len(segments)  # several batches share a render
    check_renders = 2  # `check` renders the whole issue and its first summary alone
    assert len(renderer.calls) == len(segments) + check_renders
    # Every batch of a segment carries the very same rendered object.
    by_segment = {}
    for batch in backend.batches:
        assert by_segment.setdefault(batch.email.summary_ids, batch.email) is batch.email


def summaries_for(settings, topics) -> tuple[str, ...]:
    """The summary ids (issue order) a subscriber with these topics gets."""
    _, summaries = issue_summaries(settings)
    return tuple(s.id for s in select_summaries(summaries, topics))


def received_summaries(backend) -> dict[int, tuple[str, ...]]:
    """subscriber id → the summary ids of the email the backend was given for them."""
    return {
        r.subscriber_id: batch.email.summary_ids
        for batch in backend.batches
        for r in batch.recipients
    }


def test_a_segment_that_first_appears_after_the_first_planning_page_is_sent(
    settings, db, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    monkeypatch.setattr(planning, "PLAN_PAGE", 3)
    add_many(db, 4)  # the first page holds only "all" readers
    genes = insert(db, "genes@example.org", topics=["genetics"])  # second page, a new selection
    backend = ScriptedBackend(max_batch=10)

    result = send_issue(settings, db, ISSUE, backend=backend)

    assert result.report.state == "sent"
    got = received_summaries(backend)
    assert len(got) == 5
    assert got[genes.id] == summaries_for(settings, ["genetics"])
    assert set(store.get_plan(db, ISSUE).segments) == {
        segment_key(summaries_for(settings, "all")),
        segment_key(summaries_for(settings, ["genetics"])),
    }


def test_someone_with_a_new_topic_choice_who_joins_while_a_send_is_stopped_gets_it_on_resume(
    settings, db, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    add_many(db, 4)
    stopping = ScriptedBackend([None, SendRefused("stop here")], max_batch=2)
    with pytest.raises(SendRefused):
        send_issue(settings, db, ISSUE, backend=stopping, sleep=lambda s: None)
    genes = insert(db, "genes@example.org", topics=["genetics"])

    resumed = ScriptedBackend(max_batch=10)
    result = send_issue(settings, db, ISSUE, backend=resumed)

    assert result.report.state == "sent"
    got = received_summaries(resumed)
    assert got[genes.id] == summaries_for(settings, ["genetics"])
    assert len(got) == 3  # the new reader and the two "all" readers the first run left


def test_a_dry_run_of_a_resumed_send_counts_every_skipped_reader_once(
    settings, db, run, monkeypatch
):
    monkeypatch.setattr(planning, "PLAN_PAGE", 3)  # pages end on planned and unplanned readers

    def retired(*numbers):  # readers whose only topic the settings no longer name
        return [(f"old{n}@example.org", "", ["retired-topic"], "subscribed") for n in numbers]

    add_people(db, retired(1, 2))
    add_many(db, 3)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)  # a send began: 2 skipped rows, 3 pending
    add_people(db, retired(3, 4, 5))
    add_many(db, 2, start=10)  # joined since: not planned yet

    preview = preview_plan(db, settings, issue, summaries, "outbox", batch_size=1000)

    assert preview.skipped == 2 + 3  # planned skipped rows and the unplanned ones, each once
    assert preview.recipients == 3 + 2
    assert [s.key for s in preview.segments] == [segment_key(summaries_for(settings, "all"))]
    assert preview.existing == {"pending": 3, "skipped": 2}
    out = run("send", ISSUE, "--dry-run").stdout
    assert "Plan for issue 2026-12 (outbox)" in out
    assert "skipped (no matching topics): 5" in out
    assert "recipients: 5 in 1 segments" in out


def test_a_dry_run_counts_unknown_recipients_only_with_retry_unknown(
    settings, db, run, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    add_many(db, 9)  # one segment: batches of 3
    backend = ScriptedBackend([None, OutcomeUnknown("no answer within 30 s")], max_batch=3)
    with pytest.raises(OutcomeUnknown):
        send_issue(settings, db, ISSUE, backend=backend, sleep=lambda s: None)
    assert store.counts(db, ISSUE) == {"sent": 3, "unknown": 3, "pending": 3}
    issue, summaries = issue_summaries(settings)

    assert preview_plan(db, settings, issue, summaries, "outbox", 3).recipients == 3
    assert "recipients: 3 in 1 segments" in run("send", ISSUE, "--dry-run").stdout
    with_unknown = run("send", ISSUE, "--dry-run", "--retry-unknown", "--now").stdout
    assert "recipients: 6 in 1 segments" in with_unknown
    assert "held back" not in with_unknown


def test_a_dry_run_with_retry_unknown_holds_back_what_the_send_would_hold_back(
    settings, db, run, monkeypatch
):
    """Unknown rows submitted within delivery.unknown_grace (1 h) are not resent by
    `--retry-unknown` without --now: the dry run and the prompt count as the send does."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    add_many(db, 9)  # one segment: batches of 3
    backend = ScriptedBackend([None, OutcomeUnknown("no answer within 30 s")], max_batch=3)
    with pytest.raises(OutcomeUnknown):
        send_issue(settings, db, ISSUE, backend=backend, sleep=lambda s: None)
    issue, summaries = issue_summaries(settings)

    soon = run("send", ISSUE, "--dry-run", "--retry-unknown").stdout
    assert "recipients: 3 in 1 segments" in soon
    assert "unknown, held back: 3 (submitted less than delivery.unknown_grace ago" in soon
    later = preview_plan(
        db,
        settings,
        issue,
        summaries,
        "outbox",
        3,
        retry_unknown=True,
        unknown_submitted_by="2999-01-01T00:00:00Z",
    )
    assert (later.recipients, later.unknown_held) == (6, 0)

    result = send_issue(
        settings,
        db,
        ISSUE,
        backend=ScriptedBackend(max_batch=3),
        retry_unknown=True,
        sleep=lambda s: None,
    )
    assert result.run.sent == 3  # what the dry run said
    assert store.counts(db, ISSUE) == {"sent": 6, "unknown": 3}


def test_a_dry_run_refuses_an_issue_edited_after_its_send_began(settings, db, run, workspace):
    add_many(db, 3)
    issue, summaries = issue_summaries(settings)
    write_plan(db, settings, issue, summaries)
    path = workspace / "issues" / f"{ISSUE}.yaml"
    path.write_text(path.read_text().replace("- gut-bacteria-disease-activity\n", ""))

    result = run("send", ISSUE, "--dry-run")

    assert result.exit_code == 1
    assert "was edited after its send began" in result.stderr
