"""Signing SendGrid event-webhook batches the way SendGrid does, with a key pair made here, and
posting them to the preference centre's `/webhooks/sendgrid`."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.sendgrid.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER


def make_key_pair():
    """(private key, public key as SendGrid shows it: base64 DER)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode("ascii")


def sign(private, body: bytes, timestamp: str) -> str:
    """ECDSA P-256 / SHA-256 over timestamp + raw body, base64 DER, as SendGrid signs."""
    signature = private.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def post_events(client, private, events: list[dict]):
    """POST a batch signed now, as SendGrid would."""
    body = json.dumps(events).encode("utf-8")
    timestamp = str(int(time.time()))
    headers = {SIGNATURE_HEADER: sign(private, body, timestamp), TIMESTAMP_HEADER: timestamp}
    return client.post(
        "/webhooks/sendgrid", data=body, headers=headers, content_type="application/json"
    )
