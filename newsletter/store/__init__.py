"""The store: subscribers, their history, the send ledger. All SQL lives in this package.

`Database` opens (and on first use creates and migrates) a SQLite file, or connects to a
PostgreSQL database (a `postgresql://` URL; `store.postgres` holds that engine's connection).
The query modules beside this one (`subscribers`, `ledger`, `events`...) take a `Database` and
hold the SQL for their job, written once for both engines (see `store.postgres`). Nothing outside
this package knows which engine it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..clock import now as now  # the time every row is stamped with (`store.now`)
from ..config import display_path
from ..errors import NewsletterError, StoreError
from .migrations import MIGRATIONS, for_engine
from .postgres import (
    PostgresError,
    PostgresIntegrityError,
    PostgresOperationalError,
    is_url,
    mask,
)

# Seconds a command waits for another one's write to finish before giving up (SQLite's busy
# timeout); the CLI names it in the error it prints when the wait runs out.
BUSY_TIMEOUT = 30.0

# What either engine raises, for `except` clauses outside the store (which never name an engine).
DatabaseError = (sqlite3.Error, PostgresError)
IntegrityError = (sqlite3.IntegrityError, PostgresIntegrityError)
OperationalError = (sqlite3.OperationalError, PostgresOperationalError)


def describe(location: str | Path) -> str:
    """The database as messages name it: a SQLite file's path, or the URL without its password."""
    return mask(location) if is_url(location) else display_path(Path(location))


def explain(path: str | Path, exc: Exception, timeout: float = BUSY_TIMEOUT) -> str | None:
    """One sentence naming the database for a problem of the database or its use; None for a bug.

    Locks, read-only files, full disks and damaged or foreign files, and a PostgreSQL server that
    cannot be reached or refuses us, are the user's environment (exit 1 with this sentence);
    constraint violations and misuse of the API are our bugs.
    """
    if isinstance(exc, PostgresError):
        return _explain_postgres(str(path), exc, timeout)
    if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
        return None
    shown = describe(path)
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


def _explain_postgres(url: str, exc: PostgresError, timeout: float) -> str | None:
    shown = mask(url) if is_url(url) else "the PostgreSQL database"
    # The server's message may quote the connection string: never show a password.
    text = str(exc)
    if is_url(url) and mask(url) != url:
        from urllib.parse import urlsplit

        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    if exc.sqlstate in ("55P03", "40P01", "40001"):  # lock timeout, deadlock, serialization
        return (
            f"{shown}: the database is locked: another command has been writing to it for "
            f"more than {timeout:g} seconds; try again when it has finished"
        )
    if isinstance(exc, PostgresOperationalError) or (exc.sqlstate or "").startswith(
        ("08", "28", "3D", "42501", "53", "57")
    ):
        return f"{shown}: cannot use the database: {text}"
    return None


class Database:
    """One connection to the newsletter's database: a SQLite file (WAL mode, foreign keys on), or
    a PostgreSQL database when `location` is a `postgresql://` URL.

    Use `with db.transaction():` for every write; nothing outside it is committed half-way.
    `engine` is 'sqlite' or 'postgresql' (read only inside the store); `location` the path or
    URL as given; `display` what messages show (the URL without its password).
    """

    def __init__(self, path: str | Path, timeout: float = BUSY_TIMEOUT, migrate: bool = True):
        """`migrate=False` (for `newsletter db`): neither upgrade a SQLite file on opening it nor
        refuse a PostgreSQL database whose schema is behind."""
        self.timeout = timeout
        self._depth = 0
        if is_url(path):
            self._open_postgres(str(path), migrate)
            return
        self.engine = "sqlite"
        self.location = self.path = Path(path)
        self.display = display_path(self.path)
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
            if migrate:
                self.migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(explain(self.path, exc, timeout)) from None

    def _open_postgres(self, url: str, check: bool) -> None:
        from . import postgres

        self.engine = "postgresql"
        self.location = url
        self.path = None
        self.display = mask(url)
        try:
            self.conn = postgres.connect(url, self.timeout)
        except PostgresError as exc:
            raise StoreError(explain(url, exc, self.timeout) or str(exc)) from None
        # Unlike a SQLite file, a shared server is upgraded on purpose (`newsletter db upgrade`),
        # never by whichever command happens to open it first.
        if not check:
            return
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise NewsletterError(self._too_new(version))
        if version < len(MIGRATIONS):
            raise StoreError(
                f"{self.display}: the database is at schema version {version}, this tool needs "
                f"{len(MIGRATIONS)}: run `newsletter db upgrade` first"
            )

    # Schema ------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        if self.engine == "postgresql":
            row = self.conn.execute("SELECT to_regclass('schema_version')").fetchone()
            if row[0] is None:
                return 0
        else:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    def _too_new(self, version: int) -> str:
        return (
            f"{self.display}: database schema version {version} is newer than this tool knows "
            f"({len(MIGRATIONS)}); upgrade the newsletter package"
        )

    def migrate(self) -> int:
        """Apply every migration not yet applied, each in its own transaction."""
        if self.engine == "postgresql":
            return self._migrate_postgres()
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise NewsletterError(self._too_new(version))
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

    def _migrate_postgres(self) -> int:
        scripts = for_engine("postgresql")
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
        while True:
            # One migration a transaction; the transaction's lock keeps two upgrades apart.
            with self.transaction():
                version = self.schema_version()
                if version > len(scripts):
                    raise NewsletterError(self._too_new(version))
                if version == len(scripts):
                    return version
                self.conn.script(scripts[version])
                self.conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))

    # Transactions ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, exclusive: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any exception); nested uses join the outer one.

        On PostgreSQL, BEGIN and a transaction-wide advisory lock: writers take turns, as on
        SQLite, so every read-then-write in the store stays one step there too. With
        `exclusive=False` (PostgreSQL only; SQLite always has one writer) no such lock: the
        statements must lock the rows they need themselves (`ledger.claim_for_worker`).
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        if self.engine == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.execute("BEGIN")
            try:
                if exclusive:
                    self.conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
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

    # Dialect ------------------------------------------------------------------------------------

    def bytewise(self, column: str) -> str:
        """`column` compared and ordered by code point (as Python sorts), on either engine.

        SQLite's NOCASE columns hold lower-case addresses, so their order already is; PostgreSQL's
        `nocase` collation sorts by language rules, so there it is `COLLATE "C"` (indexed).
        """
        return column if self.engine == "sqlite" else f'{column} COLLATE "C"'

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


# The advisory lock every PostgreSQL write transaction holds (any fixed number; "nl" in ASCII).
WRITER_LOCK = 0x6E6C


def location(settings, environment=None) -> str | Path:
    """Where the workspace's database is: NEWSLETTER_DATABASE_URL, else `database:` in the
    settings, else `paths.database` (a SQLite file)."""
    return settings.database_location(environment)


def exists(settings, environment=None) -> bool:
    """Whether the database is there already (a SQLite file that exists; a PostgreSQL server is
    always taken to be), so that a read-only command need not create one."""
    where = location(settings, environment)
    return is_url(where) or Path(where).exists()


def open_database(settings, environment=None) -> Database:
    """The workspace's database (see `location`)."""
    return Database(location(settings, environment), timeout=BUSY_TIMEOUT)
