"""`summaries pull` never loses an editor's work: an entry is pulled once, a second pull writes
nothing (and sends a conditional GET that a 304 answers), a change on the site is reported until
the editor asks for it, an edited or hand-written file is never overwritten, and an interrupted
pull leaves whole files and a state that the next pull completes."""
# Not both_engines: pull-state.json and summary files, no database.

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from newsletter.content import load_summaries
from newsletter.errors import PullError
from newsletter.pull.files import pull_lock
from tests.pull_helpers import (
    REPO,
    actions,
    configure,
    original,
    pull,
    snapshot,
    summary_files,
    without_source,
)

ALL = sorted(p.stem for p in (REPO / "summaries").glob("*.yaml"))
SLUG = "gut-bacteria-disease-activity"
NEW_FINDINGS = (
    "An updated analysis with a second group of patients confirmed the link between these gut "
    "bacteria and relapses."
)


def _edit_on_site(site, slug=SLUG):
    site.edit(slug, findings=NEW_FINDINGS)


def test_a_second_pull_writes_nothing_and_a_304_is_honoured(example_site, workspace, run):
    configure(workspace, example_site)
    first = run("summaries", "pull")
    assert first.exit_code == 0, first.stderr
    assert "14 new written" in first.stdout
    before = snapshot(workspace)
    [answered] = example_site.requested("/feed.xml")
    pages = len(example_site.requests)

    second = run("summaries", "pull")
    assert second.exit_code == 0, second.stderr
    assert "has not changed since the last pull (HTTP 304)" in second.stdout
    conditional = example_site.requested("/feed.xml")[1]
    assert conditional["If-None-Match"].startswith('"')
    assert conditional["If-Modified-Since"].endswith(" GMT")
    assert len(example_site.requests) == pages + 1  # the feed only, no page
    assert snapshot(workspace) == before
    assert answered.get("If-None-Match") is None


def test_a_second_pull_from_a_server_without_conditional_get_writes_nothing(
    example_site, workspace
):
    settings = configure(workspace, example_site)
    example_site.answer("/feed.xml", headers={})  # the feed, but no ETag / Last-Modified
    assert not pull(settings).failed
    before = snapshot(workspace)
    requests = len(example_site.requests)
    report = pull(settings)
    assert (report.not_modified, report.items, report.unchanged) == (False, [], len(ALL))
    assert snapshot(workspace) == before
    assert [p for p, _ in example_site.requests[requests:]] == ["/feed.xml"]  # no page
    assert example_site.requested("/feed.xml")[1].get("If-None-Match") is None


def test_dry_run_lists_what_would_be_written_and_writes_nothing(example_site, workspace, run):
    configure(workspace, example_site)
    before = snapshot(workspace)
    result = run("summaries", "pull", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Dry run: nothing is written.")
    assert result.stdout.count("would write ") == len(ALL)
    assert f"would write   {SLUG}  {example_site.link(SLUG)}" in result.stdout
    assert "14 new would be written" in result.stdout
    assert snapshot(workspace) == before
    assert not (workspace / "pull-state.json").exists()


def test_a_change_on_the_site_is_reported_until_the_editor_takes_it(example_site, workspace, run):
    configure(workspace, example_site)
    assert run("summaries", "pull").exit_code == 0
    path = workspace / "summaries" / f"{SLUG}.yaml"
    pulled = path.read_bytes()
    _edit_on_site(example_site)

    for _ in range(2):  # reported each time, never written
        result = run("summaries", "pull")
        assert result.exit_code == 0, result.stderr
        assert (
            f"changed       {SLUG}  {example_site.link(SLUG)}  (changed on the site since pulled on "
        ) in result.stdout
        assert (
            f"`newsletter summaries pull --update {SLUG}` takes the site's version" in result.stdout
        )
        assert "1 changed on the site" in result.stdout
        assert path.read_bytes() == pulled

    result = run("summaries", "pull", "--update", SLUG)
    assert result.exit_code == 0, result.stderr
    assert f"updated       {SLUG}" in result.stdout
    data = yaml.safe_load(path.read_text())
    assert data["findings"] == NEW_FINDINGS
    assert data["source"]["content_hash"] != yaml.safe_load(pulled)["source"]["content_hash"]
    # Taken: the next pulls have nothing to say about it.
    result = run("summaries", "pull")
    assert "0 changed on the site" in result.stdout
    assert "changed " not in result.stdout.replace("changed on the site", "")


def test_an_edited_local_file_is_never_overwritten_without_force(example_site, workspace, run):
    configure(workspace, example_site)
    assert run("summaries", "pull").exit_code == 0
    path = workspace / "summaries" / f"{SLUG}.yaml"
    edited = path.read_text().replace("Some gut bacteria may fuel", "Certain gut bacteria may fuel")
    path.write_text(edited)
    _edit_on_site(example_site)

    result = run("summaries", "pull")
    assert result.exit_code == 0
    assert f"changed       {SLUG}" in result.stdout
    assert path.read_text() == edited

    result = run("summaries", "pull", "--update", SLUG)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {example_site.link(SLUG)}: summaries/{SLUG}.yaml was edited since it was pulled "
        "(its content no longer matches the pulled hash); --force overwrites the edits\n"
    )
    assert path.read_text() == edited

    result = run("summaries", "pull", "--update", SLUG, "--force")
    assert result.exit_code == 0, result.stderr
    assert without_source(path.read_text())["findings"] == NEW_FINDINGS


