"""Where a database's schema stands, and bringing it up to date (`newsletter db status|upgrade`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from . import Database, describe, is_url
from .migrations import MIGRATIONS


@dataclass(frozen=True)
class SchemaStatus:
    shown: str  # the database as messages name it (never a password)
    engine: str  # 'SQLite' or 'PostgreSQL'
    version: int  # the schema version it is at (0: empty or not there yet)
    latest: int  # the version this tool brings it to
    exists: bool = True

    @property
    def behind(self) -> int:
        return max(0, self.latest - self.version)

    @property
    def too_new(self) -> bool:
        return self.version > self.latest

    def sentence(self) -> str:
        where = f"{self.shown} ({self.engine})"
        if not self.exists:
            return (
                f"{where}: no database there yet; any command creates it at version {self.latest}"
            )
        if self.too_new:
            return (
                f"{where}: schema version {self.version}, newer than this tool knows "
                f"({self.latest}): upgrade the newsletter package"
            )
        if self.behind:
            return (
                f"{where}: schema version {self.version} of {self.latest}: {self.behind} "
                "migration(s) to apply: run `newsletter db upgrade`"
            )
        return f"{where}: schema version {self.version} of {self.latest}: up to date"


def _engine_name(location: str | Path) -> str:
    return "PostgreSQL" if is_url(location) else "SQLite"


def status(location: str | Path) -> SchemaStatus:
    """Where the database stands; changes nothing (a SQLite file is not created or upgraded)."""
    shown, engine = describe(location), _engine_name(location)
    if not is_url(location) and not Path(location).exists():
        return SchemaStatus(shown, engine, 0, len(MIGRATIONS), exists=False)
    with Database(location, migrate=False) as db:
        return SchemaStatus(shown, engine, db.schema_version(), len(MIGRATIONS))


def upgrade(location: str | Path) -> tuple[int, int]:
    """Apply every migration not yet applied; returns (version before, version after)."""
    with Database(location, migrate=False) as db:
        before = db.schema_version()
        if before > len(MIGRATIONS):
            raise StoreError(status(location).sentence())
        after = db.migrate()
    return before, after
