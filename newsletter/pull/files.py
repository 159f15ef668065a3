"""What a pull writes: summary files in the editors' format, and the pull state, both atomically.

A summary is written to a temporary file in the same folder, flushed to disk and then linked
(new) or renamed (update) into place, so `summaries/` never holds an empty or partial file and a
new summary never replaces a file that appeared meanwhile. The state (`pull-state.json`: the
feed's ETag / Last-Modified, and each pulled entry with its content hash) is written the same way,
after the summary it records: an interrupted pull leaves at worst a summary not yet recorded,
which the next pull recognises by its `source:` block.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import _Loader, display_path
from ..content import Summary
from ..errors import PullError

FIELDS = (
    "title",
    "headline",
    "date",
    "journal",
    "topics",
    "url",
    "findings",
    "why_it_matters",
    "limitations",
    "teaser",
    "source_url",
)
FOLDED = {"headline", "findings", "why_it_matters", "limitations"}
WIDTH = 96


def summary_fields(summary: Summary) -> dict:
    """The editor-facing fields, in file order, leaving out optional fields that are empty."""
    data = {}
    for name in FIELDS:
        value = getattr(summary, name)
        if value is None:
            continue
        if name in ("url", "source_url"):
            value = str(value)
        elif name == "topics":
            value = list(value)
        data[name] = value
    return data


def content_hash(summary: Summary) -> str:
    """A hash of what the summary says (not of how its file is laid out): re-wrapping lines or
    adding a comment is not an edit; changing a word or a topic is."""
    data = summary_fields(summary)
    data["date"] = data["date"].isoformat()
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class _SummaryDumper(yaml.SafeDumper):
    """Lists indented under their key, as editors write them (`topics:\\n  - genetics`)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


class _Folded(str):
    """Long text written as a folded block (`>-`), wrapped at WIDTH, the way editors type it."""


_SummaryDumper.add_representer(
    _Folded, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style=">")
)


def dump_summary(summary: Summary) -> str:
    """The YAML text of a pulled summary: today's format, then its `source:` block."""
    data: dict = {
        name: _Folded(value) if name in FOLDED else value
        for name, value in summary_fields(summary).items()
    }
    if summary.source is not None:
        fetched = summary.source.fetched_at.astimezone(dt.UTC).replace(microsecond=0)
        data["source"] = {
            "entry_id": summary.source.entry_id,
            "page_url": str(summary.source.page_url),
            "fetched_at": fetched.isoformat().replace("+00:00", "Z"),
            "content_hash": summary.source.content_hash,
        }
    text = yaml.dump(data, Dumper=_SummaryDumper, sort_keys=False, allow_unicode=True, width=WIDTH)
    # Read it back as the loader will: what is written must be exactly what was pulled.
    again = Summary(**yaml.load(text, Loader=_Loader), id=summary.id)  # noqa: S506 - SafeLoader
    if again != summary:  # pragma: no cover - a bug in the dumper, never the user's input
        raise RuntimeError(f"summary {summary.id} does not survive a YAML round trip")
    return text


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str, replace: bool = True) -> None:
    """Write `text` to `path` through a synced temporary file in the same folder.

    With `replace=False` an existing file is never replaced (FileExistsError): the temporary
    file is hard-linked into place, which fails if the name is taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_summary(folder: Path, summary: Summary, replace: bool) -> Path:
    path = folder / f"{summary.id}.yaml"
    write_atomically(path, dump_summary(summary), replace=replace)
    return path


# The pull state ---------------------------------------------------------------------------------


class PulledEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str  # the summary id (file name)
    page_url: str
    content_hash: str  # of the summary as pulled (or as found identical in summaries/)
    fingerprint: str  # of the feed entry when pulled or last found unchanged
    pulled_at: str


class FeedValidators(BaseModel):
    model_config = ConfigDict(extra="forbid")

    etag: str | None = None
    last_modified: str | None = None


class PullState(BaseModel):
    """Everything a pull remembers between runs."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    first_pull: dt.date | None = None  # the default `source.since`
    feeds: dict[str, FeedValidators] = {}
    entries: dict[str, PulledEntry] = {}  # by entry id

    @classmethod
    def load(cls, path: Path) -> PullState:
        if not path.exists():
            return cls()
        shown = display_path(path)
        hint = "fix or delete it (pulled summaries are recognised again by their source: block)"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, found {type(data).__name__}")
            return cls(**data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PullError(f"{shown}: cannot read the pull state ({exc}); {hint}") from None
        except (TypeError, ValidationError) as exc:
            raise PullError(f"{shown}: not a pull state file ({exc}); {hint}") from None

    def summaries(self) -> dict[str, str]:
        """Summary id → the entry id it was pulled from."""
        return {rec.summary: entry_id for entry_id, rec in self.entries.items()}

    def save(self, path: Path) -> None:
        """Write the state (atomically), unless the file already says exactly this."""
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if path.read_text(encoding="utf-8") == text:
                return
        write_atomically(path, text)


@contextlib.contextmanager
def pull_lock(folder: Path) -> Iterator[None]:
    """One pull at a time in a workspace: an exclusive lock on the summaries folder."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError(
                f"another `newsletter summaries pull` is writing to {display_path(folder)}; "
                "try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)
