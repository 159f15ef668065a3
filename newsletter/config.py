"""The newsletter's settings (`newsletter.yaml`), validated once at start.

Paths in the file are relative to the file's own folder, so the tool works from any directory.
Secrets are never read from the file: they come from the environment, which is read here and
nowhere else (`Environment`), and are passed down from there.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    IPvAnyNetwork,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

DEFAULT_CONFIG = "newsletter.yaml"
SLUG_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_RE)]

# Text in settings, summaries and issues is plain text: control characters (form feed, escape,
# C1 codes...) mean nothing to a reader and break MJML's XML, so they are refused where they are
# written, naming the file and field. Paragraphs may hold line breaks and tabs.
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_PARAGRAPHS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "tab",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "delete",
    "\x85": "next line",
}


def _plain_text(pattern: re.Pattern) -> AfterValidator:
    def check(value: str) -> str:
        found = pattern.search(value)
        if found is None:
            return value
        char = found.group()
        if char == "\n":
            raise ValueError("must be a single line (it holds a line break)")
        name = _CONTROL_NAMES.get(char)
        code = f"U+{ord(char):04X}" + (f" {name}" if name else "")
        raise ValueError(
            f"holds a control character ({code}) at character {found.start() + 1}: "
            "only plain text is allowed"
        )

    return AfterValidator(check)


ONE_LINE_TEXT = _plain_text(_CONTROL_IN_LINE)
PARAGRAPHS_TEXT = _plain_text(_CONTROL_IN_PARAGRAPHS)
OneLine = Annotated[str, StringConstraints(min_length=1), ONE_LINE_TEXT]


def _base_url(url: AnyHttpUrl) -> AnyHttpUrl:
    """Links are made by adding a path (`/unsubscribe/<token>`) to a base URL: after a query or a
    fragment the token would land in it, not in the path, and every link would be broken."""
    if url.query is not None or url.fragment is not None:
        raise ValueError(
            "a base URL must not have a query ('?…') or a fragment ('#…'): links are made by "
            "adding a path to it"
        )
    if url.username is not None or url.password is not None:
        raise ValueError("a base URL must not hold a user name or password")
    return url


BaseUrl = Annotated[AnyHttpUrl, AfterValidator(_base_url)]


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
    # PEM file of the CA certificates to trust instead of the system's (a relay with its own CA);
    # relative to the settings file. The server's certificate and host name are always checked.
    ca_file: Path | None = None
    # Parallel connections (each one message at a time), for relays that allow several; the
    # send's in-flight slots with SMTP, never more than `delivery.concurrency`.
    connections: int = Field(1, ge=1, le=32)


class SendGridSettings(Strict):
    asm_group_id: int | None = None
    sync_suppressions: bool = True  # pull SendGrid's suppressions before every SendGrid send
    webhook_public_key: str | None = None  # or SENDGRID_WEBHOOK_PUBLIC_KEY
    webhook_max_age: int = Field(600, ge=10, le=86400)  # seconds: older signed batches refused
    # Gzip each mail-send body (Content-Encoding: gzip): about 9x fewer bytes to upload. SendGrid
    # enables it for high-volume accounts on request; leave it off unless yours has it.
    compress: bool = False
    # Sent on every request, so that the account's defaults never decide (README: what each
    # costs). Click tracking rewrites the HTML part's links through SendGrid's domain and feeds
    # `report --clicks`; open tracking adds a pixel, which no report here reads.
    click_tracking: bool = False
    open_tracking: bool = False


_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[dhms])+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_UNKNOWN_GRACE = dt.timedelta(days=7)


def _unknown_grace(value: Any) -> dt.timedelta:
    """Seconds (3600) or text such as `90s`, `30m`, `1h`, `1h30m`, `2d`; from 0 to 7 days."""
    text = value.replace(" ", "").lower() if isinstance(value, str) else None
    if isinstance(value, dt.timedelta):  # settings validated again (model_dump, model_copy)
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif text and re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        seconds = float(text)
    elif text and _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise ValueError(
            f"{value!r} is not a duration: give seconds (3600) or a duration such as 90m, 1h "
            "or 1h30m"
        )
    if not 0 <= seconds <= MAX_UNKNOWN_GRACE.total_seconds():
        raise ValueError(f"{value!r} is not between 0 seconds and 7 days")
    return dt.timedelta(seconds=seconds)


class DeliverySettings(Strict):
    backend: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    batch_size: int = Field(1000, ge=1, le=1000)
    timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_base: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    # Requests in flight at once while the next batches are prepared (1: one at a time).
    concurrency: int = Field(4, ge=1, le=32)
    smtp: SmtpSettings = SmtpSettings()
    sendgrid: SendGridSettings = SendGridSettings()
    # How long after an `unknown` row's submission `send --retry-unknown` waits for the
    # provider's webhook to say it was accepted (then the row is sent, not resent).
    unknown_grace: Annotated[dt.timedelta, BeforeValidator(_unknown_grace)] = dt.timedelta(hours=1)


class TrackingSettings(Strict):
    """How SendGrid's click events are counted (`newsletter.sendgrid.clicks`)."""

    # Store who clicked what. Off: only counts per summary and link, and distinct readers
    # counted under a per-issue key that is discarded after `clicker_key_days`.
    per_subscriber: bool = False
    clicker_key_days: int = Field(30, ge=1, le=366)
    # A click this soon after delivery is a mail scanner's, not a reader's.
    automated_after_delivery: float = Field(10.0, ge=0, le=3600)  # seconds
    # One recipient following this many different links within `burst_seconds` is a scanner.
    burst_links: int = Field(3, ge=2, le=100)
    burst_seconds: float = Field(1.0, gt=0, le=60)
    # User agents (substrings, any case) counted as automated, beside the built-in list.
    scanner_user_agents: list[Annotated[str, StringConstraints(min_length=3, max_length=200)]] = []


