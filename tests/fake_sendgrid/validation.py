"""Would SendGrid accept this mail-send body? The official schema decides first; then the few
rules SendGrid applies that the schema does not express. Problems are reported the way the API
reports them: every one at once, as `{"message", "field", "help"}` objects in SendGrid's words,
in the spec's order of top-level fields.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterator
from typing import Any

from .spec import mail_send_properties, mail_send_validator
from .state import is_int

HELP_BASE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."

# Limits from SendGrid's v3 Mail Send documentation that the schema does not hold.
MAX_RECIPIENTS = 1000  # to + cc + bcc over the whole request
MAX_SUBSTITUTION_BYTES = 10_000  # per personalization, keys + values, UTF-8
MAX_CUSTOM_ARGS_BYTES = 10_000  # message + personalization custom_args must be *less* than this
MAX_SEND_AT_AHEAD_SECONDS = 72 * 3600  # sends can be scheduled at most 72 hours ahead
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
# SendGrid wants the parts in this order; any other type may follow them.
_CONTENT_RANK = {"text/plain": 0, "text/x-amp-html": 1, "text/html": 2}

# SendGrid's own messages. Those with the JSON example hold literal braces: fill them with
# str.replace, not str.format.
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

# What the schema finds, in SendGrid's words: (field with indexes as *, schema keyword) → message.
# The keyword None stands for any keyword; a wrong type always reads "Invalid type. ...", and a
# finding without an entry keeps the validator's own message.
_SCHEMA_WORDING: dict[tuple[str, str | None], str] = {
    ("from", "required"): MSG_FROM_REQUIRED,
    ("from.email", "required"): MSG_FROM_REQUIRED,
    ("from.email", "format"): MSG_FROM_INVALID,
    ("personalizations", "required"): MSG_PERSONALIZATIONS_REQUIRED,
    ("personalizations", "maxItems"): MSG_PERSONALIZATIONS_LIMIT,
    ("personalizations.*.to", "required"): MSG_TO_REQUIRED,
    ("personalizations.*.from.email", None): MSG_FROM_INVALID,
    ("subject", "minLength"): MSG_SUBJECT_REQUIRED,
    ("content.*.type", None): MSG_CONTENT_TYPE,
    ("content.*.value", None): MSG_CONTENT_VALUE,
    ("reply_to.email", None): MSG_REPLY_TO_INVALID,
    ("categories", "maxItems"): MSG_CATEGORIES_LIMIT,
    ("categories", "uniqueItems"): MSG_CATEGORY_DUPLICATE,
    ("categories.*", "maxLength"): MSG_CATEGORY_LENGTH,
    ("attachments.*.content", None): MSG_ATTACHMENT_CONTENT,
    ("attachments.*.filename", None): MSG_ATTACHMENT_FILENAME,
    ("attachments.*.disposition", None): "The disposition must be either inline or attachment.",
    ("ip_pool_name", None): "The ip_pool_name must be a string of 2 to 64 characters.",
}
for _kind in ("to", "cc", "bcc"):
    _SCHEMA_WORDING[(f"personalizations.*.{_kind}.*.email", "required")] = (
        MSG_ADDRESS_OBJECT.replace("{kind}", _kind)
    )
    _SCHEMA_WORDING[(f"personalizations.*.{_kind}.*.email", "format")] = MSG_ADDRESS_INVALID
# SendGrid names the missing address, not the missing object.
_REPORTED_AS = {"from": "from.email"}


def validate_mail_send(
    payload: Any, known_batch_ids: set[str] | None = None, *, now: float | None = None
) -> list[dict[str, Any]]:
    """Return SendGrid-style error objects (``message``, ``field``, ``help``) for ``payload``.

    An empty list means SendGrid would accept the payload.  ``known_batch_ids`` is the set of
    batch ids created through /v3/mail/batch; ``None`` checks only the type of ``batch_id``.
    """
    if not isinstance(payload, dict):
        # A body that is JSON but not an object gets the same answer as one that is not JSON.
        return [{"message": "Bad Request", "field": None, "help": None}]
    now = time.time() if now is None else now
    problems = [*_schema_problems(payload), *_sendgrid_rules(payload, known_batch_ids, now)]
    problems.sort(key=_position)
    return [
        {"message": message, "field": field, "help": HELP_BASE + _anchor(field)}
        for field, message in problems
    ]


def _position(problem: tuple[str, str]) -> tuple[int, list[tuple[int, int | str]]]:
    """Where a problem's field is: top-level fields in the spec's order, then the path
    (indexes as numbers); problems at the same place keep their order."""
    top, *rest = problem[0].split(".")
    order = mail_send_properties()
    index = order.index(top) if top in order else len(order)
    return index, [(0, int(part)) if part.isdigit() else (1, part) for part in rest]


def _anchor(field: str) -> str:
    return ".".join(part for part in field.split(".") if not part.isdigit())


def _schema_problems(payload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for error in mail_send_validator().iter_errors(payload):
        path = list(error.instance_path)
        keyword = error.kind.name
        if keyword == "required":
            path.append(error.kind.property)
        field = ".".join(str(part) for part in path)
        if keyword == "type":
            expected = "/".join(error.kind.types)
            yield field, _type_message(expected, error.instance)
            continue
        pattern = ".".join("*" if isinstance(part, int) else part for part in path)
        wording = _SCHEMA_WORDING.get((pattern, keyword)) or _SCHEMA_WORDING.get((pattern, None))
        if wording is None:
            yield field, error.message
        else:
            count = len(error.instance) if isinstance(error.instance, (list, dict)) else 0
            yield _REPORTED_AS.get(field, field), wording.replace("{n}", str(count))


def _sendgrid_rules(
    payload: dict[str, Any], known_batch_ids: set[str] | None, now: float
) -> list[tuple[str, str]]:
    """What SendGrid refuses although the schema allows it, as (field, message) pairs. Each rule
    skips values of the wrong type: the schema has reported those already. Field names are built
    only for a problem: this runs for every personalization of every request."""
    problems: list[tuple[str, str]] = []
    add = problems.append
    template = payload.get("template_id")
    has_template = isinstance(template, str) and template != ""
    personalizations = payload.get("personalizations")
    plist = personalizations if isinstance(personalizations, list) else []

    # Errors page, message.personalizations: "must have at least one personalization" (the spec
    # sets no minItems).
    if personalizations == []:
        add(("personalizations", MSG_PERSONALIZATIONS_REQUIRED))

    message_args = payload.get("custom_args")
    message_args_size = _string_map_size(message_args) if isinstance(message_args, dict) else 0
    seen_in_request: set[str] = set()
    total = 0
    for i, pers in enumerate(plist):
        if isinstance(pers, dict):
            total += _recipient_rules(add, i, pers, seen_in_request)
            _personalization_rules(add, i, pers, message_args_size, now)
    # Mail Send limitations: at most 1000 recipients (to + cc + bcc) per request; the spec caps
    # only the number of personalizations and of cc and bcc each.
    if total > MAX_RECIPIENTS:
        add(("personalizations", MSG_RECIPIENT_LIMIT.format(n=total)))
    # Errors page, message.custom_args: message level plus personalization must stay under
    # 10,000 bytes; checked per personalization above, here when no personalization has any.
    if message_args_size >= MAX_CUSTOM_ARGS_BYTES and not any(
        isinstance(p, dict) and "custom_args" in p for p in plist
    ):
        add(("custom_args", MSG_CUSTOM_ARGS_SIZE.format(n=message_args_size)))

    # Errors page, message.subject: a message-level subject, or one in every personalization,
    # unless a template supplies it.
    if "subject" not in payload and not has_template:
        every = bool(plist) and all(
            isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"]
            for p in plist
        )
        if not every:
            add(("subject", MSG_SUBJECT_REQUIRED))

    # Errors page, message.content: at least one content block unless a template supplies it.
    content = payload.get("content")
    if content in (None, []) and not has_template:
        add(("content", MSG_CONTENT_REQUIRED))
    if isinstance(content, list):
        _content_order(add, content)

    if isinstance(payload.get("headers"), dict):
        _header_rules(add, "headers", payload["headers"])
    if is_int(payload.get("send_at")):
        _send_at_rule(add, "send_at", payload["send_at"], now)

    # Errors page, message.batch_id: a batch id must have been created with /v3/mail/batch.
    batch_id = payload.get("batch_id")
    if (
        isinstance(batch_id, str)
        and known_batch_ids is not None
        and batch_id not in known_batch_ids
    ):
        add(("batch_id", MSG_BATCH_ID.format(batch_id=batch_id)))

    if isinstance(payload.get("attachments"), list):
        _attachment_rules(add, payload["attachments"])
    return problems


def _recipient_rules(add, i: int, pers: dict[str, Any], seen_in_request: set[str]) -> int:
    """Check the addresses of personalization ``i``; return how many it has."""
    seen_here: set[str] = set()
    count = 0
    for kind in ("to", "cc", "bcc"):
        items = pers.get(kind)
        if not isinstance(items, list):
            continue
        # Errors page, message.personalizations.to (and .cc, .bcc): a list that is given holds
        # at least one address (the spec sets no minItems).
        if not items:
            message = MSG_TO_REQUIRED if kind == "to" else MSG_LIST_REQUIRED.replace("{kind}", kind)
            add((f"personalizations.{i}.{kind}", message))
        count += len(items)
        for j, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                continue
            # Errors page, message.personalizations.to.name: no ";" or "," in a name.
            name = item.get("name")
            if isinstance(name, str) and (";" in name or "," in name):
                add((f"personalizations.{i}.{kind}.{j}.name", MSG_NAME_CHARS.format(kind=kind)))
            # Errors page, recipient errors: an address appears once in a personalization (to,
            # cc and bcc together) and once in the whole request, case ignored.
            email = item["email"]
            key = email.lower()
            if key in seen_here:
                duplicate = MSG_DUPLICATE_IN_PERSONALIZATION.format(
                    email=email, field=f"personalizations.{i}.{kind}"
                )
                add((f"personalizations.{i}", duplicate))
            elif key in seen_in_request:
                duplicate = MSG_DUPLICATE_IN_REQUEST.format(email=email)
                add((f"personalizations.{i}.{kind}.{j}.email", duplicate))
            seen_here.add(key)
    seen_in_request |= seen_here
    return count


def _personalization_rules(
    add, i: int, pers: dict[str, Any], message_args_size: int, now: float
) -> None:
    if isinstance(pers.get("headers"), dict):
        _header_rules(add, f"personalizations.{i}.headers", pers["headers"])
    # Mail Send limitations: substitutions take at most 10,000 bytes per personalization (the
    # spec caps only the number of keys).
    substitutions = pers.get("substitutions")
    if isinstance(substitutions, dict):
        size = _string_map_size(substitutions)
        if size > MAX_SUBSTITUTION_BYTES:
            add((f"personalizations.{i}.substitutions", MSG_SUBSTITUTIONS_SIZE.format(n=size)))
    custom_args = pers.get("custom_args")
    if isinstance(custom_args, dict):
        # Errors page, message.custom_args: values are strings (the spec leaves the values of
        # personalization custom_args untyped) and, with the message-level ones, take less than
        # 10,000 bytes.
        for key, value in custom_args.items():
            if not isinstance(value, str):
                add((f"personalizations.{i}.custom_args.{key}", _type_message("string", value)))
        size = message_args_size + _string_map_size(custom_args)
        if size >= MAX_CUSTOM_ARGS_BYTES:
            add((f"personalizations.{i}.custom_args", MSG_CUSTOM_ARGS_SIZE.format(n=size)))
    if is_int(pers.get("send_at")):
        _send_at_rule(add, f"personalizations.{i}.send_at", pers["send_at"], now)


def _header_rules(add, field: str, headers: dict[str, Any]) -> None:
    # Errors page, message.headers: header values are strings (the spec leaves them untyped),
    # and the reserved headers listed in the spec's description may not be set.
    for name, value in headers.items():
        if name.lower() in _RESERVED_LOWER:
            add((f"{field}.{name}", MSG_RESERVED_HEADER))
        elif not isinstance(value, str):
            add((f"{field}.{name}", _type_message("string", value)))


def _send_at_rule(add, field: str, send_at: int, now: float) -> None:
    # Errors page, message.send_at: a send is scheduled at most 72 hours ahead (in the spec's
    # description only).
    if send_at > now + MAX_SEND_AT_AHEAD_SECONDS:
        add((field, MSG_SEND_AT_AHEAD))


def _content_order(add, content: list[Any]) -> None:
    # Errors page, message.content.type: text/plain first, then text/x-amp-html, then text/html.
    highest = -1
    for i, item in enumerate(content):
        ctype = item.get("type") if isinstance(item, dict) else None
        if not isinstance(ctype, str) or not ctype:
            continue
        rank = _CONTENT_RANK.get(ctype.lower(), 3)
        if rank < highest:
            add((f"content.{i}.type", MSG_CONTENT_ORDER))
        highest = max(highest, rank)


def _attachment_rules(add, attachments: list[Any]) -> None:
    for i, item in enumerate(attachments):
        if not isinstance(item, dict):
            continue
        # Errors page, message.attachments.content: base64 (the spec says so only in words).
        content = item.get("content")
        if isinstance(content, str) and content:
            try:
                base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                add((f"attachments.{i}.content", MSG_ATTACHMENT_CONTENT))
        # Errors page, message.attachments.content_id: required for an inline attachment.
        if item.get("disposition") == "inline" and not item.get("content_id"):
            add((f"attachments.{i}.content_id", MSG_ATTACHMENT_CONTENT_ID))


def _string_map_size(value: dict[str, Any]) -> int:
    """Size in bytes of an object's keys and values, UTF-8, as SendGrid counts it."""
    # One encode for the whole object: this runs for every personalization of every request.
    text = "".join(
        key + (item if isinstance(item, str) else json.dumps(item)) for key, item in value.items()
    )
    return len(text.encode("utf-8", "surrogatepass"))


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
