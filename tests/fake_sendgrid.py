#!/usr/bin/env python3
"""A local fake of the parts of SendGrid's v3 Web API that the newsletter uses.

The server is standard library only and listens on 127.0.0.1 exclusively.  It can run
in-process::

    with FakeSendGrid() as fake:
        client = sendgrid.SendGridAPIClient(api_key=TEST_API_KEY, host=fake.url)
        ...
        assert fake.stats()["accepted_recipients"] == 3

or as a separate process (for end-to-end runs and benchmarks)::

    python tests/fake_sendgrid.py --port 0 [--record full|recipients|counts] [--api-key KEY]

which prints exactly one line ``READY http://127.0.0.1:PORT`` on stdout once it is listening and
serves until SIGTERM/SIGINT (or ``POST /_fake/shutdown``).  From Python use
``start_fake_sendgrid_process()``.

Both flavours are controlled over HTTP through ``/_fake/...`` endpoints, wrapped by
``FakeSendGridControl``; ``FakeSendGrid`` (in-process) offers the same methods directly.

Endpoints served (auth: ``Authorization: Bearer <api key>``):

* ``POST /v3/mail/send`` - validated like SendGrid (400 with every problem listed), 401/403/413,
  202 with ``X-Message-Id`` on success (200 without recording in sandbox mode).
* ``POST /v3/mail/batch`` - 201 ``{"batch_id": ...}``; ``GET /v3/mail/batch/{id}`` - 200 or 400
  ``invalid batch id`` (the spec lists 400, not 404, for an unknown batch id on this GET).
* ``GET /v3/suppression/{unsubscribes,bounces,spam_reports,invalid_emails,blocks}`` with
  ``start_time``, ``end_time``, ``limit``, ``offset`` and ``email`` (prefix, ``%`` wildcard).
* anything else: 404 ``{"errors":[{"field":null,"message":"resource not found"}]}``.

Control endpoints (no auth):

=========================  ==================================================================
``POST /_fake/script``      ``{"responses": [...]}`` queue behaviours for the next mail sends
``POST /_fake/release``     release every request currently held by a ``hang``
``GET  /_fake/wait``        ``?event=in_flight|requests|accepted|completed&n=N&timeout=S``
``GET  /_fake/accepted``    accepted mail sends (``x_message_id``, ``recipients``, ``payload``)
``GET  /_fake/stats``       counters
``GET  /_fake/recipients``  every accepted ``to`` address, lowercased, in order
``GET  /_fake/suppression_requests``  the query of every suppression-list GET
``POST /_fake/suppressions``  ``{"kind": ..., "entries": [...]}`` seed a suppression list
``POST /_fake/mode``        ``{"forbidden": bool, "api_key": str}``
``POST /_fake/reset``       clear everything (also releases hangs)
``POST /_fake/shutdown``    stop the server (ends the separate process)
``GET  /_fake/health``      ``{"ok": true, "record": mode}``
=========================  ==================================================================

Scripted behaviours (``script()``), consumed one per ``POST /v3/mail/send`` in order, before
any authentication or validation:

* ``{"status": 429, "headers": {"Retry-After": "1"}, "body": ...}`` - answer with that status
  (400..599); ``body`` defaults to SendGrid-style error JSON for the status; not accepted.
* ``{"hang": true, "accept": false, "seconds": 30}`` - read the body, then hold the response
  until the client disconnects, ``release()`` is called or ``seconds`` pass; then close the
  connection without answering.
* ``{"drop": true, "accept": false, "reset": false}`` - read the body, then close the connection
  without any response (``reset: true`` sends a TCP RST instead of a FIN).
* With ``"accept": true`` a hang/drop request that would otherwise have been accepted (auth and
  validation pass) is recorded as accepted - SendGrid took it but the answer was lost.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import json
import os
import re
import secrets
import select
import selectors
import signal
import socket
import string
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
import zlib
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "TEST_API_KEY",
    "RECORD_MODES",
    "SUPPRESSION_KINDS",
    "WAIT_EVENTS",
    "FakeSendGrid",
    "FakeSendGridControl",
    "FakeSendGridError",
    "FakeSendGridProcess",
    "start_fake_sendgrid_process",
    "validate_mail_send",
    "load_mail_send_schema",
    "default_spec_dir",
]

TEST_API_KEY = "SG.test-key"
LOOPBACK = "127.0.0.1"

RECORD_MODES = ("full", "recipients", "counts")
SUPPRESSION_KINDS = ("unsubscribes", "bounces", "spam_reports", "invalid_emails", "blocks")
WAIT_EVENTS = ("in_flight", "requests", "accepted", "completed")

# SendGrid's documented limits.
MAX_BODY_BYTES = 30 * 1024 * 1024  # "The total size of your email ... must be less than 30MB"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000  # to + cc + bcc over the whole request
MAX_SUBSTITUTION_BYTES = 10_000  # per personalization, keys + values, UTF-8
MAX_CUSTOM_ARGS_BYTES = 10_000  # message + personalization custom_args must be *less* than this
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_SEND_AT_AHEAD_SECONDS = 72 * 3600  # sends can be scheduled at most 72 hours ahead
MAX_SUPPRESSION_PAGE = 500
DEFAULT_HANG_SECONDS = 30.0
MAX_WAIT_SECONDS = 300.0

RESERVED_HEADERS = (
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "Content-Type",
    "Content-Transfer-Encoding",
    "To",
    "From",
    "Subject",
    "Reply-To",
    "CC",
    "BCC",
)
_RESERVED_LOWER = frozenset(h.lower() for h in RESERVED_HEADERS)

HELP_BASE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."

UNAUTHORIZED_MESSAGE = "The provided authorization grant is invalid, expired, or revoked"
AUTH_REQUIRED_MESSAGE = "authorization required"
FORBIDDEN_MESSAGE = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until this "
    "error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
    "sender-identity/ to see the Sender Identity requirements"
)

_EXAMPLE_ADDRESS = (
    'e.g. {"email" : "example@example.com"}  or '
    '{"email" : "example@example.com", "name" : "Example Recipient"}'
)
MSG_FROM_REQUIRED = (
    "The from object must be provided for every email send. It is an object that requires the "
    "email parameter, but may also contain a name parameter.  " + _EXAMPLE_ADDRESS + "."
)
MSG_FROM_INVALID = "The from email does not contain a valid address."
MSG_SUBJECT_REQUIRED = (
    "The subject is required. You can get around this requirement if you use a template with a "
    "subject defined or if every personalization has a subject defined."
)
MSG_PERSONALIZATIONS_REQUIRED = (
    "The personalizations field is required and must have at least one personalization."
)
MSG_PERSONALIZATIONS_LIMIT = (
    "The personalization block is limited to 1000 personalizations per API request. You have "
    "provided {n} personalizations. Please consider splitting this into multiple requests and "
    "resending your request."
)
MSG_RECIPIENT_LIMIT = (
    "There is a limit of 1000 total recipients (to + cc + bcc) per request. This request has {n}."
)
MSG_TO_REQUIRED = (
    "The to array is required for all personalization objects, and must have at least one email "
    "object with a valid email address."
)
MSG_LIST_REQUIRED = (
    "The {kind} array, when used, must at least have an email parameter with a valid email "
    "address and it may also contain a name parameter. " + _EXAMPLE_ADDRESS
)
MSG_ADDRESS_OBJECT = (
    "Each {kind} object must at least have an email address and may also contain a name. "
    + _EXAMPLE_ADDRESS
)
MSG_ADDRESS_INVALID = "Does not contain a valid address."
MSG_NAME_CHARS = "The {kind}.name cannot include either the ; or , characters."
MSG_DUPLICATE_IN_PERSONALIZATION = (
    "Each email address in the personalization block should be unique between to, cc, and bcc. "
    "We found the first duplicate instance of [{email}] in the {field} field."
)
MSG_DUPLICATE_IN_REQUEST = (
    "Each unique email address in the personalizations array should only be included once. "
    "You have included [{email}] more than once."
)
MSG_CONTENT_REQUIRED = (
    "Unless a valid template_id is provided, the content parameter is required. There must be at "
    "least one defined content block. We typically suggest both text/plain and text/html blocks "
    "are included, but only one block is required."
)
MSG_CONTENT_TYPE = "The content type must be a string at least one character in length."
MSG_CONTENT_VALUE = "The content value must be a string at least one character in length."
MSG_CONTENT_ORDER = (
    "If present, text/plain must be first, followed by text/x-amp-html, followed by text/html, "
    "followed by any other content."
)
MSG_SUBSTITUTIONS_SIZE = (
    "The total size of the substitutions in a personalization may not exceed 10000 bytes; "
    "this one has {n} bytes."
)
MSG_CUSTOM_ARGS_SIZE = (
    "The total size of custom arguments (message level plus personalization) must be less than "
    "10000 bytes; this personalization has {n} bytes."
)
MSG_SEND_AT_AHEAD = "The send_at parameter can't be more than 72 hours in the future."
MSG_BATCH_ID = "The batch_id {batch_id!r} is not a valid batch id. Create one with /v3/mail/batch."
MSG_CATEGORIES_LIMIT = "Too many categories. You may not have more than 10 categories per request."
MSG_CATEGORY_LENGTH = "A category cannot have more than 255 characters."
MSG_CATEGORY_DUPLICATE = "Each category may only be included once."
MSG_RESERVED_HEADER = "You may not overwrite the following reserved headers: " + ", ".join(
    RESERVED_HEADERS
)
MSG_REPLY_TO_INVALID = "The reply_to email does not contain a valid address."
MSG_ATTACHMENT_CONTENT = "The attachment content must be a base64 encoded string."
MSG_ATTACHMENT_FILENAME = "The attachment filename must be a string at least one character long."
MSG_ATTACHMENT_CONTENT_ID = (
    "The content_id parameter is required if your attachment disposition is inline."
)

_ERROR_MESSAGES = {
    400: "Bad Request",
    401: AUTH_REQUIRED_MESSAGE,
    403: "access forbidden",
    404: "resource not found",
    405: "method not allowed",
    408: "request timeout",
    413: "content too large",
    415: "unsupported media type",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)


class FakeSendGridError(Exception):
    """Misuse of the fake's control API (bad script entry, unavailable record, ...)."""


