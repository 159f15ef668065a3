"""The subscribers CSV file format: reading and validating its rows, and writing it.

Header `email,name,topics,status` (`email` required, the others optional, any order); `topics`
is `;`-separated slugs, `all`, or empty (= all); `status` empty means `subscribed`. UTF-8 with or
without a BOM, LF or CRLF line ends. Written with all four columns, `\\n` line ends, UTF-8
without a BOM, so that what is written reads back as the same subscribers. A cell a spreadsheet
would run as a formula is written with a `'` in front; reading takes it off.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from ..config import display_path
from ..errors import ImportRefused, SubscriberError
from ..output import open_output
from ..store import Database
from ..store import subscribers as subscriber_rows
from ..store.subscribers import Subscriber, encode_topics
from .fields import check_address, check_name, parse_status, parse_topics

CSV_COLUMNS = ("email", "name", "topics", "status")
HEADER = ",".join(CSV_COLUMNS)


# Reading ---------------------------------------------------------------------------------------


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

    raw_email = unescape_cell(fields[index["email"]].strip())
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
            name = check_name(unescape_cell(fields[index["name"]].strip()))
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


# Spreadsheet formulas --------------------------------------------------------------------------

# A spreadsheet runs a cell that starts with one of = + - @ tab CR as a formula (OWASP, "CSV
# Injection"); `'*` also catches text that already starts with quotes, so escaping stays reversible.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def escape_cell(text: str) -> str:
    """The text with a `'` before it when a spreadsheet would run it as a formula (`=SUM(A1)`).

    Text that already starts with quotes and then such a character gets one more quote, so that
    `unescape_cell` takes off exactly what was added: export → import → export gives the same bytes.
    """
    return "'" + text if _FORMULA.match(text) else text


def unescape_cell(text: str) -> str:
    """Undo `escape_cell`: one leading `'` off text that is quotes and then a formula character."""
    return text[1:] if text.startswith("'") and _FORMULA.match(text) else text


def csv_row(sub: Subscriber) -> tuple[str, ...]:
    """One subscriber as the export writes it, every cell safe to open in a spreadsheet."""
    return tuple(map(escape_cell, (sub.email, sub.name, encode_topics(sub.topics), sub.status)))


# Writing ---------------------------------------------------------------------------------------


def write_csv(out: TextIO, subscribers: Iterable[Subscriber]) -> int:
    """Write the header and one row per subscriber to `out`; returns the number of rows.

    The format the import reads, so that an unsubscribe survives export → import. `out` should
    be opened with `newline=""`.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for sub in subscribers:
        writer.writerow(csv_row(sub))
        rows += 1
    return rows


def export_csv(db: Database, out: TextIO) -> int:
    """Write every subscriber (every status, by id) as CSV to `out`; returns the number of rows."""
    return write_csv(out, subscriber_rows.iter_subscribers(db, status=None))


def export_csv_file(db: Database, path: str | os.PathLike) -> int:
    """Export to a file, UTF-8 without BOM (a regular file is written atomically: see
    `output.open_output`, which also keeps devices, FIFOs and symlinks what they are)."""
    with open_output(path, newline="") as out:
        return export_csv(db, out)
