"""Settings: the example file loads; every mistake names the file and the field."""
# Not both_engines: settings, no database.

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import newsletter.config
from newsletter.config import Environment, config_path, load_settings
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


# --- The environment: read in one place, passed down --------------------------------------------


def test_the_environment_is_read_once_and_never_shows_a_secret():
    env = Environment.read(
        {
            "NEWSLETTER_SECRET_KEY": "k" * 40,
            "SENDGRID_API_KEY": "SG.must-never-be-shown",
            "SMTP_PASSWORD": "",  # set but empty: unset
            "NEWSLETTER_CONFIG": "elsewhere.yaml",
            "UNRELATED": "x",
        }
    )
    assert env.sendgrid_api_key == "SG.must-never-be-shown"
    assert env.smtp_password is None and env.sendgrid_api_host is None
    assert config_path(None, env) == Path("elsewhere.yaml")
    assert config_path("given.yaml", env) == Path("given.yaml")
    shown = repr(env) + str(env)
    assert "must-never-be-shown" not in shown and "k" * 40 not in shown
    assert "SENDGRID_API_KEY" in shown and "SMTP_PASSWORD" not in shown


def test_values_are_passed_down_not_read_again(settings, monkeypatch):
    """Given an Environment, the library uses it, whatever the process environment holds."""
    from newsletter.delivery.backends import make_backend
    from newsletter.sendgrid.webhooks import public_key_text
    from newsletter.tokens import signer_from_env
    from newsletter.web import create_app

    for name in ("NEWSLETTER_SECRET_KEY", "SENDGRID_API_KEY", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENDGRID_API_HOST", "http://127.0.0.1:9")
    env = Environment(
        secret_key="s" * 40,
        sendgrid_api_key="SG.passed-down",
        sendgrid_api_host="http://127.0.0.1:1",
        sendgrid_webhook_public_key="  a-key  ",
    )
    assert make_backend("sendgrid", settings, environment=env).host == "http://127.0.0.1:1"
    assert signer_from_env(allow_dev_key=False, environment=env)[1] is False
    assert public_key_text(settings, env) == "a-key"
    assert create_app(settings, environment=env).name
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY is not set"):
        create_app(settings)  # the process's own environment has no key


def test_only_the_settings_module_reads_the_process_environment():
    package = Path(newsletter.config.__file__).parent
    readers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            attribute = node.attr if isinstance(node, ast.Attribute) else None
            if attribute in ("environ", "getenv", "environb", "getenvb"):
                readers.add(path.relative_to(package).as_posix())
    # delivery/send.py: the test-only pause, which is becoming an observer the test passes in.
    assert readers - {"delivery/send.py"} == {"config.py"}
