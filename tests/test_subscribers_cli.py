"""The admin's commands through the CLI: add, set-topics, unsubscribe, resubscribe, list, stats, history."""

from __future__ import annotations

import csv
import io

import pytest

from newsletter import subscribers as subs
from newsletter.store import subscribers as store

pytestmark = pytest.mark.both_engines


def get(db, email):
    return store.get_row_by_email(db, email)


# add ---------------------------------------------------------------------------------------------


def test_add(run, db):
    result = run(
        "subscribers", "add", "Ana@Example.org", "--name", "Ana", "--topics", "genetics,infections"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Added ana@example.org (topics: genetics, infections)\n"
    ana = get(db, "ana@example.org")
    assert (ana.name, ana.topics, ana.status, ana.status_source) == (
        "Ana",
        {"genetics", "infections"},
        "subscribed",
        "cli",
    )
    assert (
        run("subscribers", "add", "ben@example.org").stdout
        == "Added ben@example.org (topics: all)\n"
    )


def test_add_an_existing_address_says_so(run, db):
    run("subscribers", "add", "ana@example.org")
    result = run("subscribers", "add", "ANA@example.org", "--topics", "genetics")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: ana@example.org is already a subscriber (status subscribed); "
        "use set-topics to change topics, or resubscribe\n"
    )
    assert get(db, "ana@example.org").topics == "all"


