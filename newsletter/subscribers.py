"""Subscribers and their topic preferences: CSV import and export, and the admin operations.

The rules about addresses and topics live here (addresses are checked with email-validator, topics
come from the settings); who may change a status, from what to what, is `newsletter.status_rules`;
the SQL lives in `newsletter.store.subscribers`. The CLI calls one function of this module per
command.

CSV format: header `email,name,topics,status` (`email` required, the others optional, any order);
`topics` is `;`-separated slugs, `all`, or empty (= all); `status` empty means `subscribed`. UTF-8
with or without a BOM, LF or CRLF line ends. Export writes all four columns, rows by id, `\\n` line ends.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, TextIO

from email_validator import EmailNotValidError, validate_email

from . import status_rules as rules
from .config import Settings, display_path
from .errors import ImportRefused, SubscriberError
from .signup import consent
from .store import Database, now
from .store import subscribers as store
from .store.migrations import SUBSCRIBER_STATUSES
from .store.subscribers import ALL, Subscriber, TopicChoice, decode_topics, encode_topics

CSV_COLUMNS = ("email", "name", "topics", "status")
STATUSES = SUBSCRIBER_STATUSES
SUBSCRIBED = "subscribed"
HEADER = ",".join(CSV_COLUMNS)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 100  # characters; a longer name is refused at every entry point


# Addresses, names, topics, statuses ------------------------------------------------------------


def check_address(text: str) -> tuple[str | None, str | None]:
    """(normalised address, None) when valid, else (None, why): syntax only, no DNS.

    The one rule for every address the list takes in (import, `add`, proofs): what is stored is
    what goes on the wire. An internationalised domain is stored in its ASCII (IDNA, `xn--`)
    form, the form every backend writes and SendGrid's suppression lists report; a non-ASCII
    local part is refused, because delivering to it needs SMTPUTF8 end to end, which none of the
    backends offers (SendGrid's API refuses such addresses). Same verdict as email-validator's
    `validate_email` with `allow_smtputf8=False`, faster for lists: see `_fast_address`.
    """
    text = text.strip()
    fast = _fast_address(text)
    if fast is not None:
        return fast, None
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    # The store compares whole addresses case-insensitively: the local part is lower-cased too.
    return store.normalise_email(valid.ascii_email), None


# Plain ASCII addresses: a dot-atom local part (RFC 5322 atext, as email-validator's DOT_ATOM_TEXT)
# and a domain of letters, digits, dots and hyphens.
_PLAIN_ADDRESS = re.compile(
    r"([A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*)@([A-Za-z0-9.-]+)"
)
_MAX_ADDRESS = 254  # RFC 5321, as email-validator checks it
_MAX_LOCAL = 64


def _fast_address(text: str) -> str | None:
    """The normalised address when it is plainly valid; None means "ask email-validator".

    email-validator spends most of its time checking the domain, character by character, and a
    list has few distinct domains: a domain's verdict is cached (from validating `a@domain`).
    Only addresses whose every check is then known are answered here: an ASCII dot-atom local
    part (valid as it is), a cached valid domain whose ASCII form is its lower case, and a length
    within the limits (the same in every form for ASCII). Everything else, and every error
    message, comes from `validate_email` itself.
    """
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(text) > _MAX_ADDRESS or len(match[1]) > _MAX_LOCAL:
        return None
    domain = _domain_verdict(match[2])
    if domain is None:
        return None
    return store.normalise_email(match[1]) + "@" + domain


@lru_cache(maxsize=16384)
def _domain_verdict(domain: str) -> str | None:
    """The domain's ASCII form when email-validator accepts it unchanged but for case."""
    try:
        valid = validate_email("a@" + domain, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return valid.ascii_domain if valid.ascii_domain == domain.lower() else None


def normalise_address(text: str) -> str:
    """The address normalised for storage; SubscriberError when it is not a valid address."""
    email, why = check_address(text)
    if email is None:
        raise SubscriberError(f"email {text.strip()!r} is not a valid address: {why}")
    return email


def check_name(name: str) -> str:
    """The name without surrounding spaces; SubscriberError if it has a line break or control
    character, or is longer than MAX_NAME characters (a name goes into every email's `To:`)."""
    if "\r" in name or "\n" in name:
        raise SubscriberError(f"name {_shown(name)} contains a line break")
    if _CONTROL.search(name):
        raise SubscriberError(f"name {_shown(name)} contains a control character")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise SubscriberError(
            f"name {_shown(name)} is {len(name)} characters long; at most {MAX_NAME} are allowed"
        )
    return name


def _shown(name: str, width: int = 30) -> str:
    """The name as an error message shows it: quoted, cut short when long."""
    return repr(name if len(name) <= MAX_NAME else name[:width] + "…")


def parse_topics(text: str | Iterable[str], known: Iterable[str]) -> TopicChoice:
    """`a;b` or `a,b` (or a list of slugs), `all`, or empty (= all) → a topic choice.

    SubscriberError names the unknown topics and the known ones.
    """
    if isinstance(text, str):
        return _parse_topics_text(text, tuple(known))
    return _parse_topic_list(tuple(text), tuple(known))


@lru_cache(maxsize=4096)  # a list holds few distinct topic choices; 100,000 rows parse each once
def _parse_topics_text(text: str, known: tuple[str, ...]) -> TopicChoice:
    return _parse_topic_list(tuple(re.split(r"[;,]", text)), known)


def _parse_topic_list(items: tuple[str, ...], known: tuple[str, ...]) -> TopicChoice:
    slugs = list(dict.fromkeys(t.strip().lower() for t in items if t.strip()))
    if not slugs:
        return ALL
    if ALL in slugs:
        if len(slugs) > 1:
            raise SubscriberError("topics: 'all' cannot be combined with other topics")
        return ALL
    unknown = [s for s in slugs if s not in known]
    if unknown:
        raise SubscriberError(
            f"unknown topic {', '.join(map(repr, unknown))} "
            f"(known topics: {', '.join(known)}; or 'all')"
        )
    return frozenset(slugs)


def parse_status(text: str) -> str:
    """A status from a CSV cell: empty means `subscribed`; SubscriberError names the valid ones."""
    status = text.strip().lower() or SUBSCRIBED
    if status not in STATUSES:
        raise SubscriberError(
            f"unknown status {text.strip()!r} (expected {', '.join(STATUSES[:-1])} or "
            f"{STATUSES[-1]}; empty means {SUBSCRIBED})"
        )
    return status


# Reading a CSV ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRow:
    """One record of a subscribers CSV, validated.

    `email` is normalised (None when missing or invalid); `name`, `topics` (encoded: 'all' or
    'a;b') and `status` are None when the file has no such column. `problems` holds one full
    message per problem (`file:line: ...`); a row with problems is never imported.
    """

    line: int
    email: str | None
    name: str | None = None
    topics: str | None = None
    status: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def read_csv(path: str | os.PathLike, known_topics: Iterable[str]) -> Iterator[CsvRow]:
    """Stream the rows of a subscribers CSV, each validated, without holding the file in memory.

    A problem with the file as a whole (missing, empty, not text, no valid header) raises
    ImportRefused; a problem with a row is reported on that row, so every one can be listed.
    Line numbers are those a text editor shows (a quoted field may span lines: its first line).
    """
    path = Path(path)
    shown = display_path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; the generator owns it
    except FileNotFoundError:
        raise ImportRefused([f"{shown}: file not found"]) from None
    except IsADirectoryError:
        raise ImportRefused([f"{shown}: is a folder, not a CSV file"]) from None
    except OSError as exc:
        raise ImportRefused([f"{shown}: cannot read the file: {exc.strerror}"]) from None
    with handle:
        yield from _read_rows(handle, shown, tuple(known_topics))


def _read_rows(handle: BinaryIO, shown: str, known: tuple[str, ...]) -> Iterator[CsvRow]:
    decode_errors: list[tuple[int, str]] = []  # (physical line, message) not yet given to a row
    physical = 0

    def lines() -> Iterator[str]:
        # Decoding line by line is what lets a Latin-1 byte be reported with its line number.
        nonlocal physical
        for raw in handle:
            physical += 1
            if physical == 1:
                if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise ImportRefused(
                        [
                            f"{shown}: the file is UTF-16 text; save it as UTF-8 ('CSV UTF-8' in Excel)"
                        ]
                    )
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
                decode_errors.append(
                    (
                        physical,
                        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}): "
                        "save the file as UTF-8 ('CSV UTF-8' in Excel)",
                    )
                )
                yield raw.decode("utf-8", "replace")

    def take_decode_errors(upto: int) -> list[str]:
        taken = [msg for line, msg in decode_errors if line <= upto]
        decode_errors[:] = [(line, msg) for line, msg in decode_errors if line > upto]
        return taken

    reader = csv.reader(lines(), strict=True)
    columns, header_line = _read_header(reader, shown, take_decode_errors)
    width = len(columns)
    index = {name: i for i, name in enumerate(columns)}

    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                why = "a quoted field is never closed (a '\"' without its closing '\"')"
            else:
                why = f"not valid CSV: {exc}"
            problems = [f"{shown}:{start}: {why}"]
            problems += [f"{shown}:{start}: {m}" for m in take_decode_errors(reader.line_num)]
            yield CsvRow(start, None, problems=tuple(problems))
            continue
        where = f"{shown}:{start}"
        problems = [f"{where}: {m}" for m in take_decode_errors(reader.line_num)]
        if not any(f.strip() for f in fields) and not problems:
            continue  # blank lines and spreadsheets' trailing ",,," rows
        yield _validate_row(fields, index, width, known, start, where, problems)