class PageLabels(Strict):
    """How a summary page names its parts: section headings and the labels of its details."""

    findings: OneLine = "What the study found"
    why_it_matters: OneLine = "Why it matters"
    limitations: OneLine = "Limitations"
    journal: OneLine = "Journal"
    paper: OneLine = "Original paper"


class SourceSettings(Strict):
    """Where `newsletter summaries pull` finds new summaries: the site's feed and pages."""

    feed_url: AnyHttpUrl | None = None
    # The site's categories (tags) → our topic slugs; matched ignoring case.
    topics: dict[str, Slug] = {}
    since: dt.date | None = None  # default: the date of the first pull
    labels: PageLabels = PageLabels()
    timeout: float = Field(20.0, gt=0, le=300)  # seconds, for each feed or page
    max_bytes: int = Field(10 * 2**20, ge=1024)  # a larger feed or page is refused
    max_redirects: int = Field(5, ge=0, le=20)
    max_feed_entries: int = Field(1000, ge=1)  # entries read from one feed (bounded work)


class Paths(Strict):
    summaries: Path = Path("summaries")
    issues: Path = Path("issues")
    templates: Path = Path("templates")
    outbox: Path = Path("outbox")
    database: Path = Path("newsletter.db")
    site: Path = Path("site")  # the built public archive (`newsletter archive build`)
    pull_state: Path = Path("pull-state.json")  # what `summaries pull` has pulled (commit it)


DEFAULT_CONSENT_TEXT = (
    "Yes, please email me this newsletter about the topics I ticked. I can unsubscribe at any "
    "time with the link in every email."
)