def test_add_never_resubscribes_an_unsubscribed_address(run, db):
    run("subscribers", "add", "ana@example.org")
    run("subscribers", "unsubscribe", "ana@example.org")
    result = run("subscribers", "add", "ana@example.org")
    assert result.exit_code == 1
    assert "already a subscriber (status unsubscribed)" in result.stderr
    assert get(db, "ana@example.org").status == "unsubscribed"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["a@@b.org"], "error: email 'a@@b.org' is not a valid address: "),
        (
            ["a@example.org", "--topics", "cooking"],
            "error: unknown topic 'cooking' (known topics: ",
        ),
        (["a@example.org", "--name", "A\nB"], "error: name 'A\\nB' contains a line break"),
    ],
)
def test_add_refuses_bad_values(run, db, args, expected):
    result = run("subscribers", "add", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(expected)
    assert store.count(db) == 0


# set-topics, unsubscribe, resubscribe ------------------------------------------------------------


def test_set_topics(run, db):
    run("subscribers", "add", "ana@example.org")
    result = run("subscribers", "set-topics", "ANA@example.org", "womens-health;genetics")
    assert result.exit_code == 0
    assert result.stdout == "ana@example.org: topics now: genetics, womens-health\n"
    assert get(db, "ana@example.org").topics == {"genetics", "womens-health"}
    again = run("subscribers", "set-topics", "ana@example.org", "genetics,womens-health")
    assert again.stdout == "ana@example.org: topics unchanged: genetics, womens-health\n"
    last = store.history_rows(db, get(db, "ana@example.org").id)[-1]
    assert (last["field"], last["old_value"], last["new_value"], last["source"]) == (
        "topics",
        "all",
        "genetics;womens-health",
        "cli",
    )


def test_set_topics_on_an_unsubscribed_subscriber_does_not_resubscribe(run, db):
    run("subscribers", "add", "ana@example.org")
    run("subscribers", "unsubscribe", "ana@example.org")
    result = run("subscribers", "set-topics", "ana@example.org", "genetics")
    assert result.exit_code == 0
    assert "ana@example.org is unsubscribed: they get no email until resubscribed" in result.stdout
    ana = get(db, "ana@example.org")
    assert (ana.status, ana.topics) == ("unsubscribed", {"genetics"})


def test_unknown_address_is_an_error(run):
    for command in (
        ["set-topics", "x@example.org", "all"],
        ["unsubscribe", "x@example.org"],
        ["resubscribe", "x@example.org"],
        ["history", "x@example.org"],
    ):
        result = run("subscribers", *command)
        assert result.exit_code == 1
        assert result.stderr == "error: no subscriber with the address 'x@example.org'\n"


def test_unsubscribe_and_resubscribe(run, db):
    run("subscribers", "add", "ana@example.org")
    result = run("subscribers", "unsubscribe", "ana@example.org", "--reason", "asked by phone")
    assert (result.exit_code, result.stdout) == (0, "Unsubscribed ana@example.org\n")
    ana = get(db, "ana@example.org")
    assert (ana.status, ana.status_source, ana.status_reason) == (
        "unsubscribed",
        "cli",
        "asked by phone",
    )
    again = run("subscribers", "unsubscribe", "ana@example.org")
    assert again.stdout == "ana@example.org is already unsubscribed: nothing changed\n"

    back = run("subscribers", "resubscribe", "ana@example.org")
    assert back.stdout == "Resubscribed ana@example.org (was unsubscribed)\n"
    assert get(db, "ana@example.org").status == "subscribed"
    assert run("subscribers", "resubscribe", "ana@example.org").stdout == (
        "ana@example.org is already subscribed: nothing changed\n"
    )


def test_unsubscribe_keeps_a_bounce_as_it_is(run, db):
    sub = store.insert(db, "b@example.org")
    store.write_status(db, sub.id, "bounced", "sendgrid", "mailbox full")
    result = run("subscribers", "unsubscribe", "b@example.org")
    assert result.stdout == "b@example.org is already bounced: nothing changed\n"
    assert get(db, "b@example.org").status_reason == "mailbox full"


@pytest.mark.parametrize(
    ("status", "what"),
    [
        ("bounced", "a bounce"),
        ("complained", "a spam complaint"),
        ("invalid", "an invalid address"),
    ],
)
def test_resubscribing_a_bounced_address_needs_force_and_a_reason(run, db, status, what):
    sub = store.insert(db, "b@example.org")
    store.write_status(db, sub.id, status, "sendgrid", "SendGrid said so")

    refused = run("subscribers", "resubscribe", "b@example.org")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: b@example.org is {status}: only an admin clears {what}, with "
        "`newsletter subscribers resubscribe --force --reason TEXT`\n"
    )
    no_reason = run("subscribers", "resubscribe", "b@example.org", "--force")
    assert no_reason.exit_code == 1
    assert no_reason.stderr.startswith("error: --force needs --reason TEXT")
    assert get(db, "b@example.org").status == status

    done = run(
        "subscribers",
        "resubscribe",
        "b@example.org",
        "--force",
        "--reason",
        "new mailbox, by phone",
    )
    assert (done.exit_code, done.stdout) == (0, f"Resubscribed b@example.org (was {status})\n")
    last = store.history_rows(db, sub.id)[-1]
    assert (last["field"], last["old_value"], last["new_value"], last["source"]) == (
        "status",
        status,
        "subscribed",
        "cli",
    )
    assert last["reason"] == "--force: new mailbox, by phone"


def test_resubscribe_refuses_an_unsubscribe_that_followed_a_bounce(run, db):
    sub = store.insert(db, "b@example.org")
    store.write_status(db, sub.id, "bounced", "sendgrid", "SendGrid bounce")
    store.write_status(db, sub.id, "unsubscribed", "sendgrid", "SendGrid unsubscribe")
    refused = run("subscribers", "resubscribe", "b@example.org")
    assert refused.exit_code == 1
    assert "b@example.org is unsubscribed after a bounce: only an admin clears" in refused.stderr
    assert get(db, "b@example.org").status == "unsubscribed"
    forced = run("subscribers", "resubscribe", "b@example.org", "--force", "--reason", "checked")
    assert forced.stdout == "Resubscribed b@example.org (was unsubscribed)\n"


def test_resubscribe_names_the_latest_stop_under_an_unsubscribe(workspace, run, db):
    sub = store.insert(db, "b@example.org")
    store.write_status(db, sub.id, "bounced", "sendgrid", "SendGrid bounce")
    store.write_status(db, sub.id, "complained", "sendgrid", "SendGrid spam report")
    (workspace / "fix.csv").write_text("email,status\nb@example.org,unsubscribed\n")
    assert "1 updated" in run("subscribers", "import", "fix.csv", "--resubscribe").stdout
    refused = run("subscribers", "resubscribe", "b@example.org")
    assert "is unsubscribed after a spam complaint: only an admin clears" in refused.stderr