def _read_header(reader, shown: str, take_decode_errors) -> tuple[list[str], int]:
    expected = f"expected the header '{HEADER}'"
    while True:
        try:
            header = next(reader)
        except StopIteration:
            raise ImportRefused(
                [f"{shown}: the file is empty ({expected} and one row per subscriber)"]
            ) from None
        except csv.Error as exc:
            raise ImportRefused(
                [f"{shown}:{reader.line_num}: not a subscribers CSV ({exc}); {expected}"]
            ) from None
        line = reader.line_num
        errors = take_decode_errors(line)
        if errors:
            raise ImportRefused([f"{shown}:{line}: not a CSV text file: {errors[0]}"])
        if any(f.strip() for f in header):
            break
    names = [h.strip().lower() for h in header]
    found = ",".join(header)
    found = found if len(found) <= 80 else found[:77] + "..."
    where = f"{shown}:{line}"
    if not any(name in CSV_COLUMNS for name in names):
        if len(names) == 1 and re.search(r"[;\t]", names[0]) and "email" in names[0]:
            why = "columns must be separated by commas, not ';' or tabs (save as 'CSV UTF-8')"
        elif check_address(header[0])[0] is not None:
            why = f"the header line is missing ({expected}, found {found!r})"
        else:
            why = f"not a subscribers CSV ({expected}, found {found!r})"
        raise ImportRefused([f"{where}: {why}"])
    problems = []
    if "email" not in names:
        problems.append(f"{where}: no 'email' column in the header ({expected}, found {found!r})")
    for name in dict.fromkeys(names):
        if name in CSV_COLUMNS:
            if names.count(name) > 1:
                problems.append(f"{where}: column {name!r} appears twice in the header")
            continue
        if not name:
            problems.append(f"{where}: a column has no name ({expected})")
            continue
        close = difflib.get_close_matches(name, CSV_COLUMNS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(
            f"{where}: unknown column {name!r} (expected columns: {', '.join(CSV_COLUMNS)}){hint}"
        )
    if problems:
        raise ImportRefused(problems)
    return names, line


def _validate_row(
    fields: list[str],
    index: dict[str, int],
    width: int,
    known: tuple[str, ...],
    line: int,
    where: str,
    problems: list[str],
) -> CsvRow:
    if len(fields) != width:
        why = f"{len(fields)} fields, but the header has {width}"
        if len(fields) > width:
            why += ' (a name with a comma must be in double quotes: "Lopez, Ana")'
        problems.append(f"{where}: {why}")
        return CsvRow(line, None, problems=tuple(problems))

    raw_email = fields[index["email"]].strip()
    email = None
    if not raw_email:
        problems.append(f"{where}: email is empty")
    else:
        email, why = check_address(raw_email)
        if email is None:
            problems.append(f"{where}: email {raw_email!r} is not a valid address: {why}")

    name = topics = status = None
    if "name" in index:
        try:
            name = check_name(fields[index["name"]])
        except SubscriberError as exc:
            problems.append(f"{where}: {exc}")
    if "topics" in index:
        try:
            topics = encode_topics(parse_topics(fields[index["topics"]], known))
        except SubscriberError as exc:
            problems.append(f"{where}: {exc}")
    if "status" in index:
        try:
            status = parse_status(fields[index["status"]])
        except SubscriberError as exc:
            problems.append(f"{where}: {exc}")
    return CsvRow(line, email, name, topics, status, tuple(problems))


# Import ----------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did (or, with `dry_run`, would do)."""

    path: str
    dry_run: bool = False
    rows: int = 0  # data rows read
    added: int = 0
    updated: int = 0  # existing subscribers with a changed name, topics or status
    unchanged: int = 0
    refused: int = 0  # invalid rows, not imported (only with skip_invalid: otherwise nothing is)
    kept_status: int = 0  # rows asking for a weaker status (say, subscribed for a leaver): kept
    problems: list[str] = field(default_factory=list)  # why each refused row was refused


ProgressHook = Callable[[int, int], None]


def import_csv(
    db: Database,
    settings: Settings,
    path: str | os.PathLike,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    resubscribe: bool = False,
    batch_size: int = 5000,
    on_batch: ProgressHook | None = None,
) -> ImportResult:
    """Add or update subscribers from a CSV file, in one transaction.

    First every row is read and validated (addresses, duplicates within the file ignoring case,
    topics, statuses); any problem raises ImportRefused listing them all, and nothing is written,
    unless `skip_invalid`, which imports the valid rows and lists the others in `problems`.
    Then the valid rows are applied: new addresses are added; existing subscribers get the file's
    name and topics, and its status as `newsletter.status_rules` allows an import: never a
    weaker one (a leaver is never made `subscribed` again, a spam complaint never becomes an
    unsubscribe) unless `resubscribe`. A column the file lacks leaves that field alone; an empty
    cell means no name, all topics, `subscribed`. History records every change with source
    `import` and the file and line as the reason.

    `on_batch(done, total)` is called after each batch of `batch_size` rows is applied, inside the
    transaction: for progress, and for tests, since an exception from it rolls everything back.
    """
    shown = display_path(Path(path))
    result = ImportResult(path=shown, dry_run=dry_run)
    problems: list[tuple[int, str]] = []
    with store.ImportStage(db) as stage:
        # Pass 1: validate while streaming; only rows with a usable address are staged.
        buffer: list[tuple] = []
        for row in read_csv(path, settings.topic_slugs):
            result.rows += 1
            problems.extend((row.line, p) for p in row.problems)
            if row.email is not None:
                buffer.append((row.line, row.email, row.name, row.topics, row.status, row.ok))
                if len(buffer) >= batch_size:
                    stage.add(buffer)
                    buffer.clear()
        stage.add(buffer)
        duplicates = stage.duplicates()
        for line, email, first in duplicates:
            why = f"email {email!r} appears again (first on line {first}; case is ignored)"
            problems.append((line, f"{shown}:{line}: {why}"))
        stage.refuse(line for line, _, _ in duplicates)

        problems.sort(key=lambda p: p[0])  # stable: a row's own problems stay in column order
        result.problems = [message for _, message in problems]
        result.refused = len({line for line, _ in problems})
        if problems and not skip_invalid:
            summary = (
                f"{shown}: {result.refused} of {result.rows} rows are invalid; nothing was "
                "imported (fix them, or import with --skip-invalid to leave them out)"
            )
            raise ImportRefused(result.problems, "\n".join([*result.problems, summary]))

        # Pass 2: join with the existing subscribers a page at a time, and write in one transaction.
        total = result.rows - result.refused
        at = now()
        done = 0
        try:
            with nullcontext() if dry_run else db.transaction():
                for page in stage.pages(batch_size):
                    batch = store.ImportBatch()
                    for staged in page:
                        reason = f"imported from {shown}:{staged.line}"
                        _plan_row(staged, batch, result, resubscribe, reason)
                    if not dry_run:
                        rules.write_import(db, batch, at)
                        consent.record_import(db, batch, path, at)
                    done += len(page)
                    if on_batch is not None:
                        on_batch(done, total)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise SubscriberError(
                f"{display_path(db.path)}: the database is busy (another command is writing); "
                "nothing was imported: try again"
            ) from None
    return result


def _plan_row(
    row: store.StagedRow,
    batch: store.ImportBatch,
    result: ImportResult,
    resubscribe: bool,
    reason: str,
) -> None:
    """Decide what one valid row changes; the status as `newsletter.status_rules` says."""
    source = rules.Source.IMPORT_RESUBSCRIBE if resubscribe else rules.Source.IMPORT
    if row.current_id is None:
        status = row.status or SUBSCRIBED
        if rules.decide(source, None, status) != "change":
            raise SubscriberError(f"{reason}: an import cannot add a subscriber as {status}")
        batch.new.append((row.email, row.name or "", row.topics or ALL, status, reason))
        result.added += 1
        return
    changed = False
    if row.name is not None and row.name != row.current_name:
        batch.names.append((row.current_id, row.current_name, row.name))
        changed = True
    if row.topics is not None and row.topics != row.current_topics:
        batch.topics.append((row.current_id, row.current_topics, row.topics))
        changed = True
    if row.status is not None:
        # Whether an unsubscribe holds over a bounce never matters to an import (held=False):
        # it resubscribes no one without --resubscribe, which is the admin's override.
        verdict = rules.decide(source, row.current_status, row.status)
        if verdict == "keep":
            # An old list re-imported must never undo anyone's unsubscribe, bounce or complaint.
            result.kept_status += 1
        elif verdict == "change":
            if rules.decide(rules.Source.IMPORT, row.current_status, row.status) != "change":
                reason += " (--resubscribe)"
            batch.statuses.append((row.current_id, row.current_status, row.status, reason))
            changed = True
    if changed:
        result.updated += 1
    else:
        result.unchanged += 1


# Export ----------------------------------------------------------------------------------------


def export_csv(db: Database, out: TextIO) -> int:
    """Write every subscriber (every status, by id) as CSV to `out`; returns the number of rows.

    Same format as the import reads, so an unsubscribe survives export → import. `out` should be
    opened with `newline=""`.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for sub in store.iter_subscribers(db, status=None):
        writer.writerow((sub.email, sub.name, encode_topics(sub.topics), sub.status))
        rows += 1
    return rows


def export_csv_file(db: Database, path: str | os.PathLike) -> int:
    """Export to a file, UTF-8 without BOM, written atomically (never half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            rows = export_csv(db, out)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SubscriberError(f"{display_path(path)}: cannot write: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


# One subscriber at a time ----------------------------------------------------------------------


def get(db: Database, subscriber_id: int) -> Subscriber:
    """The subscriber with this id; SubscriberError when there is none."""
    found = store.get(db, subscriber_id)
    if found is None:
        raise SubscriberError(f"no subscriber with id {subscriber_id}")
    return found


def find(db: Database, email: str) -> Subscriber:
    """The subscriber with this address (any case); SubscriberError when there is none."""
    found = store.get_by_email(db, email)
    if found is None:
        raise SubscriberError(f"no subscriber with the address {email.strip()!r}")
    return found


def _resolve(db: Database, who: int | str | Subscriber) -> Subscriber:
    if isinstance(who, Subscriber):
        return who
    if isinstance(who, int):
        return get(db, who)
    return find(db, who)


def add(
    db: Database,
    settings: Settings,
    email: str,
    name: str = "",
    topics: str | Iterable[str] = ALL,
) -> Subscriber:
    """Add a new subscribed subscriber; SubscriberError when the address exists (whatever its status)."""
    address = normalise_address(email)
    name = check_name(name or "")
    choice = parse_topics(topics, settings.topic_slugs)
    existing = store.get_by_email(db, address)
    if existing is not None:
        raise SubscriberError(
            f"{address} is already a subscriber (status {existing.status}); "
            "use set-topics to change topics, or resubscribe"
        )
    try:
        return rules.create(db, rules.Source.ADMIN_ADD, address, name, choice)
    except sqlite3.IntegrityError:  # added by someone else in between
        raise SubscriberError(f"{address} is already a subscriber") from None


def set_topics(
    db: Database,
    settings: Settings,
    who: int | str | Subscriber,
    topics: str | Iterable[str],
    source: store.Source,
) -> bool:
    """Replace a subscriber's topics (by id or address); False when unchanged. Never touches status."""
    choice = parse_topics(topics, settings.topic_slugs)
    return store.set_topics(db, _resolve(db, who).id, choice, source)


def unsubscribe(db: Database, who: int | str | Subscriber, reason: str | None = None) -> bool:
    """The admin's unsubscribe; False (nothing changed) when not subscribed, keeping a bounce or
    complaint as it is."""
    sub = _resolve(db, who)
    return (
        rules.change(db, sub, rules.Source.ADMIN_UNSUBSCRIBE, "unsubscribed", reason) == "changed"
    )


def resubscribe(
    db: Database, who: int | str | Subscriber, reason: str | None = None, *, force: bool = False
) -> bool:
    """The admin's resubscribe; False when already subscribed.

    Without `force` only someone who unsubscribed comes back; clearing a bounce, a spam
    complaint or an invalid address needs `force` and a `reason` (kept in the history).
    StatusRefused (a SubscriberError) says which.
    """
    sub = _resolve(db, who)
    source = rules.Source.ADMIN_FORCE if force else rules.Source.ADMIN_RESUBSCRIBE
    return rules.change(db, sub, source, SUBSCRIBED, reason) == "changed"


def iter_subscribed(db: Database, page_size: int = 1000) -> Iterator[Subscriber]:
    """Every subscribed subscriber, by id, streamed in pages (never the whole list in memory)."""
    return store.iter_subscribers(db, SUBSCRIBED, page_size)


def _list_filters(settings: Settings, topic: str | None, status: str | None) -> dict:
    if status is not None and status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
    if topic is None:
        return {"status": status}
    topic = topic.strip().lower()
    # A topic the settings name matches those who chose it or "all"; a topic the settings no
    # longer name matches only those who still hold it, so an admin can find and fix them.
    return {"status": status, "topic": topic, "topic_includes_all": topic in settings.topic_slugs}


def list_subscribers(
    db: Database, settings: Settings, topic: str | None = None, status: str | None = None
) -> Iterator[Subscriber]:
    """Subscribers (by id, streamed) with that status (None: any) who would get that topic."""
    return store.iter_subscribers(db, **_list_filters(settings, topic, status))


def count_subscribers(
    db: Database, settings: Settings, topic: str | None = None, status: str | None = None
) -> int:
    """How many subscribers `list_subscribers` with the same filters gives."""
    return store.count(db, **_list_filters(settings, topic, status))


def history(db: Database, who: int | str | Subscriber) -> tuple[Subscriber, list[dict]]:
    """The subscriber and every recorded change (at, field, old_value, new_value, source, reason)."""
    sub = _resolve(db, who)
    return sub, store.history(db, sub.id)


# Statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicCount:
    slug: str
    label: str
    chosen: int  # subscribed subscribers who chose this topic
    via_all: int  # subscribed subscribers who chose "all"

    @property
    def total(self) -> int:
        return self.chosen + self.via_all


@dataclass
class SubscriberStats:
    """Counts per status, and per topic among the subscribed."""

    by_status: dict[str, int]
    all_topics: int  # subscribed with "all"
    by_topic: list[TopicCount]  # in the settings' order
    unknown_topics: dict[str, int]  # topic no longer in the settings → subscribers holding it
    no_known_topic: int  # subscribed whose every topic is unknown: they match nothing

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def subscribed(self) -> int:
        return self.by_status.get(SUBSCRIBED, 0)


def stats(db: Database, settings: Settings) -> SubscriberStats:
    """Subscribers per status and per topic; topics the settings no longer name are reported apart."""
    known = settings.topic_slugs
    counts = store.count_by_status(db)
    by_status = {status: counts.get(status, 0) for status in STATUSES}
    chosen = dict.fromkeys(known, 0)
    all_topics = no_known = 0
    for encoded, n in store.count_by_topics(db, SUBSCRIBED).items():
        topics = decode_topics(encoded)
        if topics == ALL:
            all_topics += n
            continue
        matching = topics.intersection(known)
        if not matching:
            no_known += n
        for slug in matching:
            chosen[slug] += n
    unknown: dict[str, int] = {}
    for encoded, n in store.count_by_topics(db, None).items():
        topics = decode_topics(encoded)
        if topics != ALL:
            for slug in sorted(topics.difference(known)):
                unknown[slug] = unknown.get(slug, 0) + n
    labels = settings.topic_labels
    by_topic = [TopicCount(slug, labels[slug], chosen[slug], all_topics) for slug in known]
    return SubscriberStats(by_status, all_topics, by_topic, dict(sorted(unknown.items())), no_known)


@dataclass(frozen=True)
class IssueReach:
    """How many subscribed subscribers an issue would reach (at least one summary matches)."""

    issue_id: str
    summaries: int
    subscribed: int
    reached: int
    segments: int  # distinct selections of summaries: the number of renders a send needs


def issue_reach(db: Database, settings: Settings, issue: str) -> IssueReach:
    """Count the subscribed subscribers whose topics match at least one summary of the issue."""
    from .content import load_issue, load_summaries, resolve_summaries
    from .render import select_summaries

    issue_obj = load_issue(settings, issue)
    summaries = resolve_summaries(issue_obj, load_summaries(settings))
    known = settings.topic_slugs
    subscribed = reached = 0
    segments: set[tuple[str, ...]] = set()
    for encoded, n in store.count_by_topics(db, SUBSCRIBED).items():
        subscribed += n
        topics = decode_topics(encoded)
        # Topics no longer in the settings are ignored for matching.
        matching = ALL if topics == ALL else topics.intersection(known)
        selection = select_summaries(summaries, matching)
        if selection:
            reached += n
            segments.add(tuple(s.id for s in selection))
    return IssueReach(issue_obj.id, len(summaries), subscribed, reached, len(segments))
