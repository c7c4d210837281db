"""Unsubscribe tokens: the hand-keyed HMAC and the C base64 are held to the standard library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pytest

from nurture_mail.unsubscribe import TAG_BYTES, make_token, read_token


# Around SHA-256's 64-byte block (a longer key is hashed first), non-ASCII, and the length
# `unsubscribe_secret` generates (43 characters).
@pytest.mark.parametrize("secret", ["", "s", "x" * 63, "x" * 64, "x" * 65, "é" * 40, "Kq-" * 14 + "z",
                                    "0123456789" * 27])
def test_a_token_is_the_key_and_its_hmac_sha256_tag_in_base64url(secret):
    for _ in range(20):
        token_key = secrets.token_hex(16)
        key = bytes.fromhex(token_key)
        tag = hmac.new(secret.encode(), key, hashlib.sha256).digest()[:TAG_BYTES]
        expected = base64.urlsafe_b64encode(key + tag).rstrip(b"=").decode()
        token = make_token(secret, token_key)
        assert token == expected
        assert read_token(secret, token) == token_key


def test_a_token_made_with_another_secret_is_refused():
    token_key = secrets.token_hex(16)
    token = make_token("one secret", token_key)
    assert read_token("another secret", token) is None
    assert read_token("one secret", token) == token_key
