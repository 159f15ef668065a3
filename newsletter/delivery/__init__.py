"""Sending an issue: the plan (segments), per-recipient parts, backends, and the resumable,
ledger-backed send loop. The CLI calls `plan_send`, `send_issue`, `send_proof`, `build_report`.
"""

from __future__ import annotations

from ..errors import OutcomeUnknown, SendRefused, TemporaryFailure
from .backends import BACKENDS, Backend, BaseBackend, make_backend
from .batch import Batch, BatchResult, Recipient
from .lock import SendLock
from .plan import PlanPreview, SegmentPlan, preview_plan, segment_key, write_plan
from .report import LISTABLE, SendReport, build_report, list_entries
from .send import (
    ProofResult,
    RetryPolicy,
    RunStats,
    SendObserver,
    SendResult,
    check_proof_address,
    parse_send_at,
    plan_send,
    send_issue,
    send_proof,
)

__all__ = [
    "BACKENDS",
    "LISTABLE",
    "Backend",
    "BaseBackend",
    "Batch",
    "BatchResult",
    "OutcomeUnknown",
    "PlanPreview",
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
    "preview_plan",
    "segment_key",
    "send_issue",
    "send_proof",
    "write_plan",
]
