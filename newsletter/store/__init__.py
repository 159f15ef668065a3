"""The SQLite store: subscribers, their history, the send ledger. All SQL lives in this package.

`Database` opens (and on first use creates and migrates) the file; the query modules beside this
one (`subscribers`, `ledger`, `events`) take a `Database` and hold the SQL for their job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..clock import now as now  # the time every row is stamped with (`store.now`)
from ..config import display_path
from ..errors import NewsletterError, StoreError
from .migrations import MIGRATIONS

# Seconds a command waits for another one's write to finish before giving up (SQLite's busy
# timeout); the CLI names it in the error it prints when the wait runs out.
BUSY_TIMEOUT = 30.0


def explain(path: Path, exc: sqlite3.Error, timeout: float = BUSY_TIMEOUT) -> str | None:
    """One sentence naming the database file for a problem of the file or its use; None for a bug.

    Locks, read-only files, full disks and damaged or foreign files are the user's environment
    (exit 1 with this sentence); constraint violations and misuse of the API are our bugs.
    """
    if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
        return None
    shown = display_path(path)
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (
            f"{shown}: the database is locked: another command has been writing to it for "
            f"more than {timeout:g} seconds; try again when it has finished"
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"{shown}: the database is read-only ({text}): make the file and its folder "
            "writable for the user running this command"
        )
    if "unable to open" in text:
        return (
            f"{shown}: cannot open the database ({text}): check that its folder exists "
            "and that the file and folder are readable and writable"
        )
    if "not a database" in text or "malformed" in text:
        return f"{shown}: not a newsletter database, or a damaged one ({text})"
    return f"{shown}: database error: {text}"


class Database:
    """One connection to the newsletter's SQLite file, in WAL mode with foreign keys on.

    Use `with db.transaction():` for every write; nothing outside it is committed half-way.
    """

    def __init__(self, path: str | Path, timeout: float = BUSY_TIMEOUT):
        self.path = Path(path)
        self.timeout = timeout
        if str(path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{display_path(self.path)}: cannot create the database's folder "
                    f"{display_path(self.path.parent)}: {(exc.strerror or str(exc)).lower()}"
                ) from None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so transactions are explicit.
            self.conn = sqlite3.connect(
                str(path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(explain(self.path, exc, timeout)) from None
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on a power cut, and
            # the last commit may be a batch marked `submitting` just before its request went out;
            # losing it would resend that batch. Measured cost: about 0.14 s a 100,000-send.
            self.conn.execute("PRAGMA synchronous = FULL")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(explain(self.path, exc, timeout)) from None
        self._depth = 0

    # Schema ------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    def migrate(self) -> int:
        """Apply every migration not yet applied, each in its own transaction."""
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise NewsletterError(
                f"{self.path}: database schema version {version} is newer than this tool knows "
                f"({len(MIGRATIONS)}); upgrade the newsletter package"
            )
        # A migration may rebuild a table that others reference (SQLite's way to change a
        # constraint): foreign keys are off while it runs and checked before it commits. (When
        # one fails, `__init__` fails too: this connection is never used with them off.)
        self.conn.execute("PRAGMA foreign_keys = OFF")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript() would commit on its own; run statement by statement inside BEGIN.
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    self.conn.execute(statement)
                if self.conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise NewsletterError(f"{self.path}: migration {number} broke a foreign key")
                self.conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        self.conn.execute("PRAGMA foreign_keys = ON")
        return len(MIGRATIONS)

    # Transactions ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any exception); nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements; triggers keep their inner `;` (sqlite3.complete_statement)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def open_database(settings) -> Database:
    """The workspace's database, from the settings' `paths.database`."""
    return Database(settings.paths.database, timeout=BUSY_TIMEOUT)
