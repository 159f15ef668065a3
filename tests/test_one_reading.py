"""What the list, the editor and the send each compute about subscribers comes out the same:
topics are read one way everywhere, `list --csv` writes the export's format, and `stats --issue`
counts who would get an issue exactly as the send's plan does."""

from __future__ import annotations

import re

import pytest

from newsletter.store import subscribers as subscriber_rows
from newsletter.web.preferences import chosen_topics

pytestmark = pytest.mark.both_engines


def test_the_editor_reads_topics_as_the_admin_does(run, db):
    # The spelling an admin may type (any case, ';' or ',', spaces) works for the editor too.
    spelling = "Infections; genetics"
    assert run("subscribers", "add", "ana@example.org", "--topics", spelling).exit_code == 0
    assert subscriber_rows.get_row_by_email(db, "ana@example.org").topics == {
        "genetics",
        "infections",
    }
    result = run("render", "2026-12", "--topics", spelling, "--format", "text")
    assert result.exit_code == 0, result.stderr
    # The footer names the topics in the settings' order, whatever order they were typed in.
    assert "these topics: Genetics, Infections and vaccines." in result.stdout


def test_the_editor_refuses_all_with_other_topics_as_the_admin_does(run, db):
    result = run("render", "2026-12", "--topics", "all,genetics")
    assert result.exit_code == 2
    assert "'all' cannot be combined with other topics" in result.stderr
    result = run("subscribers", "add", "ana@example.org", "--topics", "all,genetics")
    assert result.exit_code == 1
    assert "'all' cannot be combined with other topics" in result.stderr
    assert subscriber_rows.count(db) == 0


def test_the_preference_form_ignores_boxes_it_did_not_show(settings):
    ticked = ["genetics", "GENETICS-not-a-slug", "all", "genetics"]
    assert chosen_topics(settings, "all", "chosen", ticked, shown="chosen") == {"genetics"}


def test_list_csv_without_filters_is_the_export(run):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    assert run("subscribers", "unsubscribe", "maria.keller@example.org").exit_code == 0
    listed = run("subscribers", "list", "--csv")
    exported = run("subscribers", "export")
    assert listed.exit_code == exported.exit_code == 0
    assert listed.stdout_bytes == exported.stdout_bytes
    assert listed.stdout.count("\n") == 26  # the header and every subscriber


def test_stats_for_an_issue_counts_as_the_send_plan_does(run, db):
    assert run("subscribers", "import", "subscribers.example.csv").exit_code == 0
    # Someone no summary matches, someone holding only a retired topic, someone who left.
    subscriber_rows.insert(db, "retired@example.org", topics=["retired-topic"])
    assert run("subscribers", "add", "late@example.org", "--topics", "genetics").exit_code == 0
    assert run("subscribers", "unsubscribe", "maria.keller@example.org").exit_code == 0

    stats = run("subscribers", "stats", "--issue", "2026-12")
    plan = run("send", "2026-12", "--dry-run", env={"COLUMNS": "200"})
    assert stats.exit_code == plan.exit_code == 0, (stats.stderr, plan.stderr)

    reach = re.search(
        r"(\d+) of (\d+) subscribed subscribers would get an email \((\d+) different", stats.stdout
    )
    planned = re.search(r"recipients: (\d+) in (\d+) segments", plan.stdout)
    skipped = re.search(r"skipped \(no matching topics\): (\d+)", plan.stdout)
    reached, subscribed, segments = map(int, reach.groups())
    assert (reached, segments) == tuple(map(int, planned.groups()))
    assert subscribed - reached == int(skipped.group(1)) == 1  # the retired topic's holder
