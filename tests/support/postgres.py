"""A throw-away PostgreSQL server for the tests and the benchmarks: Debian's `postgresql`
binaries, a data folder in a temporary directory, a free port on 127.0.0.1 and a socket folder of
its own; run as the `postgres` user when we are root (the server refuses to run as root).

`PostgresServer.start()` returns None (and says why in `.missing`) when PostgreSQL is not
installed, so that the suite can skip the PostgreSQL cases; `.ci/run` installs it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def _bindir() -> Path | None:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them out of PATH, per version)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server; `create_database()` gives each test a fresh database on it."""

    def __init__(self, fast: bool = True):
        # fast: no fsync (a test server's data is thrown away; a crash test would need it on).
        self.fast = fast
        self.missing: str | None = None
        self.root: Path | None = None
        self.port = 0
        self.bindir: Path | None = None
        self._user: str | None = None

    # Running commands as the server's owner ------------------------------------------------------

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def start(self) -> PostgresServer | None:
        bindir = _bindir()
        if bindir is None:
            self.missing = "PostgreSQL is not installed (Debian package `postgresql`)"
            return None
        self.bindir = bindir
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                self.missing = "running as root and there is no `postgres` user to run the server"
                return None
            self._user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        if self._user:
            shutil.chown(self.root, self._user)
        data, sockets = self.root / "data", self.root / "sock"
        done = self._run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if done.returncode != 0:
            self.missing = f"initdb failed: {done.stderr.strip()[-500:]}"
            return None
        self._run("mkdir", str(sockets))
        self.port = _free_port()
        options = f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1"
        if self.fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        done = self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-800:]
            self.missing = f"pg_ctl start failed: {done.stderr.strip()} {log}"
            return None
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.root is None:
            return
        if self.port:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def workspace_database(workspace: Path) -> str | Path:
    """The test workspace's database: the test's PostgreSQL URL (NEWSLETTER_DATABASE_URL, set by
    the `database_url` fixture), else the workspace's SQLite file."""
    return os.environ.get("NEWSLETTER_DATABASE_URL") or workspace / "newsletter.db"