def test_reformatting_a_pulled_file_is_not_an_edit(example_site, workspace, run):
    configure(workspace, example_site)
    assert run("summaries", "pull").exit_code == 0
    path = workspace / "summaries" / f"{SLUG}.yaml"
    data = yaml.safe_load(path.read_text())
    path.write_text("# checked by the editor\n" + yaml.safe_dump(data, width=60))
    _edit_on_site(example_site)
    result = run("summaries", "pull", "--update", SLUG)
    assert result.exit_code == 0, result.stderr
    assert without_source(path.read_text())["findings"] == NEW_FINDINGS


def test_force_goes_only_with_update(example_site, workspace, run):
    configure(workspace, example_site)
    result = run("summaries", "pull", "--force")
    assert result.exit_code == 2
    assert "--force only goes with --update ID" in result.stderr


def test_update_of_an_id_not_in_the_feed_is_reported(example_site, workspace, run):
    configure(workspace, example_site)
    result = run("summaries", "pull", "--update", "no-such-summary")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {example_site.url}/feed.xml: no-such-summary: no entry of the feed has this id; "
        "nothing to update\n"
    )


def test_a_deleted_pulled_summary_is_not_pulled_again(example_site, workspace, run):
    configure(workspace, example_site)
    example_site.answer("/feed.xml", headers={})  # no 304 shortcut: the entries are looked at
    assert run("summaries", "pull").exit_code == 0
    (workspace / "summaries" / f"{SLUG}.yaml").unlink()
    result = run("summaries", "pull")
    assert result.exit_code == 0
    assert "0 new written" in result.stdout and "14 unchanged" in result.stdout
    assert f"{SLUG}.yaml" not in summary_files(workspace)
    # Unless the editor asks for it.
    result = run("summaries", "pull", "--update", SLUG)
    assert result.exit_code == 0, result.stderr
    assert without_source(summary_files(workspace)[f"{SLUG}.yaml"]) == original(SLUG)


def test_the_first_pull_skips_entries_older_than_its_date(example_site, workspace):
    settings = configure(workspace, example_site, since=None)  # default: the first pull's date
    report = pull(settings)  # on FIXED_NOW, 2026-12-01
    assert sorted(actions(report)["new"]) == ["enterovirus-anti-cd20", "il10-womens-health"]
    skipped = {i.summary_id: i.reason for i in report.of("skipped")}
    assert len(skipped) == len(ALL) - 2
    assert skipped[SLUG] == "dated 2026-11-12, before 2026-12-01 (source.since)"
    assert json.loads(settings.paths.pull_state.read_text())["first_pull"] == "2026-12-01"
    # Later pulls keep the first pull's date; an explicit source.since moves it.
    settings = configure(workspace, example_site, clear=False, since="2026-11-15")
    example_site.edit("il10-womens-health")  # a new feed: no 304
    report = pull(settings)
    assert actions(report)["new"] == ["pregnancy-breastfeeding-therapy"]


