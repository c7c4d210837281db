"""A rendered email plus its envelope -> the RFC 5322 bytes that are sent and stored.

multipart/alternative (text/plain, then text/html), UTF-8, CRLF, with the headers the
product promises: Message-ID, List-Unsubscribe (https + mailto) and List-Unsubscribe-Post
(RFC 8058 one-click). Built by hand for speed; `mime` holds the encoders.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import time
from datetime import datetime
from email.utils import format_datetime
from typing import NamedTuple

from .mime import (
    CrlfBytes,
    addr_spec,
    address_header,
    angle_list,
    check_msg_id,
    check_uri,
    encode_body,
    sender_header,
    unstructured,
)
from .templates import RenderedEmail

__all__ = ["Envelope", "build_message", "make_message_id"]


def make_message_id(domain: str) -> str:
    """`<moment><random>@domain` without the angle brackets: `time_prefix()` (12 hex digits),
    then 96 random bits as 16 URL-safe base64 characters."""
    return check_msg_id(f"{time_prefix()}{secrets.token_urlsafe(12)}@{addr_spec('x@' + domain)[2:]}")


_clock = time.time_ns  # read through the module, so that a test can move it


def time_prefix() -> str:
    """The moment a Message-ID is made, in milliseconds since 1970 as 12 lowercase hex digits:
    ids made later sort after earlier ones (bytewise, and in any collation: digits and a-f
    only), so the ledger's unique index on message_id grows at its end instead of taking
    each new id at a random page. With the random part after it, an id is as unguessable
    as before; what it adds is when its ledger row was made."""
    return f"{_clock() // 1_000_000:012x}"


class Envelope(NamedTuple):
    """Who a message is from and to, its ids and links: the headers beside the rendered parts
    (a tuple: one is built per email)."""

    from_name: str
    from_addr: str
    to_name: str
    to_addr: str
    reply_to: str | None
    message_id: str  # bare, as make_message_id returns it
    date: datetime  # timezone-aware
    unsubscribe_https: str
    unsubscribe_mailto: str
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


# A boundary only has to differ from every line of the parts (checked below); it carries no
# secret, so each process counts up from a random start instead of drawing every one.
def _boundary_counter() -> itertools.count:
    return itertools.count(secrets.randbits(126))


_BOUNDARIES = _boundary_counter()
if hasattr(os, "register_at_fork"):  # a forked sender (`run --workers`) draws its own

    def _reseed() -> None:
        global _BOUNDARIES
        _BOUNDARIES = _boundary_counter()

    os.register_at_fork(after_in_child=_reseed)


def _boundary() -> str:
    return f"=_{next(_BOUNDARIES):032x}"


@functools.lru_cache(maxsize=256)  # a batch is sent within a few seconds
def _date(when: datetime) -> str:
    return format_datetime(when)


def build_message(envelope: Envelope, email: RenderedEmail, boundary: str | None = None) -> CrlfBytes:
    """The complete message, CRLF throughout. Raises ValueError for an address, id or URL it cannot write.

    `boundary` fixes the MIME boundary (checked like a random one); random by default."""
    if envelope.date.utcoffset() is None:
        raise ValueError("Envelope.date must be timezone-aware")
    headers = [
        sender_header("From", envelope.from_name, envelope.from_addr),
        address_header("To", envelope.to_name, envelope.to_addr),
    ]
    if envelope.reply_to:
        headers.append(sender_header("Reply-To", "", envelope.reply_to))
    headers += [
        unstructured("Subject", email.subject),
        f"Date: {_date(envelope.date)}",
        f"Message-ID: <{check_msg_id(envelope.message_id)}>",
    ]
    if envelope.in_reply_to:
        headers.append(f"In-Reply-To: <{check_msg_id(envelope.in_reply_to)}>")
    if envelope.references:
        refs = [check_msg_id(ref) for ref in envelope.references]
        headers.append(angle_list("References", refs))
    unsubscribe = [check_uri(envelope.unsubscribe_https), check_uri(envelope.unsubscribe_mailto)]
    # http: is accepted for a local `nurture serve`; the config refuses it for any other host.
    if not unsubscribe[0].startswith(("https:", "http:")) or not unsubscribe[1].startswith("mailto:"):
        raise ValueError("List-Unsubscribe needs an https: and a mailto: URI")
    headers += [
        angle_list("List-Unsubscribe", unsubscribe, ","),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "MIME-Version: 1.0",
    ]
    text_cte, text = encode_body(email.text)
    html_cte, html = encode_body(email.html)
    # "=_" never occurs in quoted-printable output ("=" only starts an escape or a soft line
    # break there): a boundary starting with it (ours all do) is looked for in 7bit parts only.
    boundary = boundary or _boundary()
    scan_all = not boundary.startswith("=_")
    while ((scan_all or text_cte == "7bit") and boundary.encode("ascii") in text) or (
        (scan_all or html_cte == "7bit") and boundary.encode("ascii") in html
    ):
        boundary, scan_all = _boundary(), False
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return CrlfBytes(b"".join((
        "\r\n".join(headers).encode("ascii"),
        b"\r\n",
        delimiter,
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + text_cte.encode("ascii") + b"\r\n\r\n",
        text,
        delimiter,
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + html_cte.encode("ascii") + b"\r\n\r\n",
        html,
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    )))
