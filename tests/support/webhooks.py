"""SendGrid's signed event webhook as the tests send it: a key pair made here, batches signed
exactly as SendGrid signs them, their headers, and posting them to `/webhooks/sendgrid`."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.sendgrid.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER


def signed_now(offset: int = 0) -> str:
    """A signature timestamp, as SendGrid sends it: Unix seconds, now (give or take `offset`)."""
    return str(int(time.time()) + offset)


def make_key_pair():
    """(private key, public key as SendGrid shows it: base64 DER)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode("ascii")


def sign(private, body: bytes, timestamp: str) -> str:
    """Exactly as SendGrid signs: ECDSA P-256 / SHA-256 over timestamp + raw body, base64 DER."""
    signature = private.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def signed_batch(private, events: list, timestamp: str | None = None) -> tuple[bytes, dict]:
    """A batch of events as SendGrid posts it: (body, headers with signature and timestamp)."""
    body = json.dumps(events).encode("utf-8")
    timestamp = timestamp or signed_now()
    return body, {
        SIGNATURE_HEADER: sign(private, body, timestamp),
        TIMESTAMP_HEADER: timestamp,
        "Content-Type": "application/json",
    }


def post_events(client, private, events: list[dict]):
    """POST a batch signed now, as SendGrid would."""
    body, headers = signed_batch(private, events)
    return client.post("/webhooks/sendgrid", data=body, headers=headers)