def test_a_hand_written_file_is_never_overwritten_by_a_pulled_entry(example_site, workspace, run):
    configure(workspace, example_site, clear=False)  # the repository's own summaries are here
    path = workspace / "summaries" / f"{SLUG}.yaml"
    hand_written = path.read_text().replace("Gut Microbes", "Gut Microbes (online first)")
    path.write_text(hand_written)
    before = snapshot(workspace / "summaries")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {example_site.link(SLUG)}: duplicate id '{SLUG}': summaries/{SLUG}.yaml exists "
        "and was not pulled from this entry (it is left as it is)\n"
    )
    # The identical ones are recognised and recorded, not rewritten.
    assert result.stdout.count("recorded ") == len(ALL) - 1
    assert snapshot(workspace / "summaries") == before
    state = json.loads((workspace / "pull-state.json").read_text())
    assert len(state["entries"]) == len(ALL) - 1


def test_an_interrupted_pull_leaves_whole_files_and_the_next_pull_completes_it(
    example_site, workspace
):
    configure(workspace, example_site)
    third = "pregnancy-breastfeeding-therapy"  # newest first: enterovirus, il10, then this one
    example_site.answer(f"/summaries/{third}", hang=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NEWSLETTER_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from newsletter.cli import main; main()", "summaries", "pull"],
        cwd=workspace,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert example_site.hanging.wait(timeout=120), "the pull never reached the third page"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    files = sorted((workspace / "summaries").iterdir())
    assert [p.name for p in files] == ["enterovirus-anti-cd20.yaml", "il10-womens-health.yaml"]
    settings = configure(workspace, example_site, clear=False)
    assert sorted(load_summaries(settings)) == ["enterovirus-anti-cd20", "il10-womens-health"]
    state = json.loads(settings.paths.pull_state.read_text())
    assert sorted(r["summary"] for r in state["entries"].values()) == [
        "enterovirus-anti-cd20",
        "il10-womens-health",
    ]
    assert state["feeds"] == {}  # the validators are only kept once a pull has finished

    # Killed between writing a file and recording it: the file's source block tells.
    state["entries"] = {
        k: v for k, v in state["entries"].items() if v["summary"] != "il10-womens-health"
    }
    settings.paths.pull_state.write_text(json.dumps(state))
    before = snapshot(workspace / "summaries")
    del example_site.answers[f"/summaries/{third}"]
    report = pull(settings)
    assert not report.failed
    assert actions(report)["recorded"] == ["il10-womens-health"]
    assert sorted(actions(report)["new"]) == sorted(
        set(ALL) - {"enterovirus-anti-cd20", "il10-womens-health"}
    )
    after = snapshot(workspace / "summaries")
    for name, content in before.items():
        assert after[name] == content  # not rewritten


def test_a_failed_write_leaves_no_file_and_records_nothing(example_site, workspace, monkeypatch):
    settings = configure(workspace, example_site)
    import newsletter.pull.files as files

    real_fsync = os.fsync

    def disk_full(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{SLUG}.yaml."):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", disk_full)
    report = pull(settings)
    assert [(i.summary_id, i.reason) for i in report.failed] == [
        (SLUG, f"cannot write {SLUG}.yaml: [Errno 28] No space left on device")
    ]
    names = [p.name for p in (workspace / "summaries").iterdir()]
    assert f"{SLUG}.yaml" not in names
    assert not [n for n in names if n.startswith(".")]
    state = json.loads(settings.paths.pull_state.read_text())
    assert SLUG not in [r["summary"] for r in state["entries"].values()]


def test_an_unreadable_state_file_is_a_clear_error(example_site, workspace, run):
    configure(workspace, example_site)
    (workspace / "pull-state.json").write_text("{not json")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: pull-state.json: cannot read the pull state (")
    assert "fix or delete it" in result.stderr
    assert summary_files(workspace) == {}


def test_one_pull_at_a_time(example_site, workspace):
    settings = configure(workspace, example_site)
    with pull_lock(settings.paths.summaries), pytest.raises(PullError, match="another"):
        pull(settings)