# ---------------------------------------------------------------------------------------------
# Validation of a mail-send payload, the way SendGrid does it.
# ---------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_message(expected: str, value: Any) -> str:
    return f"Invalid type. Expected: {expected}, given: {_json_type(value)}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and _EMAIL_RE.fullmatch(value) is not None


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def validate_mail_send(
    payload: Any, known_batch_ids: set[str] | None = None, *, now: float | None = None
) -> list[dict[str, Any]]:
    """Return SendGrid-style error objects (``message``, ``field``, ``help``) for ``payload``.

    An empty list means SendGrid would accept the payload.  ``known_batch_ids`` is the set of
    batch ids created through /v3/mail/batch; ``None`` checks only the type of ``batch_id``.
    """
    errors: list[dict[str, Any]] = []

    def add(field: str | None, message: str, anchor: str | None = None) -> None:
        errors.append(
            {"message": message, "field": field, "help": HELP_BASE + anchor if anchor else None}
        )

    if not isinstance(payload, dict):
        add(None, "Bad Request")
        return errors
    now = time.time() if now is None else now

    template_id = payload.get("template_id")
    if "template_id" in payload and not isinstance(template_id, str):
        add("template_id", _type_message("string", template_id), "template_id")
    has_template = isinstance(template_id, str) and template_id != ""

    # from
    sender = payload.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        add("from.email", MSG_FROM_REQUIRED, "from")
    else:
        if not _is_email(sender["email"]):
            add("from.email", MSG_FROM_INVALID, "from")
        if "name" in sender and not isinstance(sender["name"], str):
            add("from.name", _type_message("string", sender["name"]), "from")

    # personalizations and recipients
    personalizations = payload.get("personalizations")
    plist: list[Any] = []
    if not isinstance(personalizations, list) or not personalizations:
        add("personalizations", MSG_PERSONALIZATIONS_REQUIRED, "personalizations")
    else:
        plist = personalizations
        if len(plist) > MAX_PERSONALIZATIONS:
            add(
                "personalizations",
                MSG_PERSONALIZATIONS_LIMIT.format(n=len(plist)),
                "personalizations",
            )

    message_args_size = 0
    if "custom_args" in payload:
        message_args_size = _check_string_map(add, payload["custom_args"], "custom_args")

    seen_in_request: set[str] = set()
    total_recipients = 0
    for i, pers in enumerate(plist):
        base = f"personalizations.{i}"
        if not isinstance(pers, dict):
            add(base, _type_message("object", pers), "personalizations")
            continue
        seen_here: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            if kind not in pers:
                if kind == "to":
                    add(f"{base}.to", MSG_TO_REQUIRED, "personalizations.to")
                continue
            items = pers[kind]
            if not isinstance(items, list) or not items:
                message = MSG_TO_REQUIRED if kind == "to" else MSG_LIST_REQUIRED.format(kind=kind)
                add(f"{base}.{kind}", message, f"personalizations.{kind}")
                continue
            total_recipients += len(items)
            for j, item in enumerate(items):
                field = f"{base}.{kind}.{j}"
                if not isinstance(item, dict) or "email" not in item:
                    add(
                        f"{field}.email",
                        MSG_ADDRESS_OBJECT.format(kind=kind),
                        f"personalizations.{kind}",
                    )
                    continue
                email = item["email"]
                if not _is_email(email):
                    add(f"{field}.email", MSG_ADDRESS_INVALID, f"personalizations.{kind}")
                    continue
                if "name" in item:
                    name = item["name"]
                    if not isinstance(name, str):
                        add(f"{field}.name", _type_message("string", name), "personalizations")
                    elif ";" in name or "," in name:
                        add(f"{field}.name", MSG_NAME_CHARS.format(kind=kind), "personalizations")
                key = email.lower()
                if key in seen_here:
                    add(
                        base,
                        MSG_DUPLICATE_IN_PERSONALIZATION.format(
                            email=email, field=f"{base}.{kind}"
                        ),
                        "recipient-errors",
                    )
                elif key in seen_in_request:
                    add(
                        f"{field}.email",
                        MSG_DUPLICATE_IN_REQUEST.format(email=email),
                        "recipient-errors",
                    )
                seen_here.add(key)
        seen_in_request |= seen_here

        if "from" in pers:
            pfrom = pers["from"]
            if not isinstance(pfrom, dict) or not _is_email(pfrom.get("email")):
                add(f"{base}.from.email", MSG_FROM_INVALID, "from")
        if "subject" in pers and not isinstance(pers["subject"], str):
            add(f"{base}.subject", _type_message("string", pers["subject"]), "subject")
        if "headers" in pers:
            _check_headers(add, pers["headers"], f"{base}.headers")
        if "substitutions" in pers:
            size = _check_string_map(add, pers["substitutions"], f"{base}.substitutions")
            if size > MAX_SUBSTITUTION_BYTES:
                add(
                    f"{base}.substitutions",
                    MSG_SUBSTITUTIONS_SIZE.format(n=size),
                    "personalizations.substitutions",
                )
        if "custom_args" in pers:
            size = message_args_size + _check_string_map(
                add, pers["custom_args"], f"{base}.custom_args"
            )
            if size >= MAX_CUSTOM_ARGS_BYTES:
                add(f"{base}.custom_args", MSG_CUSTOM_ARGS_SIZE.format(n=size), "custom_args")
        if "send_at" in pers:
            _check_send_at(add, pers["send_at"], f"{base}.send_at", now)
        if "dynamic_template_data" in pers and not isinstance(pers["dynamic_template_data"], dict):
            add(
                f"{base}.dynamic_template_data",
                _type_message("object", pers["dynamic_template_data"]),
                "personalizations",
            )
    if total_recipients > MAX_RECIPIENTS:
        add("personalizations", MSG_RECIPIENT_LIMIT.format(n=total_recipients), "recipient-errors")
    if message_args_size >= MAX_CUSTOM_ARGS_BYTES and not any(
        isinstance(p, dict) and "custom_args" in p for p in plist
    ):
        add("custom_args", MSG_CUSTOM_ARGS_SIZE.format(n=message_args_size), "custom_args")

    # subject: top level, or in every personalization, or from a template
    subject = payload.get("subject")
    if "subject" in payload and not isinstance(subject, str):
        add("subject", _type_message("string", subject), "subject")
    elif not subject and not has_template:
        every = bool(plist) and all(
            isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"]
            for p in plist
        )
        if not every:
            add("subject", MSG_SUBJECT_REQUIRED, "subject")

    # content
    content = payload.get("content")
    if content is None or content == []:
        if not has_template:
            add("content", MSG_CONTENT_REQUIRED, "content")
    elif not isinstance(content, list):
        add("content", _type_message("array", content), "content")
    else:
        ranks = {"text/plain": 0, "text/x-amp-html": 1, "text/html": 2}
        highest = -1
        for i, item in enumerate(content):
            if not isinstance(item, dict):
                add(f"content.{i}", _type_message("object", item), "content")
                continue
            ctype = item.get("type")
            if not isinstance(ctype, str) or not ctype:
                add(f"content.{i}.type", MSG_CONTENT_TYPE, "content.type")
            else:
                rank = ranks.get(ctype.lower(), 3)
                if rank < highest:
                    add(f"content.{i}.type", MSG_CONTENT_ORDER, "content.type")
                highest = max(highest, rank)
            value = item.get("value")
            if not isinstance(value, str) or not value:
                add(f"content.{i}.value", MSG_CONTENT_VALUE, "content.value")

    if "headers" in payload:
        _check_headers(add, payload["headers"], "headers")
    if "send_at" in payload:
        _check_send_at(add, payload["send_at"], "send_at", now)

    if "batch_id" in payload:
        batch_id = payload["batch_id"]
        if not isinstance(batch_id, str):
            add("batch_id", _type_message("string", batch_id), "batch_id")
        elif known_batch_ids is not None and batch_id not in known_batch_ids:
            add("batch_id", MSG_BATCH_ID.format(batch_id=batch_id), "batch_id")

    if "categories" in payload:
        categories = payload["categories"]
        if not isinstance(categories, list):
            add("categories", _type_message("array", categories), "categories")
        else:
            if len(categories) > MAX_CATEGORIES:
                add("categories", MSG_CATEGORIES_LIMIT, "categories")
            seen_categories: set[str] = set()
            for i, category in enumerate(categories):
                if not isinstance(category, str):
                    add(f"categories.{i}", _type_message("string", category), "categories")
                    continue
                if len(category) > MAX_CATEGORY_LENGTH:
                    add(f"categories.{i}", MSG_CATEGORY_LENGTH, "categories")
                if category in seen_categories:
                    add(f"categories.{i}", MSG_CATEGORY_DUPLICATE, "categories")
                seen_categories.add(category)

    if "reply_to" in payload:
        reply_to = payload["reply_to"]
        if not isinstance(reply_to, dict) or not _is_email(reply_to.get("email")):
            add("reply_to.email", MSG_REPLY_TO_INVALID, "reply_to")
    if "reply_to_list" in payload:
        reply_list = payload["reply_to_list"]
        if not isinstance(reply_list, list) or len(reply_list) > 1000:
            add("reply_to_list", _type_message("array", reply_list), "reply_to_list")
        else:
            for i, item in enumerate(reply_list):
                if not isinstance(item, dict) or not _is_email(item.get("email")):
                    add(f"reply_to_list.{i}.email", MSG_ADDRESS_INVALID, "reply_to_list")

    if "attachments" in payload:
        _check_attachments(add, payload["attachments"])

    if "asm" in payload:
        asm = payload["asm"]
        if not isinstance(asm, dict):
            add("asm", _type_message("object", asm), "asm")
        else:
            if not _is_int(asm.get("group_id")):
                add("asm.group_id", _type_message("integer", asm.get("group_id")), "asm.group_id")
            if "groups_to_display" in asm:
                groups = asm["groups_to_display"]
                if (
                    not isinstance(groups, list)
                    or len(groups) > 25
                    or not all(_is_int(g) for g in groups)
                ):
                    add(
                        "asm.groups_to_display",
                        "groups_to_display must be an array of at most 25 integer group ids.",
                        "asm.groups_to_display",
                    )

    if "ip_pool_name" in payload:
        pool = payload["ip_pool_name"]
        if not isinstance(pool, str) or not 2 <= len(pool) <= 64:
            add(
                "ip_pool_name",
                "The ip_pool_name must be a string of 2 to 64 characters.",
                "ip_pool_name",
            )
    for key in ("mail_settings", "tracking_settings"):
        if key in payload and not isinstance(payload[key], dict):
            add(key, _type_message("object", payload[key]), key)
    return errors


