"""Delivery backends behind one small protocol (see `base`): outbox files, SMTP, SendGrid."""

from __future__ import annotations

from ...config import Environment, Settings
from ...errors import DeliveryError
from .base import Backend, BaseBackend

BACKENDS = ("outbox", "smtp", "sendgrid")

__all__ = ["BACKENDS", "Backend", "BaseBackend", "backend_for", "make_backend"]


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
