"""The outbox backend: one RFC 5322 `.eml` file per recipient under `outbox/<issue>/`.

Files are written to a temporary name and renamed into place, so a crash leaves a message either
complete or absent. Any mail client opens them; tests and editors read them to see what was sent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...config import Settings
from ...errors import SendRefused
from ..batch import Batch, BatchResult
from ..message import batch_messages
from .base import BaseBackend

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(text: str) -> str:
    """A file name from an address or id: nothing that could leave the folder."""
    name = _UNSAFE.sub("_", text).lstrip(".")
    return name[:200] or "_"


class OutboxBackend(BaseBackend):
    name = "outbox"
    requires_secret = False  # local files: the development key will do (with a warning)

    def __init__(self, settings: Settings, folder: Path | None = None):
        self.settings = settings
        self.folder = Path(folder or settings.paths.outbox)
        self.max_batch = settings.delivery.batch_size

    def path_for(self, batch: Batch, recipient) -> Path:
        base = self.folder / safe_name(batch.issue_id)
        if batch.proof or recipient.subscriber_id is None:
            return base / "proofs" / f"{safe_name(recipient.email)}.eml"
        return base / f"{recipient.subscriber_id}.eml"

    def deliver(self, batch: Batch, result: BatchResult) -> None:
        result.in_flight = []
        for key, recipient, _msg, data in batch_messages(self.settings, batch, result):
            result.in_flight = [key]
            path = self.path_for(batch, recipient)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError as exc:
                # Nothing half-written counts as sent; a full disk is not worth retrying.
                raise SendRefused(f"cannot write {path}: {exc.strerror or exc}") from None
            result.sent[key] = path.name
            result.in_flight = []