def test_library_resubscribes_only_when_asked(settings, db):
    sub = store.insert(db, "a@example.org")
    assert subs.unsubscribe(db, sub.id, reason="asked by phone")
    assert subs.get(db, sub.id).status == "unsubscribed"
    assert subs.resubscribe(db, "A@EXAMPLE.ORG", reason="wrote to us")
    assert subs.find(db, "a@example.org").status == "subscribed"
    assert not subs.resubscribe(db, sub.id)  # already subscribed: nothing changed


def test_iter_subscribed_streams_only_subscribed(db):
    for i in range(5):
        store.insert(db, f"u{i}@example.org")
    subs.unsubscribe(db, "u2@example.org")
    streamed = subs.iter_subscribed(db, page_size=2)
    assert next(streamed).email == "u0@example.org"  # a generator, not a list
    assert [s.email for s in streamed] == ["u1@example.org", "u3@example.org", "u4@example.org"]


# list --------------------------------------------------------------------------------------------


@pytest.fixture
def example(run):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0


def test_list_table(run, example):
    result = run("subscribers", "list")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].strip() == "25 subscribers"
    assert "maria.keller@example.org" in result.stdout
    assert "old.address@example.com" in result.stdout  # every status by default


def test_list_by_status_and_topic_as_csv(run, example):
    result = run("subscribers", "list", "--status", "bounced", "--csv")
    assert result.stdout == (
        "email,name,topics,status\n"
        "old.address@example.com,,all,bounced\n"
        "anna.kowalska@example.net,Anna Kowalska,other-conditions,bounced\n"
    )
    result = run("subscribers", "list", "--topic", "genetics", "--status", "subscribed", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # Those who chose genetics, and those who chose all topics.
    assert all(r["topics"] == "all" or "genetics" in r["topics"].split(";") for r in rows)
    assert {r["email"] for r in rows} >= {"chen.wei@example.com", "maria.keller@example.org"}
    assert len(rows) == 3 + 5


def test_list_limit_says_how_many_more(run, example):
    result = run("subscribers", "list", "--limit", "2")
    assert "25 subscribers (showing 2)" in result.stdout
    assert result.stdout.splitlines()[-1] == "23 more not shown: use --limit N, or --csv for all"


def test_list_a_retired_topic_finds_who_still_holds_it(run, db, example):
    store.insert(db, "old@example.org", topics=["retired-topic"])
    result = run("subscribers", "list", "--topic", "retired-topic", "--csv")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1:] == ["old@example.org,,retired-topic,subscribed"]
    assert "not a topic in the settings" in result.stderr


def test_list_with_a_bad_status_is_a_usage_error(run):
    result = run("subscribers", "list", "--status", "maybe")
    assert result.exit_code == 2
    assert "Invalid value for '--status'" in result.stderr


# stats -------------------------------------------------------------------------------------------


def test_stats_per_status_and_topic(run, example):
    result = run("subscribers", "stats")
    assert result.exit_code == 0, result.stderr
    lines = [" ".join(line.replace("│", " ").split()) for line in result.stdout.splitlines()]
    for expected in (
        "subscribed 20",
        "unsubscribed 2",
        "bounced 2",
        "complained 1",
        "invalid 0",
        "total 25",
        # chose it, via all (5 subscribed chose 'all'), gets it
        "genetics 3 5 8",
        "treatment-safety 5 5 10",
        "all topics 5",
    ):
        assert expected in lines, expected


def test_stats_library_counts(settings, db):
    store.insert(db, "all@example.org", topics="all")
    store.insert(db, "gen@example.org", topics=["genetics", "infections"])
    store.insert(db, "old@example.org", topics=["retired-topic"])
    store.insert(db, "mix@example.org", topics=["retired-topic", "genetics"])
    gone = store.insert(db, "gone@example.org", topics=["genetics"])
    subs.unsubscribe(db, gone)
    report = subs.stats(db, settings)
    assert report.by_status["subscribed"] == 4 and report.total == 5
    genetics = next(t for t in report.by_topic if t.slug == "genetics")
    assert (genetics.chosen, genetics.via_all, genetics.total) == (2, 1, 3)
    assert report.all_topics == 1
    assert report.unknown_topics == {"retired-topic": 2}
    assert report.no_known_topic == 1


