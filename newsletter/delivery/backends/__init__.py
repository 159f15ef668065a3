"""Delivery backends behind one small protocol (see `base`): outbox files, SMTP, SendGrid."""

from __future__ import annotations

from ...config import Environment, Settings
from ...errors import DeliveryError
from .base import Backend, BaseBackend

BACKENDS = ("outbox", "smtp", "sendgrid")

__all__ = [
    "BACKENDS",
    "Backend",
    "BaseBackend",
    "backend_for",
    "in_flight_backends",
    "make_backend",
]


def make_backend(
    name: str | None,
    settings: Settings,
    *,
    sandbox: bool = False,
    environment: Environment | None = None,
) -> Backend:
    """The backend called `name` (default: the settings' one), configured from the settings and
    `environment` (default: the process's); an error when its credentials are missing (before
    anything is sent)."""
    name = name or settings.delivery.backend
    if sandbox and name != "sendgrid":
        raise DeliveryError("--sandbox is a SendGrid feature: use it with --backend sendgrid")
    if name == "outbox":
        from .outbox import OutboxBackend

        return OutboxBackend(settings)
    if name == "smtp":
        from .smtp import SmtpBackend

        return SmtpBackend(settings, environment=environment)
    if name == "sendgrid":
        from .sendgrid import SendGridBackend

        return SendGridBackend(settings, sandbox=sandbox, environment=environment)
    raise DeliveryError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")


def backend_for(
    backend: Backend | str | None, settings: Settings, *, sandbox: bool = False
) -> Backend:
    """`backend` itself when the caller made one (a test's, or the CLI's after checking the
    credentials), else `make_backend` by name."""
    if backend is None or isinstance(backend, str):
        return make_backend(backend, settings, sandbox=sandbox)
    return backend


def in_flight_backends(backend: Backend, settings: Settings) -> list[Backend]:
    """`backend` and the other instances that send beside it, one for each batch in flight at
    once: `delivery.concurrency` of them (SMTP: at most `delivery.smtp.connections`). A
    backend that makes no other instance of itself (`clone` gives None: the outbox, a test's)
    sends alone."""
    slots = settings.delivery.concurrency
    if backend.name == "smtp":
        slots = min(slots, settings.delivery.smtp.connections)
    backends = [backend]
    while len(backends) < slots:
        other = _clone(backend)
        if other is None:
            break
        backends.append(other)
    return backends


def _clone(backend: Backend) -> Backend | None:
    clone = getattr(backend, "clone", None)  # a caller's own backend may lack it
    return clone() if clone is not None else None
