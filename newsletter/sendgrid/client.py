"""The SendGrid API client, set up once, and what its failures mean to us.

`make_client` builds the official client from the API key and host of the `Environment`
(SENDGRID_API_KEY, SENDGRID_API_HOST) with the settings' timeout; `call` makes one request with
it and turns every failure into one of our exceptions, telling apart what surely was not
accepted (worth another try) from what may have been (never repeated). `JsonPoster` posts a
body already encoded (and maybe gzipped) through the same client. The key is never part of a
message, a repr or a log line.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..config import Environment, Settings
from ..errors import (
    AuthenticationError,
    ConfigError,
    DeliveryError,
    OutcomeUnknown,
    PayloadRejected,
    SendRefused,
    TemporaryFailure,
)

DEFAULT_HOST = "https://api.sendgrid.com"
RETRY_STATUSES = (429, 502, 503, 504)  # surely not accepted: worth another try

# The HTTP client logs every request's headers, the Authorization header included, at DEBUG:
# keep it quiet whatever the application's logging level, so the key never reaches a log.
logging.getLogger("python_http_client").setLevel(logging.WARNING)

_PERSONALIZATION_FIELD = re.compile(r"personalizations\.(\d+)(?:\.(.+))?")


class RecipientsRefused(PayloadRejected):
    """SendGrid refused the request for some personalizations only: `refused` maps their index
    in the request to SendGrid's reason. Nothing of the request was accepted."""

    def __init__(self, message: str, refused: dict[int, str] | None = None):
        super().__init__(message)
        self.refused = refused or {}


# --- The client ---------------------------------------------------------------------------------


def api_host(environment: Environment) -> str:
    """SENDGRID_API_HOST (the tests' fake SendGrid), else SendGrid's own API."""
    return (environment.sendgrid_api_host or DEFAULT_HOST).rstrip("/")


def make_client(
    settings: Settings,
    environment: Environment | None = None,
    *,
    api_key: str | None = None,
    host: str | None = None,
    needed_for: str = "put the API key in the environment (it is never read from a file)",
):
    """The official client for `api_key` and `host` (default: from `environment`, itself by
    default the process's), with the settings' timeout. ConfigError when there is no key,
    saying it is `needed_for` something."""
    import sendgrid

    environment = environment or Environment.read()
    api_key = (api_key or environment.sendgrid_api_key or "").strip()
    if not api_key:
        raise ConfigError(f"SENDGRID_API_KEY is not set: {needed_for}")
    client = sendgrid.SendGridAPIClient(
        api_key=api_key, host=(host or api_host(environment)).rstrip("/")
    )
    # The client waits forever unless told otherwise (and never retries: the callers do that).
    client.client.timeout = settings.delivery.timeout
    return client


class JsonPoster:
    """POSTs of bodies already encoded as JSON bytes (gzipped or not) to one endpoint, through
    the official client's request (`python_http_client.Client._make_request`: its headers, its
    timeout, its HTTP errors as the library's exceptions, which `call` maps).

    Why not `Client.post(request_body=...)`: it takes a dict or a str only (no bytes, so no
    gzip), encodes the dict with the json module, and formats debug lines holding the whole body
    as a bytes repr on every request even when logging is off (about 3 ms of a 1000-recipient
    batch); a header given to it stays in the client's shared headers for every later call.
    `_make_request` is the seam the library keeps apart for its callers' tests; one opener and
    one header map per poster, so a poster (like the backend that owns it) belongs to one
    thread.
    """

    def __init__(self, client, *path: str):
        """`client`: a `sendgrid.SendGridAPIClient`; `path`: the endpoint under /v3."""
        self._http = client.client  # python_http_client.Client
        self.url = "/".join((self._http.host.rstrip("/"), "v3", *path))
        self._headers = {**self._http.request_headers, "Content-Type": "application/json"}
        self._opener = urllib.request.build_opener()

    def post(self, data: bytes, *, gzipped: bool = False):
        """One POST of `data`; the library's Response, or its HTTPError subclass raised."""
        from python_http_client.client import Response

        headers = self._headers
        if gzipped:
            headers = {**headers, "Content-Encoding": "gzip"}
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        return Response(self._http._make_request(self._opener, request, self._http.timeout))


# --- One request, its failures as our exceptions --------------------------------------------------