def _check_string_map(add, value: Any, field: str) -> int:
    """Check an object of string values; return its size in bytes (keys + values, UTF-8)."""
    if not isinstance(value, dict):
        add(field, _type_message("object", value), field.split(".")[-1])
        return 0
    size = 0
    for key, item in value.items():
        size += _utf8_len(key)
        if isinstance(item, str):
            size += _utf8_len(item)
        else:
            add(f"{field}.{key}", _type_message("string", item), field.split(".")[-1])
            size += _utf8_len(json.dumps(item))
    return size


def _check_headers(add, value: Any, field: str) -> None:
    if not isinstance(value, dict):
        add(field, _type_message("object", value), "headers")
        return
    for name, item in value.items():
        if name.lower() in _RESERVED_LOWER:
            add(f"{field}.{name}", MSG_RESERVED_HEADER, "headers")
        elif not isinstance(item, str):
            add(f"{field}.{name}", _type_message("string", item), "headers")


def _check_send_at(add, value: Any, field: str, now: float) -> None:
    if not _is_int(value):
        add(field, _type_message("integer", value), "send_at")
    elif value > now + MAX_SEND_AT_AHEAD_SECONDS:
        add(field, MSG_SEND_AT_AHEAD, "send_at")


def _check_attachments(add, attachments: Any) -> None:
    if not isinstance(attachments, list):
        add("attachments", _type_message("array", attachments), "attachments")
        return
    for i, item in enumerate(attachments):
        base = f"attachments.{i}"
        if not isinstance(item, dict):
            add(base, _type_message("object", item), "attachments")
            continue
        content = item.get("content")
        valid = isinstance(content, str) and content != ""
        if valid:
            try:
                base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                valid = False
        if not valid:
            add(f"{base}.content", MSG_ATTACHMENT_CONTENT, "attachments.content")
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename:
            add(f"{base}.filename", MSG_ATTACHMENT_FILENAME, "attachments.filename")
        if "type" in item and (not isinstance(item["type"], str) or not item["type"]):
            add(f"{base}.type", _type_message("string", item["type"]), "attachments.type")
        disposition = item.get("disposition", "attachment")
        if disposition not in ("inline", "attachment"):
            add(
                f"{base}.disposition",
                "The disposition must be either inline or attachment.",
                "attachments.disposition",
            )
        elif disposition == "inline" and not item.get("content_id"):
            add(f"{base}.content_id", MSG_ATTACHMENT_CONTENT_ID, "attachments.content_id")


