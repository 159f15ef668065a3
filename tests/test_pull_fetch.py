"""`summaries pull`, over HTTP: timeouts, the size cap, redirect loops, failing pages, our
User-Agent, and pages in other charsets, against the example site on 127.0.0.1."""
# Not both_engines: HTTP fetching, no database.

from __future__ import annotations

import pytest

from newsletter.pull.fetch import Fetcher, FetchError
from tests.pull_helpers import REPO, actions, configure, pull, summary_files, without_source

ALL = sorted(p.stem for p in (REPO / "summaries").glob("*.yaml"))
SLUG = "cancer-immunotherapy-autoimmunity"  # its findings mention Sjögren's syndrome


def test_a_slow_feed_times_out_with_the_configured_timeout(example_site, workspace, run):
    configure(workspace, example_site, timeout=0.3)
    example_site.answer("/feed.xml", hang=True)  # answers only once the test has finished
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == f"error: {example_site.url}/feed.xml: timed out after 0.3 s\n"
    assert summary_files(workspace) == {}


def test_a_slow_page_is_reported_and_the_others_pulled(example_site, workspace):
    settings = configure(workspace, example_site, timeout=0.3)
    example_site.answer(f"/summaries/{SLUG}", hang=True)
    report = pull(settings)
    assert [(i.summary_id, i.reason) for i in report.failed] == [(SLUG, "timed out after 0.3 s")]
    assert sorted(actions(report)["new"]) == sorted(set(ALL) - {SLUG})


def test_a_redirect_loop_is_reported(example_site, workspace, run):
    configure(workspace, example_site)
    example_site.answer("/feed.xml", redirect="/old-feed.xml")
    example_site.answer("/old-feed.xml", redirect="/feed.xml")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {example_site.url}/feed.xml: too many redirects (more than 5): a redirect loop?\n"
    )
    # Each hop was a request of its own; the limit stopped it.
    assert len(example_site.requested("/feed.xml")) == 3


def test_redirects_within_the_limit_are_followed(example_site, workspace):
    settings = configure(workspace, example_site)
    example_site.answer("/rss", redirect="/feed.xml")
    example_site.answer(f"/summaries/{SLUG}", redirect=f"/summaries/{SLUG}/")
    example_site.answer(f"/summaries/{SLUG}/", body=example_site.page(SLUG))
    report = pull(settings, f"{example_site.url}/rss")
    assert not report.failed
    assert SLUG in actions(report)["new"]


def test_a_redirect_to_another_scheme_is_refused(example_site, workspace):
    settings = configure(workspace, example_site)
    example_site.answer(f"/summaries/{SLUG}", redirect="file:///etc/passwd")
    report = pull(settings)
    assert [(i.summary_id, i.reason.split(" (")[0]) for i in report.failed] == [
        (SLUG, "redirected to a URL that is not http(s)")
    ]


@pytest.mark.parametrize("declare_length", [False, True])
def test_a_50_mb_page_is_refused_at_the_size_cap(example_site, workspace, declare_length):
    settings = configure(workspace, example_site)
    size = 50 * 2**20
    example_site.answer(f"/summaries/{SLUG}", stream=size, declare_length=declare_length)
    report = pull(settings)
    [failed] = report.failed
    assert failed.summary_id == SLUG
    assert failed.reason.startswith("larger than the 10 MB limit")
    assert failed.reason.endswith("(source.max_bytes)")
    if declare_length:
        assert "(50 MB)" in failed.reason  # refused on the announced length, before the body
    assert sorted(actions(report)["new"]) == sorted(set(ALL) - {SLUG})
    assert f"{SLUG}.yaml" not in summary_files(workspace)
    # The client stopped reading: the server could not send the whole 50 MB.
    assert example_site.stream_ended.wait(timeout=60)
    assert example_site.streamed[f"/summaries/{SLUG}"] < size


