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
from urllib.parse import quote

TAG_BYTES = 12


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=16)  # one secret per install
def _signer(secret: str) -> hmac.HMAC:
    """The keyed HMAC state before any message: copied per token instead of keying OpenSSL
    again (a third of the CPU of `hmac.digest`, once per email)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _tag(secret: str, key: bytes) -> bytes:
    signer = _signer(secret).copy()
    signer.update(key)
    return signer.digest()[:TAG_BYTES]


def make_token(secret: str, token_key: str) -> str:
    key = bytes.fromhex(token_key)
    return _b64(key + _tag(secret, key))


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
