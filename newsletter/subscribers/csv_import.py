"""Import of a subscribers CSV: validate every row first, then apply the valid ones in one
transaction, each status as `subscribers.rules` allows an import."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings, display_path
from ..errors import ImportRefused, SubscriberError
from ..signup import consent
from ..store import Database, OperationalError, now
from ..store import subscribers as subscriber_rows
from ..store.subscribers import ALL
from . import rules
from .csv_format import read_csv
from .fields import SUBSCRIBED


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
    name and topics, and its status as `newsletter.subscribers.rules` allows an import: never a
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
    with subscriber_rows.ImportStage(db) as stage:
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
                    batch = subscriber_rows.ImportBatch()
                    for staged in page:
                        reason = f"imported from {shown}:{staged.line}"
                        _plan_row(staged, batch, result, resubscribe, reason)
                    if not dry_run:
                        rules.write_import(db, batch, at)
                        consent.record_import(db, batch, path, at)
                    done += len(page)
                    if on_batch is not None:
                        on_batch(done, total)
        except OperationalError as exc:
            if (
                "locked" not in str(exc)
                and "busy" not in str(exc)
                and "lock timeout" not in str(exc)
            ):
                raise
            raise SubscriberError(
                f"{db.display}: the database is busy (another command is writing); "
                "nothing was imported: try again"
            ) from None
    return result


def _plan_row(
    row: subscriber_rows.StagedRow,
    batch: subscriber_rows.ImportBatch,
    result: ImportResult,
    resubscribe: bool,
    reason: str,
) -> None:
    """Decide what one valid row changes; the status as `newsletter.subscribers.rules` says."""
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