@pytest.mark.parametrize(("status", "reason"), [(404, "HTTP 404 NOT FOUND"), (500, "HTTP 500")])
def test_a_failing_page_is_reported_the_others_pulled(example_site, workspace, run, status, reason):
    configure(workspace, example_site)
    example_site.answer(f"/summaries/{SLUG}", status=status, body="gone")
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {example_site.link(SLUG)}: {reason}")
    assert len(summary_files(workspace)) == len(ALL) - 1
    assert f"failed        {SLUG}  {example_site.link(SLUG)}  ({reason}" in result.stdout


def test_requests_carry_our_user_agent(example_site, workspace):
    settings = configure(workspace, example_site)
    pull(settings)
    agents = {h.get("User-Agent") for _, h in example_site.requests}
    assert len(agents) == 1
    agent = agents.pop()
    assert agent.startswith("newsletter/")
    assert "+https://ms-research.example.org" in agent


@pytest.mark.parametrize(
    ("encoding", "declared_in"),
    [
        ("iso-8859-1", "header"),
        ("windows-1252", "meta"),
        ("utf-16", "header"),
    ],
)
def test_a_page_in_another_declared_charset_is_decoded(
    example_site, workspace, encoding, declared_in
):
    settings = configure(workspace, example_site)
    html = example_site.page(SLUG)
    if encoding == "windows-1252":
        html = html.replace("Sjögren&#39;s", "Sjögren’s")  # a curly quote: not in latin-1
        assert "Sjögren’s" in html
    if declared_in == "meta":
        html = html.replace('<meta charset="utf-8">', f'<meta charset="{encoding}">')
        content_type = "text/html"
    else:
        html = html.replace('<meta charset="utf-8">', "")
        content_type = f"text/html; charset={encoding}"
    example_site.answer(f"/summaries/{SLUG}", body=html.encode(encoding), content_type=content_type)
    report = pull(settings)
    assert not report.failed
    findings = without_source(summary_files(workspace)[f"{SLUG}.yaml"])["findings"]
    expected = "Sjögren’s" if encoding == "windows-1252" else "Sjögren's"
    assert f"lupus or {expected} syndrome" in findings


def test_a_page_that_is_not_its_declared_charset_is_refused(example_site, workspace):
    settings = configure(workspace, example_site)
    html = example_site.page(SLUG)
    example_site.answer(
        f"/summaries/{SLUG}",
        body=html.encode("iso-8859-1"),  # but the header says UTF-8
        content_type="text/html; charset=utf-8",
    )
    report = pull(settings)
    [failed] = report.failed
    assert failed.summary_id == SLUG
    assert failed.reason.startswith("not valid utf-8 text at byte ")
    assert failed.reason.endswith("(charset declared in Content-Type header)")
    assert f"{SLUG}.yaml" not in summary_files(workspace)


def test_an_unknown_charset_is_refused(example_site, workspace):
    settings = configure(workspace, example_site)
    example_site.answer(
        f"/summaries/{SLUG}", body=b"<p>x</p>", content_type="text/html; charset=klingon-8"
    )
    report = pull(settings)
    assert [i.reason for i in report.failed] == [
        "unknown charset 'klingon-8' (declared in Content-Type header)"
    ]


def test_fetcher_refuses_urls_that_are_not_http(settings):
    with Fetcher(settings.source, "test") as fetcher, pytest.raises(FetchError) as err:
        fetcher.get("file:///etc/passwd")
    assert str(err.value) == "file:///etc/passwd: not an http(s) URL"


def test_a_feed_over_the_size_cap_is_refused(example_site, workspace, run):
    configure(workspace, example_site, max_bytes=2**20)
    example_site.answer("/feed.xml", stream=3 * 2**20)
    result = run("summaries", "pull")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {example_site.url}/feed.xml: larger than the 1 MB limit (source.max_bytes)\n"
    )
    assert summary_files(workspace) == {}
