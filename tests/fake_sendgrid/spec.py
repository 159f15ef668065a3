"""SendGrid's official OpenAPI description: where the files are, and validators built from them.

The files are in `openapi/` beside this module (copied unchanged from twilio/sendgrid-oai, with
their licence); `SENDGRID_OPENAPI_DIR` points at another copy. Two validators of the mail-send body
come from the same document, with the same quirk patched:

- `load_mail_send_schema()`: a `jsonschema` validator, for tests that check payloads themselves
  (its errors carry `.path` and `.message`);
- `mail_send_validator()`: the same schema compiled by `jsonschema_rs`, which the server runs on
  every request. It lists every error like the other but in about 1 ms for a 1000-recipient body
  instead of 150 ms, so the fake stays out of the send benchmark's timings.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

MAIL_SPEC = "tsg_mail_v3.json"
SUPPRESSIONS_SPEC = "tsg_suppressions_v3.json"
MAIL_SEND_SCHEMA_POINTER = "/components/requestBodies/PostMailSend/content/application~1json/schema"
_MAIL_URI = "urn:sendgrid-oai:tsg_mail_v3.json"


def default_spec_dir() -> Path:
    """Where SendGrid's OpenAPI files are: $SENDGRID_OPENAPI_DIR, or the copy beside this module."""
    override = os.environ.get("SENDGRID_OPENAPI_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "openapi"


@functools.cache
def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def read_spec(name: str) -> dict[str, Any]:
    """One of SendGrid's OpenAPI documents (a fresh copy: callers may change it)."""
    path = default_spec_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"SendGrid's OpenAPI file {name} is not in {path.parent}")
    return copy.deepcopy(_read(path.resolve()))


def mail_send_body_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The request-body schema of POST /v3/mail/send inside the mail document."""
    return spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"][
        "schema"
    ]


def _patch_quirks(spec: dict[str, Any]) -> dict[str, Any]:
    # Spec quirk: message-level custom_args is typed "string", but the API takes (and
    # sendgrid.helpers.mail sends) an object of string values, like personalization
    # custom_args. Patch it so well-formed payloads validate.
    properties = mail_send_body_schema(spec)["properties"]
    properties["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    return spec


def _root_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"{_MAIL_URI}#{MAIL_SEND_SCHEMA_POINTER}",
    }


def load_mail_send_schema(spec_path: str | os.PathLike[str] | None = None, *, patch_quirks=True):
    """A jsonschema validator for SendGrid's POST /v3/mail/send request body, or None if the
    spec file (tsg_mail_v3.json) is absent.  Internal $refs resolve through a referencing
    registry that holds the whole spec document."""
    path = Path(spec_path) if spec_path is not None else default_spec_dir() / MAIL_SPEC
    if not path.is_file():
        return None
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = copy.deepcopy(_read(path.resolve()))
    if patch_quirks:
        _patch_quirks(spec)
    registry = Registry().with_resource(_MAIL_URI, DRAFT202012.create_resource(spec))
    return jsonschema.Draft202012Validator(
        _root_schema(),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


@functools.cache
def mail_send_validator():
    """The patched mail-send schema compiled by jsonschema_rs (raises if the spec is absent).

    Addresses are checked as SendGrid reads them: a domain with a dot, no display name
    ("Ana <ana@example.org>") and no IP literal in the `email` field."""
    import jsonschema_rs

    spec = _patch_quirks(read_spec(MAIL_SPEC))
    return jsonschema_rs.Draft202012Validator(
        _root_schema(),
        registry=jsonschema_rs.Registry([(_MAIL_URI, spec)]),
        validate_formats=True,
        email_options=jsonschema_rs.EmailOptions(
            require_tld=True, allow_domain_literal=False, allow_display_text=False
        ),
    )


@functools.cache
def mail_send_properties() -> tuple[str, ...]:
    """The top-level fields of a mail-send body, in the spec's order (errors are listed so)."""
    return tuple(mail_send_body_schema(read_spec(MAIL_SPEC))["properties"])


@functools.cache
def suppression_query(kind: str) -> tuple[frozenset[str], Any]:
    """For GET /v3/suppression/{kind}: the names of its integer query parameters, and a
    jsonschema_rs validator of the query as an object (parameter name → value)."""
    import jsonschema_rs

    spec = read_spec(SUPPRESSIONS_SPEC)
    shared = spec["components"]["parameters"]
    properties = {}
    for parameter in spec["paths"][f"/v3/suppression/{kind}"]["get"]["parameters"]:
        if "$ref" in parameter:
            parameter = shared[parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["in"] == "query":
            properties[parameter["name"]] = parameter["schema"]
    integers = frozenset(name for name, s in properties.items() if s.get("type") == "integer")
    schema = {"type": "object", "properties": properties}
    return integers, jsonschema_rs.Draft202012Validator(schema)
