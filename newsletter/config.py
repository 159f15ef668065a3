"""The newsletter's settings (`newsletter.yaml`), validated once at start.

Paths in the file are relative to the file's own folder, so the tool works from any directory.
Secrets are never read from here: they come from the environment (see `secret_key`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

DEFAULT_CONFIG = "newsletter.yaml"
SLUG_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_RE)]
OneLine = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\r\n]*$")]


class Strict(BaseModel):
    """A model that refuses unknown keys, so that a misspelt setting is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Topic(Strict):
    slug: Slug
    label: OneLine
    description: OneLine


class Sender(Strict):
    name: OneLine
    email: EmailStr


class SmtpSettings(Strict):
    host: str = "localhost"
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None  # the password comes from SMTP_PASSWORD
    timeout: float = 30.0


class SendGridSettings(Strict):
    asm_group_id: int | None = None
    sync_suppressions: bool = True  # pull SendGrid's suppressions before every SendGrid send
    webhook_public_key: str | None = None  # or SENDGRID_WEBHOOK_PUBLIC_KEY


class DeliverySettings(Strict):
    backend: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    batch_size: int = Field(1000, ge=1, le=1000)
    timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_base: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    smtp: SmtpSettings = SmtpSettings()
    sendgrid: SendGridSettings = SendGridSettings()


class Paths(Strict):
    summaries: Path = Path("summaries")
    issues: Path = Path("issues")
    templates: Path = Path("templates")
    outbox: Path = Path("outbox")
    database: Path = Path("newsletter.db")


class Settings(Strict):
    name: OneLine
    sender: Sender
    reply_to: EmailStr | None = None
    postal_address: OneLine  # CAN-SPAM requires a valid physical postal address in every email
    site_url: AnyHttpUrl
    preferences_url: AnyHttpUrl  # public base URL of the preference centre (`newsletter serve`)
    topics: list[Topic] = Field(min_length=1)
    max_summaries: int = Field(8, ge=1, le=50)
    max_html_kb: int = Field(90, ge=10)
    paths: Paths = Paths()
    delivery: DeliverySettings = DeliverySettings()
    # Where the settings file lives; relative paths are resolved against it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("topics")
    @classmethod
    def _unique_slugs(cls, topics: list[Topic]) -> list[Topic]:
        seen = set()
        for topic in topics:
            if topic.slug in seen:
                raise ValueError(f"topic slug {topic.slug!r} is listed twice")
            if topic.slug == "all":
                raise ValueError("'all' is reserved (it means every topic) and cannot be a slug")
            seen.add(topic.slug)
        return topics

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        resolved = {
            key: (value if value.is_absolute() else self.base_dir / value)
            for key, value in self.paths.model_dump().items()
        }
        object.__setattr__(self, "paths", Paths(**resolved))
        return self

    # Convenience views -------------------------------------------------------------------------

    @property
    def topic_slugs(self) -> list[str]:
        return [t.slug for t in self.topics]

    @property
    def topic_labels(self) -> dict[str, str]:
        return {t.slug: t.label for t in self.topics}

    @property
    def site(self) -> str:
        return str(self.site_url).rstrip("/")

    @property
    def preferences_base(self) -> str:
        return str(self.preferences_url).rstrip("/")


def format_validation_error(
    source: str, err: ValidationError, lines: dict | None = None
) -> list[str]:
    """One line per pydantic error: `source: field 'a.b': message`."""
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field"
        msg = re.sub(r"^Value error, ", "", msg)
        where = source
        if lines and item["loc"] and item["loc"][0] in lines:
            where = f"{source}:{lines[item['loc'][0]]}"
        problems.append(f"{where}: field '{loc}': {msg}")
    return problems


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text: pydantic parses them and reports a bad one by field.

    (PyYAML's own date parsing raises a bare ValueError for 2026-13-01, with no file or field.)
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_yaml(path: Path, error_cls: type[Exception] = ConfigError) -> Any:
    """Parse a YAML file; a syntax error names the file and line."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(f"{shown}: file not found") from None
    except IsADirectoryError:
        raise error_cls(f"{shown}: is a folder, not a file") from None
    except OSError as exc:
        raise error_cls(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error_cls(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark else shown
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error_cls(f"{where}: YAML syntax error: {problem}") from None


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("NEWSLETTER_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read and validate the settings file; every problem in one ConfigError."""
    path = config_path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping of settings at the top level")
    try:
        return Settings(**data, base_dir=path.resolve().parent)
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(display_path(path), err))) from None


DEV_SECRET = "development-only-secret-do-not-use-in-production"


def secret_key(required: bool) -> str | None:
    """The signing secret from NEWSLETTER_SECRET_KEY; None when unset and not required."""
    key = os.environ.get("NEWSLETTER_SECRET_KEY")
    if key:
        return key
    if required:
        raise ConfigError(
            "NEWSLETTER_SECRET_KEY is not set: links in real emails must be signed with a secret"
        )
    return None