def _is_sandbox(payload: dict[str, Any]) -> bool:
    settings = payload.get("mail_settings")
    if not isinstance(settings, dict):
        return False
    sandbox = settings.get("sandbox_mode")
    return isinstance(sandbox, dict) and sandbox.get("enable") is True


def _error_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"field": field, "message": message}]}


def _full_error_body(message: str, field: str | None = None, help: Any = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": help}]}


# ---------------------------------------------------------------------------------------------
# Shared state and control logic
# ---------------------------------------------------------------------------------------------

_SUPPRESSION_FIELDS: dict[str, dict[str, Any]] = {
    "unsubscribes": {},
    "bounces": {"reason": "550 5.1.1 The email account does not exist.", "status": "5.1.1"},
    "spam_reports": {"ip": "127.0.0.1"},
    "invalid_emails": {"reason": "Mail domain mentioned in email address is unknown"},
    "blocks": {"reason": "550 5.7.1 Message rejected by the receiving server.", "status": "5.7.1"},
}

_SCRIPT_KEYS = {
    "status": {"status", "headers", "body"},
    "hang": {"hang", "accept", "seconds"},
    "drop": {"drop", "accept", "reset"},
}


def _check_script_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise FakeSendGridError(f"script entries must be objects, got {entry!r}")
    kinds = [k for k in ("status", "hang", "drop") if k in entry]
    if len(kinds) != 1:
        raise FakeSendGridError(f"a script entry needs exactly one of status/hang/drop: {entry!r}")
    kind = kinds[0]
    unknown = set(entry) - _SCRIPT_KEYS[kind]
    if unknown:
        raise FakeSendGridError(f"unknown keys {sorted(unknown)} in {kind} entry {entry!r}")
    if kind == "status":
        if not _is_int(entry["status"]) or not 400 <= entry["status"] <= 599:
            raise FakeSendGridError(f"status must be an int in 400..599: {entry!r}")
        headers = entry.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise FakeSendGridError(f"headers must map strings to strings: {entry!r}")
    else:
        if entry[kind] is not True:
            raise FakeSendGridError(f"{kind} must be true: {entry!r}")
        if not isinstance(entry.get("accept", False), bool):
            raise FakeSendGridError(f"accept must be a boolean: {entry!r}")
        seconds = entry.get("seconds", DEFAULT_HANG_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise FakeSendGridError(f"seconds must be a non-negative number: {entry!r}")
        if not isinstance(entry.get("reset", False), bool):
            raise FakeSendGridError(f"reset must be a boolean: {entry!r}")
    return copy.deepcopy(entry)


def _new_message_id() -> str:
    return secrets.token_urlsafe(16)


def _new_batch_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


class _State:
    """All mutable state of one fake server, guarded by one condition variable."""

    def __init__(self, api_key: str, record: str) -> None:
        if record not in RECORD_MODES:
            raise ValueError(f"record must be one of {RECORD_MODES}, got {record!r}")
        self.cond = threading.Condition()
        self.configured_api_key = api_key
        self.record = record
        self.stopping = False
        self.hang_wakers: set[socket.socket] = set()
        with self.cond:
            self._reset_locked()

    # -- internal --------------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self.api_key = self.configured_api_key
        self.forbidden = False
        self.script_queue: deque[dict[str, Any]] = deque()
        self.requests = 0
        self.completed = 0
        self.accepted_requests = 0
        self.accepted_recipients = 0
        self.responses: dict[int, int] = {}
        self.hung = 0
        self.dropped = 0
        self.in_flight = 0
        self.accepted_log: list[dict[str, Any]] = []
        self.recipient_log: list[str] = []
        self.suppressions: dict[str, list[dict[str, Any]]] = {k: [] for k in SUPPRESSION_KINDS}
        self.suppression_log: list[dict[str, Any]] = []
        self.batch_ids: set[str] = set()
        self._wake_hangs_locked()
        self.cond.notify_all()

    def _wake_hangs_locked(self) -> None:
        for waker in list(self.hang_wakers):
            with contextlib.suppress(OSError):
                waker.send(b"x")

    # -- used by the request handler -------------------------------------------------------

    def note_request(self) -> None:
        with self.cond:
            self.requests += 1
            self.cond.notify_all()

    def note_completed(self) -> None:
        with self.cond:
            self.completed += 1
            self.cond.notify_all()

    def note_response(self, status: int) -> None:
        with self.cond:
            self.responses[status] = self.responses.get(status, 0) + 1

    def pop_script(self) -> dict[str, Any] | None:
        with self.cond:
            return self.script_queue.popleft() if self.script_queue else None

    def record_accepted(self, payload: dict[str, Any]) -> str:
        message_id = _new_message_id()
        recipients = [
            item["email"].lower()
            for pers in payload["personalizations"]
            for item in pers.get("to", [])
        ]
        with self.cond:
            self.accepted_requests += 1
            self.accepted_recipients += len(recipients)
            if self.record == "full":
                self.accepted_log.append(
                    {"x_message_id": message_id, "recipients": recipients, "payload": payload}
                )
            elif self.record == "recipients":
                self.accepted_log.append({"x_message_id": message_id, "recipients": recipients})
            if self.record != "counts":
                self.recipient_log.extend(recipients)
            self.cond.notify_all()
        return message_id

    def register_hang(self, waker: socket.socket) -> bool:
        with self.cond:
            self.hung += 1
            if self.stopping:
                return False
            self.hang_wakers.add(waker)
            self.in_flight += 1
            self.cond.notify_all()
            return True

    def unregister_hang(self, waker: socket.socket) -> None:
        with self.cond:
            self.hang_wakers.discard(waker)
            self.in_flight -= 1
            self.cond.notify_all()

    def note_dropped(self) -> None:
        with self.cond:
            self.dropped += 1

    def begin_stop(self) -> None:
        with self.cond:
            self.stopping = True
            self._wake_hangs_locked()
            self.cond.notify_all()

    # -- control API (same semantics in-process and over HTTP) -----------------------------

    def script(self, responses: list[dict[str, Any]]) -> None:
        if not isinstance(responses, list):
            raise FakeSendGridError("responses must be a list of script entries")
        entries = [_check_script_entry(entry) for entry in responses]
        with self.cond:
            self.script_queue.extend(entries)

    def release(self) -> None:
        with self.cond:
            self._wake_hangs_locked()

    def wait_for(self, event: str, timeout: float = 10.0, n: int | None = None) -> bool:
        if event not in WAIT_EVENTS:
            raise FakeSendGridError(f"event must be one of {WAIT_EVENTS}, got {event!r}")
        if n is None:
            n = 1
        if not _is_int(n) or n < 0:
            raise FakeSendGridError(f"n must be a non-negative integer, got {n!r}")
        timeout = max(0.0, min(float(timeout), MAX_WAIT_SECONDS))

        def reached() -> bool:
            value = {
                "in_flight": self.in_flight,
                "requests": self.requests,
                "accepted": self.accepted_requests,
                "completed": self.completed,
            }[event]
            return value >= n

        with self.cond:
            self.cond.wait_for(lambda: reached() or self.stopping, timeout)
            return reached()

    def accepted(self) -> list[dict[str, Any]]:
        with self.cond:
            if self.record == "counts":
                raise FakeSendGridError("accepted() is not available with record='counts'")
            return copy.deepcopy(self.accepted_log)

    def recipients(self) -> list[str]:
        with self.cond:
            if self.record == "counts":
                raise FakeSendGridError("recipients() is not available with record='counts'")
            return list(self.recipient_log)

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {
                "requests": self.requests,
                "accepted_requests": self.accepted_requests,
                "accepted_recipients": self.accepted_recipients,
                "responses": dict(sorted(self.responses.items())),
                "hung": self.hung,
                "dropped": self.dropped,
                "in_flight": self.in_flight,
                "completed": self.completed,
                "record": self.record,
            }

    def reset(self) -> None:
        with self.cond:
            self._reset_locked()

    def set_suppressions(self, kind: str, entries: list[dict[str, Any]]) -> None:
        if kind not in SUPPRESSION_KINDS:
            raise FakeSendGridError(f"kind must be one of {SUPPRESSION_KINDS}, got {kind!r}")
        if not isinstance(entries, list):
            raise FakeSendGridError("entries must be a list of objects")
        defaults = _SUPPRESSION_FIELDS[kind]
        allowed = {"email", "created", *defaults}
        cleaned = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise FakeSendGridError(f"suppression entries must be objects: {entry!r}")
            unknown = set(entry) - allowed
            if unknown:
                raise FakeSendGridError(f"unknown fields {sorted(unknown)} for {kind}: {entry!r}")
            if not isinstance(entry.get("email"), str) or not _is_int(entry.get("created")):
                raise FakeSendGridError(f"entries need email (str) and created (int): {entry!r}")
            for key, value in entry.items():
                if key not in ("email", "created") and not isinstance(value, str):
                    raise FakeSendGridError(f"{key} must be a string: {entry!r}")
            item = {"created": entry["created"], "email": entry["email"]}
            for key, default in defaults.items():
                item[key] = entry.get(key, default)
            cleaned.append(item)
        cleaned.sort(key=lambda e: (e["created"], e["email"]))
        with self.cond:
            self.suppressions[kind] = cleaned

    def suppression_requests(self) -> list[dict[str, Any]]:
        with self.cond:
            return copy.deepcopy(self.suppression_log)

    def set_mode(self, forbidden: bool | None = None, api_key: str | None = None) -> None:
        if forbidden is not None and not isinstance(forbidden, bool):
            raise FakeSendGridError("forbidden must be a boolean")
        if api_key is not None and not isinstance(api_key, str):
            raise FakeSendGridError("api_key must be a string")
        with self.cond:
            if forbidden is not None:
                self.forbidden = forbidden
            if api_key is not None:
                self.api_key = api_key


# ---------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------

_BATCH_PATH = re.compile(r"/v3/mail/batch/([^/]+)")
_SUPPRESSION_PATH = re.compile(r"/v3/suppression/(" + "|".join(SUPPRESSION_KINDS) + r")")


class _BodyError(Exception):
    """The request body could not be read (the connection is closed without a response)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    request_queue_size = 128  # the default backlog of 5 drops SYNs under concurrent senders

    def __init__(self, port: int, state: _State, on_shutdown) -> None:
        self.state = state
        self.on_shutdown = on_shutdown
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self._stop_requested = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.busy = 0  # requests being handled right now
        self.busy_cond = threading.Condition()
        super().__init__((LOOPBACK, port), _Handler)

    def serve(self) -> None:
        """Accept connections until stop_serving(); event driven (no poll interval)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop_requested:
                for key, _ in selector.select():
                    if self._stop_requested:
                        break
                    if key.fileobj is self:
                        self._handle_request_noblock()

    def stop_serving(self) -> None:
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def wait_until_idle(self, timeout: float) -> None:
        """Let requests in progress (woken hangs and long polls) finish their answers."""
        with self.busy_cond:
            self.busy_cond.wait_for(lambda: self.busy == 0, timeout)

    def close_all_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _Server

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def state(self) -> _State:
        return self.server.state

    def _read_body(self) -> tuple[bytes, bool]:
        """Read the whole request body; return (body, too_large).  Over-limit bodies are drained
        and discarded so the client sees a proper answer instead of a broken pipe."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", False
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError("bad Content-Length") from None
        if length < 0:
            raise _BodyError("bad Content-Length")
        if length > MAX_BODY_BYTES:
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise _BodyError("client went away")
                remaining -= len(chunk)
            return b"", True
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BodyError("client went away")
        return body, False

    def _read_chunked(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _BodyError("client went away")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError("bad chunk") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = self.rfile.read(size)
            if len(data) != size:
                raise _BodyError("client went away")
            self.rfile.readline(3)
            total += size
            if total <= MAX_BODY_BYTES:
                parts.append(data)
        if total > MAX_BODY_BYTES:
            return b"", True
        return b"".join(parts), False

    def _decode_body(self, body: bytes) -> tuple[bytes | None, int | None]:
        """Undo Content-Encoding: gzip.  Returns (body, None) or (None, error status)."""
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if not encoding or encoding == "identity":
            return body, None
        if encoding != "gzip":
            return None, 415
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error:
            return None, 400
        if len(data) > MAX_BODY_BYTES:
            return None, 413
        return data, None

    def _send(
        self,
        status: int,
        body: Any = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            content_type = "application/json" if data else None
        elif isinstance(body, str):
            data = body.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        names = {k.lower() for k in (headers or {})}
        if content_type and "content-type" not in names:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _abort(self, rst: bool = False) -> None:
        """Close the connection without sending a response."""
        self.close_connection = True
        if rst:
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        with contextlib.suppress(OSError):
            self.connection.close()

    def _authorized(self) -> tuple[bool, dict[str, Any] | None]:
        header = self.headers.get("Authorization")
        if header is None:
            return False, _full_error_body(AUTH_REQUIRED_MESSAGE)
        parts = header.split(None, 1)
        with self.state.cond:
            key = self.state.api_key
        if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip() == key:
            return True, None
        return False, _full_error_body(UNAUTHORIZED_MESSAGE)

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self.server.busy_cond:
            self.server.busy += 1
        try:
            self._route()
        finally:
            with self.server.busy_cond:
                self.server.busy -= 1
                self.server.busy_cond.notify_all()

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        method = self.command
        if path == "/v3/mail/send" and method == "POST":
            self._mail_send()
            return
        try:
            body, too_large = self._read_body()
        except _BodyError:
            self._abort()
            return
        if path.startswith("/_fake/"):
            self._control(method, path[len("/_fake/") :], query, body, too_large)
        elif path == "/v3/mail/send":
            self._send(405, _error_body("method not allowed"))
        elif path == "/v3/mail/batch":
            if method != "POST":
                self._send(405, _error_body("method not allowed"))
            else:
                self._batch_create()
        elif (match := _BATCH_PATH.fullmatch(path)) is not None:
            if method != "GET":
                self._send(405, _error_body("method not allowed"))
            else:
                self._batch_get(urllib.parse.unquote(match.group(1)))
        elif (match := _SUPPRESSION_PATH.fullmatch(path)) is not None:
            if method != "GET":
                self._send(405, _error_body("method not allowed"))
            else:
                self._suppressions(match.group(1), query)
        else:
            self._send(404, _error_body("resource not found"))

    # -- /v3/mail/send ---------------------------------------------------------------------

    def _mail_send(self) -> None:
        state = self.state
        state.note_request()
        try:
            try:
                body, too_large = self._read_body()
            except _BodyError:
                self._abort()
                return
            entry = state.pop_script()
            if entry is None:
                status, response, payload = self._evaluate_mail_send(body, too_large)
                self._answer_mail_send(status, response, payload)
            elif "status" in entry:
                status = entry["status"]
                response = entry.get("body")
                if response is None:
                    response = _error_body(_ERROR_MESSAGES.get(status, _phrase(status)))
                state.note_response(status)
                self._send(status, response, entry.get("headers"))
            else:
                if entry.get("accept"):
                    status, _response, payload = self._evaluate_mail_send(body, too_large)
                    if status == 202 and payload is not None:
                        state.record_accepted(payload)
                if entry.get("hang"):
                    self._hang(float(entry.get("seconds", DEFAULT_HANG_SECONDS)))
                    self._abort()
                else:
                    state.note_dropped()
                    self._abort(rst=bool(entry.get("reset")))
        finally:
            state.note_completed()

    def _evaluate_mail_send(
        self, body: bytes, too_large: bool
    ) -> tuple[int, Any, dict[str, Any] | None]:
        ok, unauthorized = self._authorized()
        if not ok:
            return 401, unauthorized, None
        if too_large:
            return 413, _error_body("content too large"), None
        decoded, problem = self._decode_body(body)
        if decoded is None:
            return problem, _error_body(_ERROR_MESSAGES[problem]), None
        try:
            payload = json.loads(decoded)
        except (ValueError, UnicodeDecodeError):
            return 400, _full_error_body("Bad Request"), None
        with self.state.cond:
            batch_ids = set(self.state.batch_ids)
            forbidden = self.state.forbidden
        errors = validate_mail_send(payload, batch_ids)
        if errors:
            return 400, {"errors": errors}, None
        if forbidden:
            return 403, _full_error_body(FORBIDDEN_MESSAGE, "from"), None
        if _is_sandbox(payload):
            return 200, b"", None
        return 202, b"", payload

    def _answer_mail_send(self, status: int, response: Any, payload: dict[str, Any] | None):
        headers = {}
        if status == 202 and payload is not None:
            headers["X-Message-Id"] = self.state.record_accepted(payload)
        self.state.note_response(status)
        self._send(status, response, headers)

    def _hang(self, seconds: float) -> None:
        """Hold the request until the client disconnects, release() or ``seconds`` pass."""
        wake_r, wake_w = socket.socketpair()
        try:
            if not self.state.register_hang(wake_w):
                return
            try:
                deadline = time.monotonic() + seconds
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    readable, _, _ = select.select([self.connection, wake_r], [], [], remaining)
                    if not readable or wake_r in readable:
                        return
                    try:
                        if not self.connection.recv(65536):
                            return  # the client went away
                    except OSError:
                        return
            finally:
                self.state.unregister_hang(wake_w)
        finally:
            wake_r.close()
            wake_w.close()

    # -- /v3/mail/batch --------------------------------------------------------------------

    def _batch_create(self) -> None:
        ok, unauthorized = self._authorized()
        if not ok:
            self._send(401, unauthorized)
            return
        batch_id = _new_batch_id()
        with self.state.cond:
            self.state.batch_ids.add(batch_id)
        self._send(201, {"batch_id": batch_id})

    def _batch_get(self, batch_id: str) -> None:
        ok, unauthorized = self._authorized()
        if not ok:
            self._send(401, unauthorized)
            return
        with self.state.cond:
            known = batch_id in self.state.batch_ids
        if known:
            self._send(200, {"batch_id": batch_id})
        else:
            self._send(400, _error_body("invalid batch id"))

    # -- /v3/suppression/* -----------------------------------------------------------------

    def _suppressions(self, kind: str, query: dict[str, list[str]]) -> None:
        flat = {key: values[-1] for key, values in query.items()}
        ok, unauthorized = self._authorized()
        status = 200 if ok else 401
        response: Any = unauthorized
        if ok:
            try:
                response = self._suppression_page(kind, flat)
            except _QueryError as exc:
                status, response = 400, _error_body(str(exc), exc.field)
        with self.state.cond:
            self.state.suppression_log.append(
                {"kind": kind, "path": f"/v3/suppression/{kind}", "query": flat, "status": status}
            )
        self._send(status, response)

    def _suppression_page(self, kind: str, query: dict[str, str]) -> list[dict[str, Any]]:
        def integer(name: str, default: int | None, low: int, high: int | None) -> int | None:
            if name not in query:
                return default
            try:
                value = int(query[name])
            except ValueError:
                raise _QueryError(name, f"{name} must be an integer") from None
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f">= {low}"
                raise _QueryError(name, f"{name} must be {bounds}")
            return value

        start = integer("start_time", None, 0, None)
        end = integer("end_time", None, 0, None)
        limit = integer("limit", MAX_SUPPRESSION_PAGE, 1, MAX_SUPPRESSION_PAGE)
        offset = integer("offset", 0, 0, None)
        pattern = None
        if query.get("email"):
            parts = [re.escape(p) for p in query["email"].split("%")]
            pattern = re.compile(".*".join(parts), re.IGNORECASE)
        with self.state.cond:
            entries = list(self.state.suppressions[kind])
        selected = [
            dict(e)
            for e in entries
            if (start is None or e["created"] >= start)
            and (end is None or e["created"] <= end)
            and (pattern is None or pattern.match(e["email"]))
        ]
        return selected[offset : offset + limit]

    # -- /_fake/* --------------------------------------------------------------------------

    def _control(
        self, method: str, name: str, query: dict[str, list[str]], body: bytes, too_large: bool
    ) -> None:
        state = self.state
        try:
            if too_large:
                raise FakeSendGridError("control request too large")
            data = json.loads(body) if body else {}
            if not isinstance(data, dict):
                raise FakeSendGridError("control bodies must be JSON objects")
            arg = {key: values[-1] for key, values in query.items()}
            result: Any = None
            if method == "GET" and name == "health":
                result = {"ok": True, "record": state.record}
            elif method == "GET" and name == "stats":
                result = state.stats()
            elif method == "GET" and name == "accepted":
                result = state.accepted()
            elif method == "GET" and name == "recipients":
                result = state.recipients()
            elif method == "GET" and name == "suppression_requests":
                result = state.suppression_requests()
            elif method == "GET" and name == "wait":
                try:
                    timeout = float(arg.get("timeout", "10"))
                    n = int(arg["n"]) if "n" in arg else None
                except ValueError:
                    raise FakeSendGridError("timeout and n must be numbers") from None
                result = {"ok": state.wait_for(arg.get("event", ""), timeout, n)}
            elif method == "POST" and name == "script":
                state.script(data.get("responses"))
                result = {"ok": True}
            elif method == "POST" and name == "release":
                state.release()
                result = {"ok": True}
            elif method == "POST" and name == "reset":
                state.reset()
                result = {"ok": True}
            elif method == "POST" and name == "suppressions":
                state.set_suppressions(data.get("kind"), data.get("entries"))
                result = {"ok": True}
            elif method == "POST" and name == "mode":
                state.set_mode(forbidden=data.get("forbidden"), api_key=data.get("api_key"))
                result = {"ok": True}
            elif method == "POST" and name == "shutdown":
                self._send(200, {"ok": True}, {"Connection": "close"})
                self.server.on_shutdown()
                return
            else:
                self._send(404, {"error": f"unknown control endpoint {method} /_fake/{name}"})
                return
        except FakeSendGridError as exc:
            self._send(409 if "not available" in str(exc) else 400, {"error": str(exc)})
            return
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": f"bad control request: {exc}"})
            return
        self._send(200, result)


class _QueryError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


# ---------------------------------------------------------------------------------------------
# In-process server
# ---------------------------------------------------------------------------------------------


class FakeSendGrid:
    """The fake SendGrid API served from a background thread of this process."""

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = TEST_API_KEY,
        record: str = "full",
        on_shutdown=None,
    ) -> None:
        self._state = _State(api_key, record)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._on_shutdown = on_shutdown
        self._lock = threading.Lock()

    # lifecycle
    def start(self) -> FakeSendGrid:
        with self._lock:
            if self._server is not None:
                return self
            self._state.stopping = False
            self._server = _Server(self._port, self._state, self._shutdown_requested)
            self._thread = threading.Thread(
                target=self._server.serve,
                name=f"fake-sendgrid-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            self._state.begin_stop()
            server.stop_serving()
            if thread is not None:
                thread.join(timeout=10)
            server.wait_until_idle(timeout=5)
            server.close_all_connections()
            server.server_close()

    def _shutdown_requested(self) -> None:
        callback = self._on_shutdown or self.stop
        threading.Thread(target=callback, daemon=True).start()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise FakeSendGridError("the fake SendGrid server is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_key(self) -> str:
        return self._state.configured_api_key

    @property
    def record(self) -> str:
        return self._state.record

    @property
    def control(self) -> FakeSendGridControl:
        """An HTTP control client for this server (exercises the /_fake/ endpoints)."""
        return FakeSendGridControl(self.url)

    # control API
    def script(self, responses: list[dict[str, Any]]) -> None:
        """Queue behaviours for the next /v3/mail/send requests (one each, in order)."""
        self._state.script(responses)

    def release(self) -> None:
        """Release every request currently held by a scripted hang."""
        self._state.release()

    def wait_for(self, event: str, timeout: float = 10.0, n: int | None = None) -> bool:
        """Block until ``event`` count >= n (default 1); False on timeout."""
        return self._state.wait_for(event, timeout, n)

    def accepted(self) -> list[dict[str, Any]]:
        """Accepted sends: ``{"x_message_id", "recipients", "payload"}`` (no payload unless
        record='full'); raises FakeSendGridError with record='counts'."""
        return self._state.accepted()

    def recipients(self) -> list[str]:
        """Every accepted ``to`` address, lowercased, in order of acceptance."""
        return self._state.recipients()

    def stats(self) -> dict[str, Any]:
        """Counters; ``responses`` maps int status codes to counts."""
        return self._state.stats()

    def reset(self) -> None:
        """Forget everything: records, counters, script, suppressions, batches, modes."""
        self._state.reset()

    def set_suppressions(self, kind: str, entries: list[dict[str, Any]]) -> None:
        """Replace a suppression list; see SUPPRESSION_KINDS."""
        self._state.set_suppressions(kind, entries)

    def suppression_requests(self) -> list[dict[str, Any]]:
        """``{"kind", "path", "query", "status"}`` for each suppression-list GET."""
        return self._state.suppression_requests()

    def set_mode(self, forbidden: bool | None = None, api_key: str | None = None) -> None:
        """``forbidden=True``: mail sends get 403 (unverified sender); ``api_key``: change key."""
        self._state.set_mode(forbidden=forbidden, api_key=api_key)


# ---------------------------------------------------------------------------------------------
# HTTP control client and the separate process
# ---------------------------------------------------------------------------------------------


def _check_loopback(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the fake SendGrid control client only talks to loopback: {url!r}")
    return url.rstrip("/")


class FakeSendGridControl:
    """Controls a fake server (in this process or another) through its /_fake/ endpoints."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = _check_loopback(url)
        self.timeout = timeout
        # An empty ProxyHandler: never route loopback traffic through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(
        self,
        method: str,
        name: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = f"{self.url}/_fake/{name}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")
            raise FakeSendGridError(f"{method} /_fake/{name}: {exc.code} {message}") from None
        return json.loads(raw) if raw else None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def script(self, responses: list[dict[str, Any]]) -> None:
        self._call("POST", "script", {"responses": responses})

    def release(self) -> None:
        self._call("POST", "release")

    def wait_for(self, event: str, timeout: float = 10.0, n: int | None = None) -> bool:
        query: dict[str, Any] = {"event": event, "timeout": timeout}
        if n is not None:
            query["n"] = n
        return bool(self._call("GET", "wait", query=query, timeout=timeout + 10)["ok"])

    def accepted(self) -> list[dict[str, Any]]:
        return self._call("GET", "accepted")

    def recipients(self) -> list[str]:
        return self._call("GET", "recipients")

    def stats(self) -> dict[str, Any]:
        stats = self._call("GET", "stats")
        stats["responses"] = {int(k): v for k, v in stats["responses"].items()}
        return stats

    def reset(self) -> None:
        self._call("POST", "reset")

    def set_suppressions(self, kind: str, entries: list[dict[str, Any]]) -> None:
        self._call("POST", "suppressions", {"kind": kind, "entries": entries})

    def suppression_requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "suppression_requests")

    def set_mode(self, forbidden: bool | None = None, api_key: str | None = None) -> None:
        body: dict[str, Any] = {}
        if forbidden is not None:
            body["forbidden"] = forbidden
        if api_key is not None:
            body["api_key"] = api_key
        self._call("POST", "mode", body)

    def shutdown(self) -> None:
        """Ask the server to stop (ends a separate fake process)."""
        self._call("POST", "shutdown")


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class FakeSendGridProcess(FakeSendGridControl):
    """A fake server running in a child process; has every FakeSendGridControl method."""

    def __init__(self, process: subprocess.Popen, url: str) -> None:
        super().__init__(url)
        self.process = process
        self._finalizer = weakref.finalize(self, _terminate, process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM the process, wait for it (kill after 10 s); return its exit code."""
        self._finalizer()
        return self.process.returncode

    def __enter__(self) -> FakeSendGridProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _read_line(stream, timeout: float) -> bytes:
    """Read one line from a pipe without blocking past ``timeout`` seconds."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def start_fake_sendgrid_process(
    record: str = "full",
    api_key: str = TEST_API_KEY,
    *,
    port: int = 0,
    timeout: float = 10.0,
) -> FakeSendGridProcess:
    """Start ``python tests/fake_sendgrid.py`` and wait (up to ``timeout``) for its READY line.

    The child exits when stopped, on SIGTERM/SIGINT, or when this process dies (its stdin
    pipe closes).
    """
    if record not in RECORD_MODES:
        raise ValueError(f"record must be one of {RECORD_MODES}, got {record!r}")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--port",
        str(port),
        "--record",
        record,
        "--api-key",
        api_key,
        "--exit-on-stdin-eof",
    ]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = _read_line(process.stdout, timeout)
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("READY http://"):
        _terminate(process)
        raise RuntimeError(f"fake SendGrid process did not become ready: {text!r}")
    return FakeSendGridProcess(process, text.split(" ", 1)[1])


