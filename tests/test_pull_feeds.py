"""`summaries pull`, the feed: RSS 2.0, Atom and JSON Feed give the same summaries; a feed that is
malformed, HTML, huge, or holds unusable entries is reported by URL and reason, and the usable
entries are still pulled."""
# Not both_engines: feeds to summary files, no database.

from __future__ import annotations

import json

import pytest

from newsletter.content import load_summaries
from tests.pull_helpers import (
    REPO,
    actions,
    configure,
    original,
    pull,
    summary_files,
    without_source,
)

ALL = sorted(p.stem for p in (REPO / "summaries").glob("*.yaml"))


def test_three_feed_formats_give_identical_yaml(example_site, workspace, tmp_path):
    written = {}
    for feed in ("feed.xml", "atom.xml", "feed.json"):
        settings = configure(workspace, example_site)
        settings.paths.pull_state.unlink(missing_ok=True)
        report = pull(settings, f"{example_site.url}/{feed}")
        assert not report.failed, report.failed
        assert sorted(actions(report)["new"]) == ALL
        written[feed] = summary_files(workspace)
    assert written["feed.xml"] == written["atom.xml"] == written["feed.json"]
    assert report.feed_format == "JSON Feed"
    # What was pulled is what the site publishes: the repository's own summaries, field by field.
    for name, text in written["feed.xml"].items():
        assert without_source(text) == original(name.removesuffix(".yaml")), name


def test_pulled_files_load_with_the_existing_loader_and_carry_a_source_block(
    example_site, workspace
):
    settings = configure(workspace, example_site)
    pull(settings)
    summaries = load_summaries(settings)  # raises on any invalid file
    assert sorted(summaries) == ALL
    oct_ = summaries["oct-optic-neuritis"]
    assert oct_.source.entry_id == "tag:ms-research.example.org,2026:summaries/oct-optic-neuritis"
    assert str(oct_.source.page_url) == f"{example_site.url}/summaries/oct-optic-neuritis"
    assert oct_.source.fetched_at.isoformat() == "2026-12-01T09:30:00+00:00"
    assert oct_.source.content_hash.startswith("sha256:")
    # The page's canonical address, not the address it was fetched from, is the summary's URL.
    assert str(oct_.url) == "https://ms-research.example.org/summaries/oct-optic-neuritis"
    text = (workspace / "summaries" / "oct-optic-neuritis.yaml").read_text()
    assert text.startswith("title: Eye scans may help sort out the cause of optic neuritis early\n")
    assert "headline: >-\n  Early OCT eye scans" in text
    assert "topics:\n  - diagnosis-imaging\n" in text


def test_entry_content_with_the_sections_is_used_without_fetching_pages(example_site, workspace):
    settings = configure(workspace, example_site)
    report = pull(settings, f"{example_site.url}/full.xml")
    assert not report.failed
    assert sorted(actions(report)["new"]) == ALL
    assert not [p for p, _ in example_site.requests if p.startswith("/summaries/")]
    for name, text in summary_files(workspace).items():
        slug = name.removesuffix(".yaml")
        pulled, expected = without_source(text), original(slug)
        # Without the page there is no canonical address: the entry's link is the URL.
        assert pulled.pop("url") == example_site.link(slug)
        expected.pop("url")
        assert pulled == expected, name


