"""Summaries and issues: read, validate, and write the YAML files editors work with.

A summary is `summaries/<id>.yaml`; an issue is `issues/<id>.yaml`. Loading validates every file and
collects every problem before raising, so one bad file never hides the errors of the others.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from .config import (
    ONE_LINE_TEXT,
    PARAGRAPHS_TEXT,
    SLUG_RE,
    Settings,
    display_path,
    format_validation_error,
    read_yaml,
)
from .errors import ContentError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), PARAGRAPHS_TEXT]
OneLine = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), ONE_LINE_TEXT]
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TEASER_LENGTH = 100


class PullSource(BaseModel):
    """Where a pulled summary came from (`newsletter summaries pull` writes it; editors leave it).

    `content_hash` is the hash of the summary's fields as pulled: a file whose fields no longer
    match it has been edited, and a pull never overwrites it without `--force`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: OneLine
    page_url: AnyHttpUrl
    fetched_at: dt.datetime
    content_hash: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]


class Summary(BaseModel):
    """One plain-language research summary. All text is plain text, escaped wherever it lands."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: OneLine
    headline: Text
    date: dt.date
    journal: OneLine
    topics: list[Annotated[str, StringConstraints(pattern=SLUG_RE)]] = Field(min_length=1)
    url: AnyHttpUrl
    findings: Text
    why_it_matters: Text
    limitations: Text
    teaser: OneLine | None = None
    source_url: AnyHttpUrl | None = None
    source: PullSource | None = None  # only in pulled summaries

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value):
        return _parse_date(value)

    @property
    def card_teaser(self) -> str:
        """The teaser, or the headline cut at a word near TEASER_LENGTH characters."""
        return self.teaser or shorten(self.headline, TEASER_LENGTH)


class Issue(BaseModel):
    """One month's issue: which summaries, in which order, under which subject."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=ID_RE.pattern)]
    date: dt.date
    subject: OneLine
    preheader: OneLine
    intro: Annotated[str, PARAGRAPHS_TEXT] | None = None
    summaries: list[str] = Field(min_length=1)
    # false: left out of the public archive, and its email has no "View in your browser" link.
    archive: bool = True
    # The file it was read from, for error messages; not part of the file.
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    @source.setter
    def source(self, path: Path) -> None:
        self._source = path

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value):
        return _parse_date(value)

    @field_validator("summaries")
    @classmethod
    def _no_repeats(cls, ids: list[str]) -> list[str]:
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"summary listed more than once: {', '.join(repeated)}")
        return ids


def _parse_date(value):
    """Only ISO dates (YYYY-MM-DD) are accepted: '11/1/2026' means different days to different people."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a valid ISO date (YYYY-MM-DD)") from None


def shorten(text: str, width: int) -> str:
    """Cut `text` at a word boundary at or before `width` characters, adding an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    # The ellipsis takes the last place; a word ending exactly there is kept whole.
    cut = text[:width].rsplit(" ", 1)[0].rstrip(",;:.-–— ")
    return cut + "…"


