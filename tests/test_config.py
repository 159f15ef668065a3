"""Settings: the example file loads; every mistake names the file and the field."""

from __future__ import annotations

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError


def test_example_settings_load(settings, workspace):
    assert settings.name == "MS Research Monthly"
    assert len(settings.topics) == 9
    assert settings.max_summaries == 8
    assert settings.delivery.backend == "outbox"
    # Relative paths resolve against the settings file's folder, not the current directory.
    assert settings.paths.summaries == workspace / "summaries"
    assert settings.paths.database == workspace / "newsletter.db"


def _edit(workspace, old: str, new: str):
    path = workspace / "newsletter.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "postal_address: MS Research Summaries, 120 Example Street, Suite 4, Springfield, IL 62701, USA\n",
            "",
            "field 'postal_address': required field is missing",
        ),
        ("site_url: https://", "site_url: ftp://", "field 'site_url'"),
        (
            "  email: newsletter@ms-research.example.org",
            "  email: not-an-address",
            "field 'sender.email'",
        ),
        (
            "max_summaries: 8",
            "max_summaries: 8\nmax_sumaries: 3",
            "field 'max_sumaries': unknown field",
        ),
        ("  - slug: genetics", "  - slug: Genetics!", "field 'topics.4.slug'"),
        ("  - slug: genetics", "  - slug: gut-microbiome", "listed twice"),
        ("  backend: outbox", "  backend: carrier-pigeon", "field 'delivery.backend'"),
        (
            "  allowed_origins: []",
            "  allowed_origins: [https://www.example.org/news]",
            "field 'signup.allowed_origins.0': 'https://www.example.org/news' is not an origin",
        ),
        (
            "  allowed_origins: []",
            "  allowed_origins: [www.example.org]",
            "field 'signup.allowed_origins.0'",
        ),
        ("  trusted_proxies: []", "  trusted_proxies: [proxy.local]", "'signup.trusted_proxies.0'"),
        ("  record_ip: truncated", "  record_ip: partly", "field 'signup.record_ip'"),
        ("  confirm_hours: 48", "  confirm_hours: 0", "field 'signup.confirm_hours'"),
        (
            "privacy_url: https://ms-research.example.org/privacy/\n",
            "",
            "signup.enabled needs privacy_url: the signup form links to the privacy notice",
        ),
    ],
)
def test_bad_settings_name_file_and_field(workspace, old, new, expected):
    path = _edit(workspace, old, new)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "newsletter.yaml" in str(err.value)
    assert expected in str(err.value)


def test_yaml_syntax_error_names_line(workspace):
    path = workspace / "newsletter.yaml"
    path.write_text("name: x\ntopics: [a, b\nsender: y\n")
    with pytest.raises(ConfigError, match=r"newsletter\.yaml:\d+: YAML syntax error"):
        load_settings(path)


def test_missing_settings_file_through_cli(run, workspace):
    (workspace / "newsletter.yaml").unlink()
    result = run("check", "2026-12")
    assert result.exit_code == 1
    assert result.stderr == "error: newsletter.yaml: file not found\n"


def test_config_option_and_env(run, workspace, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere.yaml"
    (workspace / "newsletter.yaml").rename(moved)
    # Paths are relative to the settings file, so point them back at the workspace.
    moved.write_text(
        moved.read_text()
        .replace("summaries: summaries", "summaries: ws/summaries")
        .replace("issues: issues", "issues: ws/issues")
        .replace("templates: templates", "templates: ws/templates")
    )
    assert run("--config", str(moved), "check", "2026-12").exit_code == 0
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(moved))
    assert run("check", "2026-12").exit_code == 0