def call(
    request: Callable[[], Any],
    *,
    host: str,
    timeout: float | None,
    action: str,
    forbidden: str,
    idempotent: bool,
    personalizations: int = 0,
):
    """SendGrid's response to `request()`; any failure raised as our exception.

    `action` names what was asked, for messages ("the mail send", "the bounces list");
    `forbidden` what a 403 most likely means. A request that is not `idempotent` (a mail send)
    tells apart failures after which it surely was not accepted (TemporaryFailure, SendRefused,
    PayloadRejected, AuthenticationError) from those after which it may have been
    (OutcomeUnknown); for a read, every failure just stops it. `personalizations` is the count
    in a mail-send body, so that a 400 naming some of them only becomes RecipientsRefused.
    """
    from python_http_client.exceptions import HTTPError

    try:
        return request()
    except HTTPError as err:
        raise http_error(
            err.status_code,
            err.body,
            err.headers,
            host=host,
            action=action,
            forbidden=forbidden,
            idempotent=idempotent,
            personalizations=personalizations,
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise transport_error(err, host=host, timeout=timeout, idempotent=idempotent) from None


def http_error(
    status: int,
    body: bytes | str | None,
    headers=None,
    *,
    host: str,
    action: str,
    forbidden: str,
    idempotent: bool = True,
    personalizations: int = 0,
) -> DeliveryError:
    """The exception for SendGrid's answer `status` with its error `body`."""
    detail = error_messages(body)
    if status == 400 and personalizations:
        refused = refused_personalizations(body, personalizations)
        if refused:
            return RecipientsRefused(
                f"SendGrid refused {len(refused)} recipients: {detail}", refused
            )
    if status in RETRY_STATUSES:
        return TemporaryFailure(
            f"SendGrid answered {status} for {action}: {detail}",
            retry_after=retry_after_seconds(headers),
        )
    if status in (400, 413):
        return PayloadRejected(f"SendGrid refused the request ({status}): {detail}")
    if status == 401:
        return AuthenticationError(
            f"SendGrid refused the API key (401: {detail}); check SENDGRID_API_KEY"
        )
    if status == 403:
        return AuthenticationError(f"SendGrid refused {action} (403: {detail}); {forbidden}")
    if status >= 500:
        if idempotent:
            return DeliveryError(f"SendGrid answered {status} for {action}: {detail}")
        return OutcomeUnknown(
            f"SendGrid answered {status} for {action} ({detail}): the request may or may not "
            "have been accepted"
        )
    return SendRefused(
        f"SendGrid answered {status} for {action} ({detail}); is SENDGRID_API_HOST ({host}) right?"
    )


def transport_error(
    err: BaseException, *, host: str, timeout: float | None, idempotent: bool = True
) -> DeliveryError:
    """The exception for a request that got no answer (`err` from urllib or the socket)."""
    reason = getattr(err, "reason", None) or err
    if idempotent:
        return DeliveryError(f"cannot reach SendGrid at {host}: {reason}")
    if isinstance(err, urllib.error.URLError):
        # Raised while connecting or writing the request, before any answer.
        if isinstance(reason, ConnectionRefusedError | socket.gaierror):
            return TemporaryFailure(f"cannot connect to SendGrid at {host}: {reason}")
        return OutcomeUnknown(
            f"the connection to SendGrid failed while sending the request ({reason}): "
            "it may or may not have been accepted"
        )
    if isinstance(err, TimeoutError):
        return OutcomeUnknown(
            f"no answer from SendGrid within {timeout:g} s: the request may or may not "
            "have been accepted"
        )
    return OutcomeUnknown(
        f"the connection to SendGrid dropped before an answer "
        f"({type(err).__name__}: {err}): the request may or may not have been accepted"
    )


# --- SendGrid's answers -------------------------------------------------------------------------


def retry_after_seconds(headers, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or X-RateLimit-Reset (Unix time)."""
    if headers is None:
        return None
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def _errors(body: bytes | str | None) -> list[dict]:
    """The `errors` list of SendGrid's JSON error body ([] when there is none)."""
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        errors = json.loads(text)["errors"]
    except (ValueError, KeyError, TypeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def refused_personalizations(body: bytes | str | None, count: int) -> dict[int, str] | None:
    """Index → reason when every error of a 400 names one of the request's `count`
    personalizations (a problem of those recipients only); None when any error is about the
    request as a whole, or names no personalization that was sent."""
    errors = _errors(body)
    refused: dict[int, list[str]] = {}
    for item in errors:
        match = _PERSONALIZATION_FIELD.fullmatch(str(item.get("field") or ""))
        if match is None or int(match[1]) >= count:
            return None
        message = " ".join(str(item.get("message") or "refused").split())
        where = f" (field {match[2]})" if match[2] else ""
        refused.setdefault(int(match[1]), []).append(message + where)
    if not refused:
        return None
    return {i: "refused by SendGrid: " + "; ".join(reasons) for i, reasons in refused.items()}


def error_messages(body: bytes | str | None) -> str:
    """SendGrid's own error text from its JSON error body (or the raw body, shortened)."""
    if not body:
        return "no details given"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        errors = json.loads(text)["errors"]
        parts = []
        for item in errors[:5]:
            message = " ".join(str(item.get("message") or "").split())
            field = item.get("field")
            parts.append(f"{message} (field {field})" if field else message)
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return "; ".join(parts) + more
    except (ValueError, KeyError, TypeError, AttributeError):
        return " ".join(text.split())[:300]
