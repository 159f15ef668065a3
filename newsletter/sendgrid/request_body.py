"""A mail-send body as the bytes that go out, checked against SendGrid's size limits.

`encode` writes the body as compact UTF-8 JSON with orjson (about four times faster than the
json module on a 1000-recipient body); `compress` gzips it for `delivery.sendgrid.compress`.
SendGrid's documented limits ("Mail Send limitations"; the OpenAPI description says the same of
custom args):

- the whole request must be less than 30 MB: `split` says how to send a body that is not as
  several smaller requests, and which personalizations are too large to go in any;
- a personalization's custom args (with the message-level ones) must take less than 10,000
  bytes: `personalization_problem` says so, and that recipient fails alone before the request
  leaves. (Substitutions over their own 10,000 bytes, from a name stored before names were
  limited, are left to SendGrid's 400, which fails that recipient alone just the same.)

Sizes count UTF-8 bytes of keys and values, as SendGrid does.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping

import orjson

# "The total size of your email, including attachments, must be less than 30MB": counted in
# decimal megabytes on the uncompressed JSON, the stricter of the readings (a gzipped body is
# smaller still, and the compressed file "can be no more than 30mb").
MAX_REQUEST_BYTES = 30_000_000
MAX_CUSTOM_ARGS_BYTES = 10_000  # "must be less than 10000 bytes", message level + personalization
GZIP_LEVEL = 1  # ~9x smaller at a quarter of level 6's CPU on a 1000-recipient body (bench_batch)

# A str takes at most 4 UTF-8 bytes a character: a map whose characters number less than a
# quarter of a limit is within it without encoding anything (nearly every personalization).
_MAX_UTF8_PER_CHAR = 4


def encode(body: Mapping) -> bytes:
    """The body as compact UTF-8 JSON (what the request carries)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # A lone surrogate, which orjson refuses: written as a \u escape, as the json module
        # (and so the client, before) always did.
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def compress(data: bytes) -> bytes:
    """`data` gzipped (RFC 1952), for a request sent with `Content-Encoding: gzip`."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def string_map_bytes(values: Mapping[str, str] | None) -> int:
    """UTF-8 bytes of a map's keys and values, as SendGrid counts custom args."""
    if not values:
        return 0
    return len("".join(k + v for k, v in values.items()).encode("utf-8", "surrogatepass"))


def _chars(values: Mapping[str, str] | None) -> int:
    # map(len, ...) keeps the loop in C: this runs for every personalization of the send.
    return sum(map(len, values)) + sum(map(len, values.values())) if values else 0


def personalization_problem(personalization: Mapping, message_args_bytes: int = 0) -> str | None:
    """Why SendGrid would refuse this personalization for its size, or None.

    `message_args_bytes` is the size of the body's own custom args, which count with each
    personalization's."""
    args = personalization.get("custom_args")
    if (message_args_bytes + _chars(args)) * _MAX_UTF8_PER_CHAR < MAX_CUSTOM_ARGS_BYTES:
        return None  # surely within the limit: the usual case, without encoding anything
    size = message_args_bytes + string_map_bytes(args)
    if size >= MAX_CUSTOM_ARGS_BYTES:
        return (
            f"its custom args take {size:,} bytes; SendGrid takes less than "
            f"{MAX_CUSTOM_ARGS_BYTES:,} a recipient"
        )
    return None


def split(body: Mapping, limit: int = MAX_REQUEST_BYTES) -> tuple[list[list[int]], list[int]]:
    """How to send `body`, whose encoding is `limit` bytes or more, as requests under `limit`:
    groups of personalization indexes, in order, each as many as fit; and the indexes of those
    that fit in no request even alone.

    Exact, not estimated: compact JSON of a list is its items' JSON joined by commas, so a
    request's size is the size of the body without personalizations plus its items and commas.
    """
    items = [len(encode(p)) for p in body["personalizations"]]
    base = len(encode({**body, "personalizations": []}))
    groups: list[list[int]] = []
    alone: list[int] = []
    group: list[int] = []
    size = base
    for index, item in enumerate(items):
        if base + item >= limit:
            alone.append(index)
            continue
        added = item + (1 if group else 0)  # the comma before it
        if group and size + added >= limit:
            groups.append(group)
            group, size, added = [], base, item
        group.append(index)
        size += added
    if group:
        groups.append(group)
    return groups, alone