def test_entry_content_without_every_part_falls_back_to_the_page(example_site, workspace):
    settings = configure(workspace, example_site)
    entries = example_site.entries(full=True)
    for entry in entries:
        entry["content"] = entry["content"].split("<h2>Limitations</h2>")[0]
    example_site.answer("/full.xml", body=example_site.rss(entries))
    report = pull(settings, f"{example_site.url}/full.xml")
    assert sorted(actions(report)["new"]) == ALL
    assert len([p for p, _ in example_site.requests if p.startswith("/summaries/")]) == len(ALL)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item>'
            b"<title>A</title></channel></rss>",
            "malformed XML: Opening and ending tag mismatch",
        ),
        (b'<?xml version="1.0"?>\n<rss version="2.0"><channel>&nbsp;</channel></rss>', "line 2"),
        (b'<?xml version="1.0"?><note><to>you</to></note>', "root element is <note>"),
        (b"", "not a feed"),
        (b'{"version": "1", "items": []}', "not a JSON Feed"),
        (b'{"items": [1, 2', "malformed JSON"),
    ],
)
def test_a_feed_that_cannot_be_read_is_reported_and_nothing_is_written(
    example_site, workspace, run, body, expected
):
    configure(workspace, example_site)
    example_site.answer("/feed.xml", body=body, content_type="application/rss+xml")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert f"error: {example_site.url}/feed.xml: " in result.stderr
    assert expected in result.stderr
    assert summary_files(workspace) == {}


def test_html_served_as_the_feed_names_the_feed_the_page_links_to(example_site, workspace, run):
    configure(workspace, example_site)
    result = run("summaries", "pull", f"{example_site.url}/")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {example_site.url}/: not a feed: the address serves an HTML page; "
        f"it names a feed at {example_site.url}/feed.xml"
    )
    assert summary_files(workspace) == {}


@pytest.mark.parametrize(("status", "phrase"), [(404, "HTTP 404 NOT FOUND"), (500, "HTTP 500")])
def test_feed_not_found_or_failing_is_reported(example_site, workspace, run, status, phrase):
    configure(workspace, example_site)
    example_site.answer("/feed.xml", status=status, body="no")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert f"error: {example_site.url}/feed.xml: {phrase}" in result.stderr


def test_feed_unreachable_is_reported(workspace, run, example_site):
    configure(workspace, example_site)
    result = run("summaries", "pull", "http://127.0.0.1:9/feed.xml")
    assert result.exit_code == 1
    assert "error: http://127.0.0.1:9/feed.xml: could not connect" in result.stderr
    assert "Traceback" not in result.output


def test_a_feed_of_50000_entries_is_bounded_work(example_site, workspace, run):
    configure(workspace, example_site, max_bytes=32 * 2**20)  # the size cap is another test
    result = run("summaries", "pull", f"{example_site.url}/many.xml?n=50000")
    assert result.exit_code == 0, result.stderr
    assert len(summary_files(workspace)) == 50  # --max defaults to 50
    pages = [p for p, _ in example_site.requests if p.startswith("/summaries/")]
    assert len(pages) == 50
    assert "the feed lists 50,000 entries; only the first 1,000 were read" in result.stdout
    assert "950 more left for the next pull (--max)" in result.stdout
    # With entries left over, the next pull must read the feed again (no 304 shortcut).
    state = json.loads((workspace / "pull-state.json").read_text())
    assert state["feeds"] == {}
    assert len(state["entries"]) == 50
    result = run("summaries", "pull", "--max", "7", f"{example_site.url}/many.xml?n=50000")
    assert result.exit_code == 0, result.stderr
    assert len(summary_files(workspace)) == 57


def test_entry_without_a_link_is_reported_the_others_pulled(example_site, workspace, run):
    configure(workspace, example_site)
    entries = example_site.entries()
    del entries[0]["link"]  # enterovirus-anti-cd20, the newest
    nameless = entries[1]
    nameless.pop("link")
    nameless.pop("id")
    example_site.answer("/feed.xml", body=example_site.rss(entries))
    result = run("summaries", "pull")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert (
        f"error: {example_site.url}/feed.xml entry 1 ('Rare enterovirus brain infections on "
        "anti-CD20 therapy'): entry tag:ms-research.example.org,2026:summaries/"
        "enterovirus-anti-cd20 has no link to its page"
    ) in errors
    assert any("entry 2 (" in e and "has neither an id (guid) nor a link" in e for e in errors)
    assert len(errors) == 2
    assert len(summary_files(workspace)) == len(ALL) - 2


