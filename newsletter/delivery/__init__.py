"""Sending an issue: the plan (segments), per-recipient parts, backends, and the resumable,
ledger-backed send loop. The CLI calls `prepare_send` (load and check once; its `.plan` is what
`--dry-run` shows and the prompt confirms), then `run_send`; and `send_proof`, `build_report`.
`send_issue` is both steps for a caller with nothing to confirm.

One job a module, lowest first: `batch` (what one `deliver` call carries and reports),
`message` (per-recipient values, RFC 5322 messages), `backends/` (the protocol and the outbox,
SMTP and SendGrid backends), `plan` (segments and the send's ledger rows), `retry` (backoff),
`progress` (the observer), `deliver` (one batch through the backend), `prepare` (load and
check once, the dry run), `run` (one run's object, counts and renders), `send` (the list send),
`sandbox`, `proof`, `lock` (one send per issue on SQLite; a lease per worker on PostgreSQL),
`inflight` (batches in flight), `unknowns` (unknown outcomes settled or put back), `workers`
(`send --workers N`: the worker processes), `report` (who got what).
"""

from __future__ import annotations

from ..errors import OutcomeUnknown, SendRefused, TemporaryFailure
from .backends import BACKENDS, Backend, BaseBackend, make_backend
from .batch import Batch, BatchResult, Recipient
from .lock import SendLock
from .plan import PlanPreview, SegmentPlan, preview_plan, segment_key, write_plan
from .prepare import PreparedSend, parse_send_at, plan_send, prepare_send
from .progress import Observers, SendObserver
from .proof import ProofResult, check_proof_address, send_proof
from .report import LISTABLE, SendReport, build_report, list_entries
from .retry import RetryPolicy
from .run import RunStats, SendResult
from .send import run_send, send_issue

__all__ = [
    "BACKENDS",
    "LISTABLE",
    "Backend",
    "BaseBackend",
    "Batch",
    "BatchResult",
    "Observers",
    "OutcomeUnknown",
    "PlanPreview",
    "PreparedSend",
    "ProofResult",
    "Recipient",
    "RetryPolicy",
    "RunStats",
    "SegmentPlan",
    "SendLock",
    "SendObserver",
    "SendRefused",
    "SendReport",
    "SendResult",
    "TemporaryFailure",
    "build_report",
    "check_proof_address",
    "list_entries",
    "make_backend",
    "parse_send_at",
    "plan_send",
    "prepare_send",
    "preview_plan",
    "run_send",
    "segment_key",
    "send_issue",
    "send_proof",
    "write_plan",
]
