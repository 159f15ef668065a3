"""The newsletter's exceptions, in one small tree.

Every exception here is a user's problem (a bad file, a refused command) and carries a message that
says what to fix; the CLI prints it as one line and exits 1. Anything else is a bug and may traceback.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the user can fix; `str(err)` is the one-line message."""


class ConfigError(NewsletterError):
    """`newsletter.yaml` is missing or invalid."""


class ContentError(NewsletterError):
    """One or more summaries or issue files are invalid.

    `problems` holds one message per problem, so one bad file never hides the others.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class TemplateError(NewsletterError):
    """A Jinja or MJML template failed to render (names the template and line)."""


class NothingToCompose(NewsletterError):
    """No summary is eligible for a new issue."""


class IssueExists(NewsletterError):
    """The issue file exists already and `--force` was not given (or it has been sent)."""


class NothingSelected(NewsletterError):
    """No summary of the issue matches the chosen topics: a subscriber with them gets no email."""


class CheckFailed(NewsletterError):
    """Pre-send checks found problems; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(NewsletterError):
    """The database cannot be created, opened, written or locked (the message names the file)."""


class SubscriberError(NewsletterError):
    """A subscriber operation was refused (unknown address, duplicate, bad topic...)."""


class ImportRefused(NewsletterError):
    """A CSV import found invalid rows; nothing was written. `problems` holds one line each."""

    def __init__(self, problems: list[str], summary: str | None = None):
        self.problems = list(problems)
        super().__init__(summary or "\n".join(self.problems))


class DeliveryError(NewsletterError):
    """Sending failed or was refused; the ledger says exactly who got what."""


class SendLocked(DeliveryError):
    """Another `send` of the same issue is running."""


class AuthenticationError(DeliveryError):
    """The email provider refused our credentials or sender (401/403); nothing was sent."""


class PayloadRejected(DeliveryError):
    """The provider refused a request as malformed (400/413): a bug in what we sent."""


# What a delivery backend raises beside the two above; `delivery/backends/base.py` says what the
# send loop may do after each.


class TemporaryFailure(DeliveryError):
    """The request surely was not accepted and may be retried; `retry_after` in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(DeliveryError):
    """The request may or may not have been accepted: its recipients must not be sent again
    automatically. `recipients` are the keys concerned; None means every one not yet recorded."""

    def __init__(self, message: str, recipients: list | None = None):
        super().__init__(message)
        self.recipients = recipients


class SendRefused(DeliveryError):
    """Refused outright and surely not accepted (not a credentials problem): stop, resend later."""


class PullError(NewsletterError):
    """`summaries pull` cannot run at all (no feed given, another pull running, unreadable state)."""


class TokenError(NewsletterError):
    """A signed link is forged, truncated, altered, or for another purpose."""


class ArchiveError(NewsletterError):
    """The archive cannot be built: no address for it, nothing sent, or an output folder that is
    not the archive's."""