def write_issue(workspace, summary_ids: list[str]) -> str:
    (workspace / "issues" / "test-issue.yaml").write_text(
        "id: test-issue\ndate: 2026-12-01\nsubject: Test\npreheader: Test\nsummaries:\n"
        + "".join(f"- {sid}\n" for sid in summary_ids)
    )
    return "test-issue"


def test_stats_for_an_issue_counts_who_would_get_it(workspace, run, db):
    # One summary, about diagnosis-imaging only.
    issue = write_issue(workspace, ["central-vein-sign-mri"])
    store.insert(db, "all@example.org", topics="all")  # yes
    store.insert(db, "img@example.org", topics=["diagnosis-imaging"])  # yes
    store.insert(db, "gen@example.org", topics=["genetics"])  # no
    store.insert(db, "old@example.org", topics=["retired-topic"])  # no: unknown topics are ignored
    store.insert(db, "mix@example.org", topics=["retired-topic", "diagnosis-imaging"])  # yes
    gone = store.insert(db, "gone@example.org", topics=["diagnosis-imaging"])  # no: unsubscribed
    store.write_status(db, gone.id, "unsubscribed", "cli")
    result = run("subscribers", "stats", "--issue", issue)
    assert result.exit_code == 0, result.stderr
    assert (
        "Issue test-issue (1 summaries): 3 of 5 subscribed subscribers would get an email "
        "(1 different selections of summaries)"
    ) in result.stdout
    # The retired topic is reported, and the one who chose only it is named as getting nothing.
    assert (
        "Topics no longer in the settings (ignored for matching): retired-topic (2)"
        in result.stdout
    )
    assert "1 subscribed subscribers chose only topics no longer in the settings" in result.stdout


def test_stats_for_the_example_issue(run, example):
    result = run("subscribers", "stats", "--issue", "2026-12")
    assert result.exit_code == 0
    assert "Issue 2026-12 (8 summaries): 20 of 20 subscribed subscribers would get an email" in (
        result.stdout
    )


def test_stats_for_a_missing_issue_is_a_clear_error(run):
    result = run("subscribers", "stats", "--issue", "1999-01")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: issues/1999-01.yaml: issue not found")


def test_stats_of_an_empty_list(run):
    result = run("subscribers", "stats")
    assert result.exit_code == 0
    assert "total" in result.stdout


# history -----------------------------------------------------------------------------------------


def test_history_answers_why_someone_stopped_getting_it(workspace, run, example):
    (workspace / "leavers.csv").write_text("email,status\nmaria.keller@example.org,unsubscribed\n")
    run("subscribers", "import", "leavers.csv")
    run("subscribers", "resubscribe", "maria.keller@example.org", "--reason", "wrote to us")
    run("subscribers", "set-topics", "maria.keller@example.org", "genetics")
    # A wide terminal, so that each change is one line of the table.
    result = run("subscribers", "history", "MARIA.KELLER@example.org", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "maria.keller@example.org: subscribed, topics genetics"
    rows = [[cell.strip() for cell in line.split("│")[2:]] for line in lines if "│" in line]
    assert rows == [
        ["created", "subscribed", "import", "imported from subscribers.example.csv:2", ""],
        ["topics", "all", "import", "", ""],
        ["status", "subscribed → unsubscribed", "import", "imported from leavers.csv:2", ""],
        ["status", "unsubscribed → subscribed", "cli", "wrote to us", ""],
        ["topics", "all → genetics", "cli", "", ""],
    ]


def test_help_lists_every_command(run):
    result = run("subscribers", "--help")
    for command in (
        "import",
        "export",
        "add",
        "set-topics",
        "unsubscribe",
        "resubscribe",
        "list",
        "stats",
        "history",
    ):
        assert command in result.stdout
