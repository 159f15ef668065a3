"""Proofs (`send --proof ADDR`): the email a subscriber with chosen topics would get, sent to a
few addresses only, subject prefixed "[PROOF] ", with links that act on no one; never recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from ..config import Settings
from ..errors import DeliveryError
from ..render import Renderer, preview_values, summaries_for_topics
from .backends import Backend, backend_for
from .batch import Batch
from .deliver import deliver_with_retries, open_backend
from .message import proof_recipients
from .prepare import load_checked
from .progress import SendObserver
from .retry import RetryPolicy

PROOF_PREFIX = "[PROOF] "


@dataclass
class ProofResult:
    issue_id: str
    backend: str
    addresses: list[str]
    subject: str
    summary_ids: tuple[str, ...]


def check_proof_address(address: str) -> str:
    """The address as it goes on the wire, or DeliveryError naming what is wrong with it.

    The list's rule (`subscribers.check_address`): the domain in its ASCII form, no non-ASCII
    local part; the local part keeps its case, since a proof is not stored."""
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError as exc:
        raise DeliveryError(f"proof address {address!r} is not an email address: {exc}") from None


def send_proof(
    settings: Settings,
    issue_ref: str,
    addresses: Iterable[str],
    *,
    topics: Iterable[str] | str = "all",
    backend: Backend | str | None = None,
    sandbox: bool = False,
    observer: SendObserver | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    renderer: Renderer | None = None,
) -> ProofResult:
    """Send the email a subscriber with `topics` would get to `addresses` only, subject prefixed
    "[PROOF] ". Its links are preview links that act on no one; nothing goes in the ledger."""
    observer = observer or SendObserver()
    addresses = [check_proof_address(a) for a in addresses]
    if not addresses:
        raise DeliveryError("a proof needs at least one address")
    renderer = renderer or Renderer(settings)
    issue, summaries, _ = load_checked(settings, issue_ref, renderer)
    selection = summaries_for_topics(issue, summaries, topics)
    backend = backend_for(backend, settings, sandbox=sandbox)
    email = renderer.render(issue, selection)
    subject = PROOF_PREFIX + email.subject
    recipients = proof_recipients(settings, addresses, preview_values(settings, topics))
    retry = retry or RetryPolicy.from_settings(settings)
    try:
        open_backend(backend, retry, sleep, observer)
        for start in range(0, len(recipients), backend.max_batch):
            chunk = recipients[start : start + backend.max_batch]
            batch = Batch(issue.id, 0, email, chunk, subject, proof=True)
            outcome = deliver_with_retries(backend, batch, retry, sleep=sleep, observer=observer)
            if outcome.error is not None:
                raise outcome.error
            if outcome.failed:
                raise DeliveryError(
                    "; ".join(f"proof to {k} failed: {v}" for k, v in outcome.failed.items())
                )
    finally:
        backend.close()
    return ProofResult(issue.id, backend.name, addresses, subject, email.summary_ids)