# ---------------------------------------------------------------------------------------------
# The official request schema
# ---------------------------------------------------------------------------------------------


def default_spec_dir() -> Path:
    """Where SendGrid's OpenAPI files are: $SENDGRID_OPENAPI_DIR or ../shared/reference/..."""
    override = os.environ.get("SENDGRID_OPENAPI_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "reference" / "sendgrid-openapi"


MAIL_SEND_SCHEMA_POINTER = "/components/requestBodies/PostMailSend/content/application~1json/schema"


def load_mail_send_schema(spec_path: str | os.PathLike[str] | None = None, *, patch_quirks=True):
    """A jsonschema validator for SendGrid's POST /v3/mail/send request body, or None if the
    spec file (tsg_mail_v3.json) is absent.  Internal $refs resolve through a referencing
    registry that holds the whole spec document."""
    path = Path(spec_path) if spec_path is not None else default_spec_dir() / "tsg_mail_v3.json"
    if not path.is_file():
        return None
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = json.loads(path.read_text(encoding="utf-8"))
    if patch_quirks:
        schema = spec["components"]["requestBodies"]["PostMailSend"]["content"]
        properties = schema["application/json"]["schema"]["properties"]
        # Spec quirk: message-level custom_args is typed "string", but the API takes (and
        # sendgrid.helpers.mail sends) an object of string values, like personalization
        # custom_args.  Patch it so well-formed payloads validate.
        properties["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    uri = "urn:sendgrid-oai:tsg_mail_v3.json"
    registry = Registry().with_resource(uri, DRAFT202012.create_resource(spec))
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"{uri}#{MAIL_SEND_SCHEMA_POINTER}",
    }
    return jsonschema.Draft202012Validator(
        root,
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake SendGrid v3 API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--record", choices=RECORD_MODES, default="full")
    parser.add_argument("--api-key", default=TEST_API_KEY)
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when stdin reaches end of file (the parent process went away)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        # Set the event from another thread: a signal handler must not take the lock that the
        # interrupted main thread may be holding.
        threading.Thread(target=stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    fake = FakeSendGrid(args.port, api_key=args.api_key, record=args.record, on_shutdown=stop.set)
    fake.start()
    try:
        if args.exit_on_stdin_eof:

            def watch_stdin() -> None:
                # os.read on the raw descriptor: a daemon thread blocked inside a buffered
                # reader would abort interpreter shutdown.
                with contextlib.suppress(OSError):
                    while os.read(0, 65536):
                        pass
                stop.set()

            threading.Thread(target=watch_stdin, daemon=True).start()
        sys.stdout.write(f"READY {fake.url}\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
