"""One `newsletter send` loads and checks the issue once: every summary file and the issue file
are read once, `check_issue` runs once, each segment is rendered once (plus the check's own
renders, once), and one Jinja environment serves them all.

The counts come from wrapping the real functions wherever the package refers to them; production
code knows nothing of this test.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from newsletter.delivery import build_report
from tests.support.delivery import ISSUE, database, parse

pytestmark = pytest.mark.both_engines

# The modules of the send path, imported before wrapping so that every reference is replaced
# (a module imported later would hold the unwrapped function).
SEND_PATH = (
    "newsletter.cli",
    "newsletter.cli.sending",
    "newsletter.checks",
    "newsletter.content",
    "newsletter.render",
    "newsletter.templating",
    "newsletter.delivery",
)


def wrap_everywhere(monkeypatch, original, wrapper) -> int:
    """Replace `original` by `wrapper` in every loaded module of the package; returns how many
    references were replaced."""
    replaced = 0
    for module in list(sys.modules.values()):
        if module is None or not module.__name__.startswith("newsletter"):
            continue
        for name, value in list(vars(module).items()):
            if value is original:
                monkeypatch.setattr(module, name, wrapper)
                replaced += 1
    return replaced


class SendPathCounts:
    """Counts, while installed, file loads by path, `check_issue` calls, renders (inside and
    outside the check) and Jinja environments built."""

    def __init__(self, monkeypatch):
        for name in SEND_PATH:
            importlib.import_module(name)
        from newsletter import checks, config, render, templating

        self.loads: Counter[Path] = Counter()
        self.checks = 0
        self.renders: Counter[str] = Counter()  # "check" or "send"
        self.environments = 0
        self._in_check = 0

        read_yaml = config.read_yaml

        def counting_read_yaml(path, *args, **kwargs):
            self.loads[Path(path).resolve()] += 1
            return read_yaml(path, *args, **kwargs)

        check_issue = checks.check_issue

        def counting_check_issue(*args, **kwargs):
            self.checks += 1
            self._in_check += 1
            try:
                return check_issue(*args, **kwargs)
            finally:
                self._in_check -= 1

        make_environment = templating.make_environment

        def counting_make_environment(*args, **kwargs):
            self.environments += 1
            return make_environment(*args, **kwargs)

        render_method = render.Renderer.render

        def counting_render(renderer, *args, **kwargs):
            self.renders["check" if self._in_check else "send"] += 1
            return render_method(renderer, *args, **kwargs)

        assert wrap_everywhere(monkeypatch, read_yaml, counting_read_yaml)
        assert wrap_everywhere(monkeypatch, check_issue, counting_check_issue)
        assert wrap_everywhere(monkeypatch, make_environment, counting_make_environment)
        monkeypatch.setattr(render.Renderer, "render", counting_render)

    def reset(self) -> None:
        self.loads.clear()
        self.renders.clear()
        self.checks = self.environments = 0

    def as_dict(self, paths) -> dict:
        return {
            "file loads": {p.name: self.loads[p.resolve()] for p in paths},
            "check_issue": self.checks,
            "renders": dict(self.renders),
            "jinja environments": self.environments,
        }


@pytest.fixture
def subscribed(run, settings):
    """The example subscribers (subscribers.example.csv), imported with the CLI."""
    result = run("subscribers", "import", "subscribers.example.csv")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("confirm", ["--yes", "at the prompt"])
def test_send_loads_checks_and_renders_once(run, settings, subscribed, monkeypatch, confirm):
    from newsletter import checks
    from newsletter.cli import sending

    counts = SendPathCounts(monkeypatch)
    # What the check renders on its own (the largest and the smallest selection), for the sum.
    assert checks.check_issue(settings, ISSUE).ok
    assert counts.checks == 1
    check_renders = counts.renders["check"]
    counts.reset()

    if confirm == "--yes":
        result = run("send", ISSUE, "--yes")
    else:
        monkeypatch.setattr(sending, "stdin_is_interactive", lambda: True)
        result = run("send", ISSUE, input="y\n")
        assert f"Send issue {ISSUE} to " in result.stderr
    assert result.exit_code == 0, result.output

    db = database(settings)
    try:
        report = build_report(db, ISSUE)
        sent = report.count("sent")
        segments = [s.key for s in report.segments if s.counts.get("sent")]
    finally:
        db.close()
    outbox = sorted((settings.paths.outbox / ISSUE).glob("*.eml"))
    assert sent >= 15 and len(outbox) == sent  # the send happened, to the example list
    assert len(segments) >= 10  # many topic choices, so many segments

    summary_files = sorted(settings.paths.summaries.glob("*.yaml"))
    issue_file = settings.paths.issues / f"{ISSUE}.yaml"
    seen = counts.as_dict([*summary_files, issue_file])
    print("send-path counts:", seen, f"segments={len(segments)} sent={sent}")
    assert seen["file loads"] == {p.name: 1 for p in [*summary_files, issue_file]}, seen
    assert counts.checks == 1, seen
    assert counts.renders["check"] == check_renders, seen
    assert counts.renders["send"] == len(segments), seen
    assert counts.environments == 1, seen


def test_the_dry_run_loads_and_checks_once_and_renders_no_segment(
    run, settings, subscribed, monkeypatch
):
    counts = SendPathCounts(monkeypatch)
    result = run("send", ISSUE, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing was sent or written" in result.stdout

    summary_files = sorted(settings.paths.summaries.glob("*.yaml"))
    issue_file = settings.paths.issues / f"{ISSUE}.yaml"
    seen = counts.as_dict([*summary_files, issue_file])
    assert seen["file loads"] == {p.name: 1 for p in [*summary_files, issue_file]}, seen
    assert counts.checks == 1, seen
    assert counts.renders["send"] == 0, seen
    assert counts.environments == 1, seen


def test_what_was_confirmed_is_what_is_sent(run, settings, subscribed, monkeypatch):
    """The issue file edited while the editor reads the prompt: the send carries what was
    checked and shown, not the edit (which `send` would have to check first)."""
    import click

    from newsletter.cli import sending

    path = settings.paths.issues / f"{ISSUE}.yaml"
    checked = path.read_text(encoding="utf-8")
    subject = next(line for line in checked.splitlines() if line.startswith("subject:"))

    def confirm_while_the_file_changes(*args, **kwargs):
        path.write_text(checked.replace(subject, "subject: Edited after the check"), "utf-8")
        return True

    monkeypatch.setattr(sending, "stdin_is_interactive", lambda: True)
    monkeypatch.setattr(click, "confirm", confirm_while_the_file_changes)
    result = run("send", ISSUE)

    assert result.exit_code == 0, result.output
    messages = sorted((settings.paths.outbox / ISSUE).glob("*.eml"))
    assert messages
    original = yaml.safe_load(checked)["subject"]
    assert {parse(m.read_bytes())["Subject"] for m in messages} == {original}
