"""Sending an issue: the plan (segments), per-recipient parts, backends, and the resumable,
ledger-backed send loop. The CLI calls `prepare_send` (load and check once; `.plan` is the dry
run) then `run_send`, and `send_proof`, `build_report`; `send_issue` does both steps at once.

    batch     Recipient, Batch, BatchResult: what one `deliver` call carries and reports
    backends/ the protocol (base) and the outbox, SMTP and SendGrid backends
    message   per-recipient values and RFC 5322 messages
    plan      segments: who gets which summaries; the ledger rows of a send
    prepare   load and check once (PreparedSend); the dry run; --at
    run       one run's object (SendRun), counts and result; segments rendered once
    retry     backoff policy          deliver   one batch through the backend, with retries
    progress  the observer of a send  send      the list send: lock, recover, plan, batches
    sandbox   SendGrid's sandbox run  proof     proofs to a few addresses
    lock      one send per issue      report    who got what, from the ledger
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
