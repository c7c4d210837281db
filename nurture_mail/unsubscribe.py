"""Unsubscribe tokens: opaque, signed, and never a guessable database id.

A token is the candidate's random `token_key` plus an HMAC-SHA256 tag made with the
configured secret, both base64url. Forging one needs the secret; a valid token reveals
nothing but itself.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

TAG_BYTES = 12


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=16)  # one secret per install
def _signer(secret: str) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) keyed with `secret`, as the two SHA-256 states after the key
    block: each tag copies them instead of keying again, with no `hmac.HMAC` object a token
    (0.7 against 1.3 us a tag; `tests/test_unsubscribe.py` holds it to `hmac`)."""
    key = secret.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(key.translate(_INNER_PAD)), hashlib.sha256(key.translate(_OUTER_PAD)))


_BLOCK = 64  # SHA-256's block size
_INNER_PAD = bytes(x ^ 0x36 for x in range(256))
_OUTER_PAD = bytes(x ^ 0x5C for x in range(256))


def _tag(secret: str, key: bytes) -> bytes:
    inner, outer = _signer(secret)
    inner, outer = inner.copy(), outer.copy()
    inner.update(key)
    outer.update(inner.digest())
    return outer.digest()[:TAG_BYTES]


# base64url without padding, by the C codec (base64.urlsafe_b64encode is a Python wrapper).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def make_token(secret: str, token_key: str) -> str:
    key = bytes.fromhex(token_key)
    return binascii.b2a_base64(key + _tag(secret, key), newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def read_token(secret: str, token: str) -> str | None:
    """The token_key inside a genuine token, or None for anything forged or malformed."""
    if not token or len(token) > 64:
        return None
    try:
        raw = _unb64(token)
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= TAG_BYTES:
        return None
    key, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(secret, key)):
        return None
    return key.hex()


def unsubscribe_links(base_url: str, mailto_address: str, token: str) -> tuple[str, str]:
    """(https link, mailto link) for the List-Unsubscribe header and the footer."""
    https = base_url.rstrip("/") + "/" + token
    # A token is URL-safe base64 (nothing to escape); quote() walks it byte by byte.
    subject = "unsubscribe%20" + token if _TOKEN_CHARS.issuperset(token) else quote("unsubscribe " + token)
    mailto = f"mailto:{mailto_address}?subject={subject}"
    return https, mailto
