"""Signed links: the fast signing path makes exactly the tokens itsdangerous makes."""
# Not both_engines: signed links, no database.

from __future__ import annotations

import pytest
from itsdangerous import Signer

from newsletter.errors import TokenError
from newsletter.tokens import PURPOSES, LinkSigner

SECRET = "test-secret-key-for-signing-links-0123456789"


@pytest.mark.parametrize("purpose", PURPOSES)
def test_sign_is_itsdangerous_format(purpose):
    signer = LinkSigner(SECRET)
    reference = Signer(SECRET, salt=f"newsletter.{purpose}", sep=".")
    for subscriber_id in (1, 7, 42, 999, 10**6, 2**31 + 5, 123456789012):
        token = signer.sign(subscriber_id, purpose)
        assert token == reference.sign(str(subscriber_id)).decode("ascii")
        assert reference.unsign(token.encode()) == str(subscriber_id).encode()
        assert signer.verify(token, purpose) == subscriber_id


def test_purposes_and_secrets_do_not_mix():
    signer = LinkSigner(SECRET)
    token = signer.sign(5, "unsubscribe")
    with pytest.raises(TokenError):
        signer.verify(token, "preferences")
    with pytest.raises(TokenError):
        LinkSigner(SECRET + "x").verify(token, "unsubscribe")
    # Signing many times from the one cached HMAC never carries state from one token over.
    assert signer.sign(5, "unsubscribe") == token
    assert [signer.sign(i, "preferences") for i in (3, 4, 3)][0] == signer.sign(3, "preferences")
