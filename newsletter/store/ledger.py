"""SQL of the send ledger: one row per (issue, subscriber), the only truth about who got what."""

from __future__ import annotations

from . import Database


def has_rows(db: Database, issue_id: str) -> bool:
    """Whether any send of this issue has started (such an issue can no longer be recomposed)."""
    row = db.conn.execute("SELECT 1 FROM ledger WHERE issue_id = ? LIMIT 1", (issue_id,)).fetchone()
    return row is not None