def test_invalid_json_feed_item_is_reported_the_others_pulled(example_site, workspace):
    settings = configure(workspace, example_site)
    feed = json.loads(example_site.json_feed(example_site.entries()))
    del feed["items"][0]["id"]
    feed["items"][1]["tags"] = "Genetics"  # must be a list
    example_site.answer("/feed.json", body=json.dumps(feed))
    report = pull(settings, f"{example_site.url}/feed.json")
    assert [(i.url, i.reason) for i in report.failed] == [
        (
            f"{example_site.url}/feed.json entry 1 ('Rare enterovirus brain infections on "
            "anti-CD20 therapy')",
            "field 'id': Field required",
        ),
        (
            f"{example_site.url}/feed.json entry 2 ('Raising IL-10 levels in women with MS')",
            "field 'tags': Input should be a valid list",
        ),
    ]
    assert len(actions(report)["new"]) == len(ALL) - 2


def test_categories_unknown_to_the_settings_are_reported_not_written(example_site, workspace, run):
    configure(workspace, example_site)
    entries = example_site.entries()
    entries[0]["categories"] = ["Astrology", "Weather"]
    entries[1]["categories"] = []
    entries[2]["categories"] = ["Genetics", "Astrology"]  # one known category is enough
    example_site.answer("/feed.xml", body=example_site.rss(entries))
    result = run("summaries", "pull")
    assert result.exit_code == 1
    link = example_site.link
    assert result.stderr.splitlines() == [
        f"error: {link('enterovirus-anti-cd20')}: no topic: its categories 'Astrology', "
        "'Weather' are not in source.topics (map them in the settings, or give --default-topic)",
        f"error: {link('il10-womens-health')}: no topic: the entry has no categories "
        "(map them in the settings, or give --default-topic)",
    ]
    files = summary_files(workspace)
    assert "enterovirus-anti-cd20.yaml" not in files and "il10-womens-health.yaml" not in files
    assert "topics:\n  - genetics\nurl" in files["pregnancy-breastfeeding-therapy.yaml"]
    assert "categories not in source.topics: 'Astrology'" in result.stdout
    # Not recorded as pulled: with a default topic the next pull takes them.
    result = run("summaries", "pull", "--default-topic", "infections")
    assert result.exit_code == 0, result.stderr
    files = summary_files(workspace)
    assert "topics:\n  - infections\nurl" in files["il10-womens-health.yaml"]
    assert "topics:\n  - infections\nurl" in files["enterovirus-anti-cd20.yaml"]


def test_unknown_default_topic_is_refused(example_site, workspace, run):
    configure(workspace, example_site)
    result = run("summaries", "pull", "--default-topic", "astrology")
    assert result.exit_code == 1
    assert "error: --default-topic: unknown topic 'astrology'" in result.stderr


def test_two_entries_with_the_same_slug_are_both_refused(example_site, workspace, run):
    configure(workspace, example_site)
    entries = example_site.entries()
    twin = dict(
        entries[3],
        id="tag:elsewhere,2026:x",
        link=f"{example_site.url}/news/{entries[3]['link'].rsplit('/', 1)[1]}",
    )
    entries.append(twin)
    example_site.answer("/feed.xml", body=example_site.rss(entries))
    result = run("summaries", "pull")
    assert result.exit_code == 1
    slug = "trem2-microglia-repair"
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {example_site.link(slug)}: duplicate id '{slug}': ")
    assert errors[1].startswith(f"error: {example_site.url}/news/{slug}: duplicate id '{slug}': ")
    assert f"{slug}.yaml" not in summary_files(workspace)
    assert len(summary_files(workspace)) == len(ALL) - 1


def test_source_topics_must_name_known_topics(workspace, example_site):
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"source.topics maps to unknown topic 'astrology'"):
        configure(workspace, example_site, topics={"Stars": "astrology"})


def test_no_feed_given_is_a_clear_error(workspace, run):
    path = workspace / "newsletter.yaml"
    text = path.read_text()
    path.write_text(text.replace("  feed_url: http://127.0.0.1:8808/feed.xml\n", ""))
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: no feed to pull from: give FEED_URL or set source.feed_url in the settings\n"
    )
