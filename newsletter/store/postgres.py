"""The PostgreSQL engine: a psycopg 3 connection that speaks like `sqlite3`'s, so that the store's
one set of SQL runs on both engines.

The store's SQL is written once, with `?` placeholders, in the dialect both engines share. On
PostgreSQL, `Connection.execute` rewrites each statement once (cached): `?` outside quotes
becomes `%s`, a literal `%` becomes `%%`, and a few SQLite spellings become PostgreSQL's
(`INSERT OR IGNORE` → `ON CONFLICT DO NOTHING`, the `temp.`/`main.` schema prefixes). Rows answer
by position and by column name, like `sqlite3.Row`. psycopg's errors become this package's
`PostgresError` classes, so no module outside the store imports psycopg.

psycopg is imported only when a `postgresql://` database is opened: SQLite users never load it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class PostgresError(Exception):
    """An error PostgreSQL (or the connection to it) reported; `sqlstate` is its code."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class PostgresIntegrityError(PostgresError):
    """A constraint refused a write (unique, foreign key, check, an append-only trigger)."""


class PostgresOperationalError(PostgresError):
    """The server could not be reached, refused us, or gave up waiting (not our SQL's fault)."""


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def mask(url: str) -> str:
    """The URL with its password replaced by `***`: what messages and logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


# SQL rewriting -----------------------------------------------------------------------------------

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|\?|%")
_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_SCHEMA_PREFIX = re.compile(r"\b(?:temp|main)\.(?=[A-Za-z_])", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The store's SQL (sqlite3 style) as psycopg wants it."""

    def token(match: re.Match) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if text.startswith(("'", "--")):
            return text.replace("%", "%%")
        return text

    out = _TOKENS.sub(token, sql)
    out = _SCHEMA_PREFIX.sub("", out)
    if _OR_IGNORE.search(out):
        out = _OR_IGNORE.sub("INSERT INTO", out).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return out


# Rows and cursors ----------------------------------------------------------------------------------


class Row(tuple):
    """A row that answers by position (`row[0]`) and by column name (`row["email"]`), and
    converts with `dict(row)`, as `sqlite3.Row` does."""

    _index: dict[str, int]

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor):
    description = cursor.description
    if description is None:
        return tuple
    index = {column.name: i for i, column in enumerate(description)}

    def make(values):
        row = Row(values)
        row._index = index
        return row

    return make


class Cursor:
    """The part of `sqlite3.Cursor` the store uses."""

    def __init__(self, cursor):
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self):  # PostgreSQL has none: the store writes `RETURNING id` instead
        return None

    def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Row]:
        if self._cursor.description is None:
            return iter(())
        return iter(self._cursor)


def _translate_error(exc) -> PostgresError:
    import psycopg

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.IntegrityError):
        return PostgresIntegrityError(message, sqlstate)
    if isinstance(exc, psycopg.OperationalError):
        return PostgresOperationalError(message, sqlstate)
    return PostgresError(message, sqlstate)


def connect(url: str, timeout: float) -> Connection:
    import psycopg

    try:
        raw = psycopg.connect(
            url,
            autocommit=True,  # like the store's sqlite3 connection: BEGIN/COMMIT are explicit
            row_factory=_row_factory,
            connect_timeout=max(1, int(timeout)),
            application_name="newsletter",
        )
    except psycopg.Error as exc:
        raise _translate_error(exc) from None
    raw.adapters.register_dumper(bool, _bool_dumper())
    return Connection(raw, timeout)


def _bool_dumper():
    """Python's True and False as 1 and 0, as sqlite3 stores them (the schema has no booleans)."""
    import psycopg
    from psycopg.adapt import Dumper

    class BoolAsInteger(Dumper):
        oid = psycopg.postgres.types["int4"].oid

        def dump(self, obj) -> bytes:
            return b"1" if obj else b"0"

    return BoolAsInteger


class Connection:
    """The part of `sqlite3.Connection` the store uses, on a psycopg 3 connection."""

    def __init__(self, raw, timeout: float):
        self.raw = raw
        # A write waits at most this long for another's lock (SQLite's busy timeout).
        self.raw.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Cursor:
        import psycopg

        cursor = self.raw.cursor()
        try:
            cursor.execute(translate(sql), tuple(params) or None)
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc
        return Cursor(cursor)

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> Cursor:
        import psycopg

        cursor = self.raw.cursor()
        try:
            cursor.executemany(translate(sql), (tuple(p) for p in seq))
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc
        return Cursor(cursor)

    def script(self, sql: str) -> None:
        """Several statements without parameters (a migration), as they are written."""
        import psycopg

        try:
            self.raw.execute(sql)
        except psycopg.Error as exc:
            raise _translate_error(exc) from exc

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


# Bulk writes -------------------------------------------------------------------------------------


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Any]) -> int:
    """Write `rows` (tuples in `columns` order) into `table` with one COPY … FROM STDIN; how many.

    COPY's text format, with every value escaped by psycopg (tabs, line breaks, backslashes, a
    lone `\\.`, the text `\\N` all arrive as they were; None is NULL): a bulk write costs one
    statement instead of one round of the protocol per row. Joins the caller's transaction;
    `table` and `columns` are the store's own names, never input.
    """
    import psycopg

    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    try:
        with conn.raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    except psycopg.Error as exc:
        raise _translate_error(exc) from exc
    return count


@contextmanager
def staged(
    conn: Connection, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Any]
) -> Iterator[int]:
    """A TEMP table `table` of `columns` ((name, type), …) holding `rows`, copied in with
    `copy_rows`, for one `INSERT … SELECT` or `UPDATE … FROM` inside the caller's transaction;
    dropped afterwards (and with the transaction if it rolls back). Yields how many rows."""
    definition = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
    conn.execute(f"CREATE TEMP TABLE {table} ({definition}) ON COMMIT DROP")
    count = copy_rows(conn, table, [name for name, _ in columns], rows)
    yield count
    conn.execute(f"DROP TABLE {table}")
