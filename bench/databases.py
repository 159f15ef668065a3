"""Where a benchmark run keeps its data: a SQLite file in the run's temporary folder (the default),
or a fresh database on a PostgreSQL server named by `--database postgresql://…`.

For PostgreSQL the URL names a server and a database to connect to first (say `postgres`); each
run creates its own database there (`bench_<random>`), upgrades it, and drops it afterwards, so
the server may be a shared one, but the user in the URL needs CREATEDB. `--database
NEWSLETTER_DATABASE_URL` (the word) takes the URL from that variable, which keeps a password off
the command line (and out of the child processes' arguments); messages show the URL with its
password as `***` (`store.describe`). `python bench/with_postgres.py -- COMMAND` starts a
throw-away server for one command instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from newsletter.store import Database, describe
from newsletter.store.postgres import is_url

ENVIRONMENT_WORD = "NEWSLETTER_DATABASE_URL"


def resolve(database: str | None) -> str | None:
    """`--database` as a URL: the word NEWSLETTER_DATABASE_URL stands for that variable's value."""
    if database == ENVIRONMENT_WORD:
        url = os.environ.get(ENVIRONMENT_WORD)
        if not url:
            raise SystemExit(f"--database {ENVIRONMENT_WORD}: the variable is not set")
        return url
    return database


def shown(database: str | None) -> str:
    """What a report says about `--database` (never its password)."""
    return "SQLite file (default)" if database is None else describe(resolve(database))


@contextmanager
def fresh_database(database: str | None, folder: Path) -> Iterator[str | Path]:
    """A new, upgraded, empty database for one run; yields where it is (a path or a URL)."""
    database = resolve(database)
    if database is None:
        path = folder / "newsletter.db"
        with Database(path):
            pass
        yield path
        return
    if not is_url(database):
        raise SystemExit(f"--database: not a postgresql:// URL: {describe(database)}")
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(database)._replace(path=f"/{name}"))
    try:
        with Database(url, migrate=False) as db:
            db.migrate()
        yield url
    finally:
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def size_mb(location: str | Path) -> float:
    """The database's size on disk: the SQLite file with its WAL, or PostgreSQL's own count."""
    if is_url(location):
        with Database(location, migrate=False) as db:
            row = db.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return row[0] / 2**20
    path = Path(location)
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