def _origin(text: str) -> str:
    """An origin as browsers send it: `scheme://host[:port]`, lower case, nothing after."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin like https://www.example.org")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            f"{text!r} is not an origin: give only the scheme and host (https://www.example.org)"
        )
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class SignupSettings(Strict):
    # Whether `newsletter serve` offers the signup page (`<preferences_url>/subscribe`); the
    # archive links to it only then.
    enabled: bool = False
    # The rest is read by `newsletter.signup` (double opt-in, limits, the consent record).
    consent_text: OneLine = DEFAULT_CONSENT_TEXT  # the sentence the form shows; kept by its hash
    consent_version: OneLine = "1"  # change it whenever the sentence changes
    confirm_hours: int = Field(48, ge=1, le=24 * 14)  # how long a confirmation link works
    min_fill_seconds: float = Field(3.0, ge=0, le=600)  # a form sent sooner is a robot's
    per_ip_per_hour: int = Field(5, ge=1, le=10000)  # signups one client address may make
    # Proxies whose X-Forwarded-For is believed (the client is the last address before them).
    trusted_proxies: list[IPvAnyNetwork] = []
    # Other sites whose pages may hold the form (`newsletter signup-form`): `https://host[:port]`.
    allowed_origins: list[Annotated[str, AfterValidator(_origin)]] = []
    record_ip: Literal["full", "truncated", "none"] = "truncated"  # in the consent record
    welcome_email: bool = False  # a welcome email after the confirmation
    welcome_latest_issue: bool = True  # …listing the latest sent issue's summaries for them


class Settings(Strict):
    name: OneLine
    sender: Sender
    reply_to: EmailStr | None = None
    postal_address: OneLine  # CAN-SPAM requires a valid physical postal address in every email
    site_url: BaseUrl
    preferences_url: BaseUrl  # public base URL of the preference centre (`newsletter serve`)
    # Public base URL of the archive (`newsletter archive build`); issue pages are
    # `<archive_url>/<issue-id>/`, and every email's "View in your browser" link points there.
    archive_url: BaseUrl | None = None
    privacy_url: AnyHttpUrl | None = None  # the privacy notice; the signup form links to it
    signup: SignupSettings = SignupSettings()
    topics: list[Topic] = Field(min_length=1)
    max_summaries: int = Field(8, ge=1, le=50)
    max_html_kb: int = Field(90, ge=10)
    paths: Paths = Paths()
    # The store: a SQLite file (a path, relative to this file) or a PostgreSQL database
    # (`postgresql://user@host/name`, without its password: NEWSLETTER_DATABASE_URL carries a
    # URL with one and overrides this). Unset: `paths.database`.
    database: str | None = Field(None, min_length=1, max_length=2000)
    delivery: DeliverySettings = DeliverySettings()
    tracking: TrackingSettings = TrackingSettings()
    source: SourceSettings = SourceSettings()
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
    def _source_topics_known(self) -> Settings:
        unknown = sorted(set(self.source.topics.values()) - set(self.topic_slugs))
        if unknown:
            raise ValueError(
                f"source.topics maps to unknown topic {', '.join(map(repr, unknown))} "
                f"(known topics: {', '.join(self.topic_slugs)})"
            )
        return self

    @model_validator(mode="after")
    def _signup_needs_privacy_notice(self) -> Settings:
        if self.signup.enabled and self.privacy_url is None:
            raise ValueError(
                "signup.enabled needs privacy_url: the signup form links to the privacy notice"
            )
        return self

    @field_validator("database")
    @classmethod
    def _database_location(cls, value: str | None) -> str | None:
        if value is None or not _looks_like_url(value):
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"{parts.scheme}:// is not a database this tool can use: give a SQLite file's "
                "path or a postgresql:// URL"
            )
        if parts.password is not None:
            raise ValueError(
                "the URL holds a password, which does not belong in the settings file: set "
                "NEWSLETTER_DATABASE_URL in the environment instead"
            )
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        resolved = {
            key: (value if value.is_absolute() else self.base_dir / value)
            for key, value in self.paths.model_dump().items()
        }
        object.__setattr__(self, "paths", Paths(**resolved))
        smtp = self.delivery.smtp
        if smtp.ca_file is not None and not smtp.ca_file.is_absolute():
            smtp = smtp.model_copy(update={"ca_file": self.base_dir / smtp.ca_file})
            object.__setattr__(self, "delivery", self.delivery.model_copy(update={"smtp": smtp}))
        return self

    # Convenience views -------------------------------------------------------------------------

    def database_location(self, environment: Environment | None = None) -> str | Path:
        """The store: NEWSLETTER_DATABASE_URL, else `database` (a URL as given, a path resolved
        against the settings file), else `paths.database`. A URL may carry a password: show it
        only through `store.describe`."""
        environment = environment or Environment.read()
        if environment.database_url:
            return environment.database_url
        if self.database is None:
            return self.paths.database
        if _looks_like_url(self.database):
            return self.database
        path = Path(self.database)
        return path if path.is_absolute() else self.base_dir / path

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

    @property
    def archive_base(self) -> str | None:
        return str(self.archive_url).rstrip("/") if self.archive_url is not None else None


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


def _looks_like_url(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


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


# --- The environment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """The process environment's part in the newsletter: the secrets and two pointers, read in this
    one place (`read`) and passed down to whoever needs them. Its repr names the variables that
    are set, never a value, so printing or logging one shows no secret."""

    secret_key: str | None = field(default=None, metadata={"var": "NEWSLETTER_SECRET_KEY"})
    sendgrid_api_key: str | None = field(default=None, metadata={"var": "SENDGRID_API_KEY"})
    # Points the SendGrid client at another server (the tests' fake SendGrid).
    sendgrid_api_host: str | None = field(default=None, metadata={"var": "SENDGRID_API_HOST"})
    sendgrid_webhook_public_key: str | None = field(
        default=None, metadata={"var": "SENDGRID_WEBHOOK_PUBLIC_KEY"}
    )
    smtp_password: str | None = field(default=None, metadata={"var": "SMTP_PASSWORD"})
    config: str | None = field(default=None, metadata={"var": "NEWSLETTER_CONFIG"})
    # The store as a URL (`postgresql://user:password@host/name`): it may carry a password.
    database_url: str | None = field(default=None, metadata={"var": "NEWSLETTER_DATABASE_URL"})

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The values of the process environment (or of `environ`); an empty value is unset."""
        source = os.environ if environ is None else environ
        return cls(**{f.name: source.get(f.metadata["var"]) or None for f in fields(cls)})

    def __repr__(self) -> str:
        names = [f.metadata["var"] for f in fields(self) if getattr(self, f.name) is not None]
        return f"Environment(set: {', '.join(names) or 'nothing'})"

    def signing_key(self, required: bool) -> str | None:
        """NEWSLETTER_SECRET_KEY, which signs every subscriber's links; None when unset and not
        `required`. `required` also refuses the development key and keys shorter than
        MIN_SECRET_LENGTH (ConfigError)."""
        key = self.secret_key
        if not required:
            return key
        if not key:
            problem = "is not set: links in real emails must be signed with a secret"
        elif key == DEV_SECRET:
            problem = "is the public development key, with which anyone can forge links"
        elif len(key) < MIN_SECRET_LENGTH:
            problem = f"is too short: a secret key has at least {MIN_SECRET_LENGTH} characters"
        else:
            return key
        raise ConfigError(f"NEWSLETTER_SECRET_KEY {problem}; {MAKE_A_SECRET}")


def config_path(
    explicit: str | os.PathLike | None = None, environment: Environment | None = None
) -> Path:
    """The settings file: `explicit`, else NEWSLETTER_CONFIG, else ./newsletter.yaml."""
    if explicit:
        return Path(explicit)
    environment = environment or Environment.read()
    return Path(environment.config or DEFAULT_CONFIG)


def load_settings(
    path: str | os.PathLike | None = None, environment: Environment | None = None
) -> Settings:
    """Read and validate the settings file; every problem in one ConfigError."""
    path = config_path(path, environment)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping of settings at the top level")
    try:
        return Settings(**data, base_dir=path.resolve().parent)
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(display_path(path), err))) from None


DEV_SECRET = "development-only-secret-do-not-use-in-production"
# Anyone who knows or guesses the key can forge every subscriber's links: the public development
# key and short keys are refused wherever links reach real people (`serve`, SMTP, SendGrid).
MIN_SECRET_LENGTH = 32
MAKE_A_SECRET = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