def _key_lines(path: Path, text: str) -> dict[str, int]:
    """Line number (1-based) of each top-level key, so errors can point at the line."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}


def _load_model(
    path: Path, model: type[BaseModel], extra: dict, known_topics: list[str] | None = None
) -> tuple[BaseModel | None, list[str]]:
    """Parse and validate one YAML file into `model`; every problem, each naming file and line."""
    shown = display_path(path)
    try:
        data = read_yaml(path, ContentError)
    except ContentError as err:
        return None, err.problems
    if not isinstance(data, dict):
        return None, [f"{shown}: expected a mapping of fields, found {type(data).__name__}"]
    lines = _key_lines(path, path.read_text(encoding="utf-8"))

    def at(key: str) -> str:
        return f"{shown}:{lines[key]}" if key in lines else shown

    problems = []
    if "id" in data and model is Summary:
        problems.append(
            f"{at('id')}: field 'id': a summary's id is its file name; remove this field"
        )
        data.pop("id")
    if known_topics is not None and isinstance(data.get("topics"), list):
        unknown = [str(t) for t in data["topics"] if t not in known_topics]
        if unknown:
            problems.append(
                f"{at('topics')}: field 'topics': unknown topic {', '.join(map(repr, unknown))} "
                f"(known topics: {', '.join(known_topics)})"
            )
    try:
        loaded = model(**{**data, **extra})
    except ValidationError as err:
        return None, problems + format_validation_error(shown, err, lines)
    return (None if problems else loaded), problems


def load_summary(path: Path, settings: Settings) -> tuple[Summary | None, list[str]]:
    """Load one summary; returns it (None when invalid) and the list of problems found."""
    return _load_model(path, Summary, {"id": path.stem}, known_topics=settings.topic_slugs)


def read_summaries(settings: Settings) -> tuple[dict[str, Summary], list[str]]:
    """Every valid summary by id, and one line per problem found in the others (never raises
    for a bad file: callers that must not go on use `load_summaries`)."""
    folder = settings.paths.summaries
    if not folder.is_dir():
        return {}, [f"{display_path(folder)}: summaries folder not found"]
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        return {}, [f"{display_path(folder)}: no summaries (*.yaml files) found"]
    summaries, problems = {}, []
    for path in paths:
        if not ID_RE.match(path.stem):
            problems.append(
                f"{display_path(path)}: file name must be letters, digits, '.', '_' or '-'"
            )
            continue
        summary, errors = load_summary(path, settings)
        problems.extend(errors)
        if summary is not None:
            summaries[summary.id] = summary
    return summaries, problems


def load_summaries(settings: Settings) -> dict[str, Summary]:
    """Every summary in the summaries folder, by id; ContentError lists every problem found."""
    summaries, problems = read_summaries(settings)
    if problems:
        raise ContentError(problems)
    return summaries


def issue_path(settings: Settings, issue: str) -> Path:
    """ISSUE on the command line is an id (`2026-12`) or the path of an issue file."""
    candidate = Path(issue)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        return candidate
    return settings.paths.issues / f"{issue}.yaml"


def load_issue(settings: Settings, issue: str | Path) -> Issue:
    """Load and validate one issue file (not yet checking that its summaries exist)."""
    path = issue_path(settings, str(issue))
    if not path.exists():
        raise ContentError(
            f"{display_path(path)}: issue not found (compose it with `newsletter compose`)"
        )
    loaded, problems = _load_model(path, Issue, {})
    if problems:
        raise ContentError(problems)
    loaded.source = path
    return loaded


def issue_files(settings: Settings) -> list[Path]:
    folder = settings.paths.issues
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def summaries_in_issues(settings: Settings, exclude: str | None = None) -> set[str]:
    """Ids of every summary named by an issue file (other than `exclude`)."""
    used: set[str] = set()
    for path in issue_files(settings):
        if path.stem == exclude:
            continue
        issue = load_issue(settings, path)
        used.update(issue.summaries)
    return used


def resolve_summaries(issue: Issue, summaries: dict[str, Summary]) -> list[Summary]:
    """The issue's summaries, in issue order; ContentError names every unknown id."""
    problems = unknown_summaries(issue, summaries)
    if problems:
        raise ContentError(problems)
    return [summaries[sid] for sid in issue.summaries]


def unknown_summaries(issue: Issue, known: Iterable[str]) -> list[str]:
    """One problem line per summary id the issue names that is not in `known`."""
    known = set(known)
    where = display_path(issue.source) if issue.source else f"issue {issue.id}"
    return [
        f"{where}: field 'summaries': no summary named {sid!r}"
        for sid in issue.summaries
        if sid not in known
    ]


def dump_issue(issue: Issue) -> str:
    """The YAML text of an issue file, in a stable, editor-friendly order."""
    data = {
        "id": issue.id,
        "date": issue.date,
        "subject": issue.subject,
        "preheader": issue.preheader,
        "intro": issue.intro or "",
        "summaries": list(issue.summaries),
    }
    if not issue.archive:
        data["archive"] = False
    header = (
        f"# Issue {issue.id}. Edit the subject, preheader, intro and the order of summaries;\n"
        "# the first summary a reader gets is shown in full, the rest as cards.\n"
    )
    return header + yaml.dump(
        data, Dumper=_IssueDumper, sort_keys=False, allow_unicode=True, width=100
    )


class _IssueDumper(yaml.SafeDumper):
    """Writes multi-line text (the intro) as a literal block, the way an editor would type it."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_IssueDumper.add_representer(str, _represent_str)


def write_issue(settings: Settings, issue: Issue, path: Path | None = None) -> Path:
    """Write the issue file atomically (a temp file renamed into place: never half-written)."""
    path = path or settings.paths.issues / f"{issue.id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(dump_issue(issue), encoding="utf-8")
    tmp.replace(path)
    return path


def journals_phrase(journals: Iterable[str]) -> str:
    """'A', 'A and B', 'A, B and C': distinct journals in first-seen order."""
    names = list(dict.fromkeys(journals))
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
