"""Signed links: a token names one subscriber and one purpose, signed with the secret key.

One salt per purpose, so an unsubscribe token can never be used as a preferences token and the
other way round. Links do not expire: an unsubscribe link in a two-year-old email must still work.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from binascii import b2a_base64
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from itsdangerous import BadSignature, Signer

from .config import DEV_SECRET, Environment
from .errors import TokenError

Purpose = Literal["preferences", "unsubscribe"]
PURPOSES: tuple[Purpose, ...] = ("preferences", "unsubscribe")
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class LinkSigner:
    """Signs and verifies subscriber tokens; one instance per secret (key derivation is cached)."""

    def __init__(self, secret: str):
        if not secret:
            raise ValueError("a secret is required")
        # A Signer per purpose, built once; it verifies, and defines the token format.
        self._signers = {
            purpose: Signer(secret, salt=f"newsletter.{purpose}", sep=".") for purpose in PURPOSES
        }
        # Signing is on the send's hot path (two tokens a recipient): Signer.sign derives the
        # key and builds an HMAC on every call (~4 µs); an HMAC keyed once per purpose and
        # copied costs half that, for the same token (tests/test_tokens.py compares the two).
        self._macs = {
            purpose: hmac.new(signer.derive_key(), digestmod=hashlib.sha1)
            for purpose, signer in self._signers.items()
        }

    def sign(self, subscriber_id: int, purpose: Purpose) -> str:
        value = str(subscriber_id)
        mac = self._macs[purpose].copy()
        mac.update(value.encode("ascii"))
        # itsdangerous's base64_encode: URL-safe alphabet, padding stripped.
        signature = b2a_base64(mac.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")
        return f"{value}.{signature.decode('ascii')}"

    def verify(self, token: str, purpose: Purpose) -> int:
        """The subscriber id in a valid token; TokenError for anything forged or altered."""
        signer = self._signers.get(purpose)
        if signer is None:
            raise TokenError(f"unknown link purpose {purpose!r}")
        try:
            value = signer.unsign(token.encode("ascii")).decode("ascii")
        except (BadSignature, UnicodeError, ValueError):
            raise TokenError(
                "this link is not valid: it may have been cut short or altered"
            ) from None
        if not value.isdigit():
            raise TokenError("this link is not valid")
        return int(value)


def signer_from_env(
    allow_dev_key: bool, environment: Environment | None = None
) -> tuple[LinkSigner, bool]:
    """The signer for NEWSLETTER_SECRET_KEY (from `environment`, by default the process's); with
    `allow_dev_key`, a development key when unset.

    Returns (signer, using_dev_key) so the caller can warn that links are not production-safe.
    """
    environment = environment or Environment.read()
    key = environment.signing_key(required=not allow_dev_key)
    if key:
        return LinkSigner(key), False
    return LinkSigner(DEV_SECRET), True


# The preference centre's routes (`newsletter serve`); the links in every email point here.
PREFERENCES_PATH = "/preferences/"
UNSUBSCRIBE_PATH = "/unsubscribe/"


@functools.lru_cache(maxsize=64)
def _around_token(base: str, route: str) -> tuple[str, str]:
    """(before, after) the token in a link: it ends the base URL's path, ahead of any query or
    fragment (the settings refuse those in base URLs; a library caller may still pass one)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + route
    before = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return before, urlunsplit(("", "", "", parts.query, parts.fragment))


def preferences_url(base: str, signer: LinkSigner, subscriber_id: int) -> str:
    before, after = _around_token(base, PREFERENCES_PATH)
    return f"{before}{signer.sign(subscriber_id, 'preferences')}{after}"


def unsubscribe_url(base: str, signer: LinkSigner, subscriber_id: int) -> str:
    """Also the List-Unsubscribe target: a POST here unsubscribes in one click (RFC 8058)."""
    before, after = _around_token(base, UNSUBSCRIBE_PATH)
    return f"{before}{signer.sign(subscriber_id, 'unsubscribe')}{after}"
