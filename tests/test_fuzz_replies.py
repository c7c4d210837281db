"""Inbound mail fuzzing beyond tests/test_replies_fuzz.py: structured hostile messages
(malformed MIME, broken encodings, giant headers, deep multiparts) through `replies.classify`.
The verdict is always a Classification whose fields have their promised types; never an
exception, never a hang."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from nurture_mail.replies import Classification, InboundKind, classify
from nurture_mail.replies.classifier import _classify

from .fuzz_strategies import fuzz, nasty_text

CHARSETS = ["utf-8", "utf-7", "iso-8859-1", "x-bogus", "utf-16", "gb2312", "", '"', "unknown-8bit", "cp1252",
            "utf-8\x00", "ascii'en'", "iso-2022-jp"]
CTES = ["base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode", "bogus", ""]
TYPES = ["text/plain", "text/html", "message/delivery-status", "message/rfc822", "multipart/mixed",
         "multipart/report; report-type=delivery-status", "multipart/alternative", "message/feedback-report",
         "text/rfc822-headers", "application/octet-stream", "text", "/", ""]
HEADER_NAMES = ["From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
                "Precedence", "X-Autoreply", "Return-Path", "Date", "Content-Type", "List-Unsubscribe",
                "Final-Recipient", "Status", "Action", "Diagnostic-Code", "X-Failed-Recipients", "Feedback-Type"]
ENCODED_WORDS = ["=?utf-8?b?SGk=?=", "=?utf-8?q?caf=C3=A9?=", "=?x-bogus?b?@@@?=", "=?utf-8?b?!!!?=", "=?utf-8?q?=ZZ?=",
                 "=?iso-8859-1?q?=E9?=", "=??=", "=?utf-8?", "=?utf-8?x?abc?="]
BODIES = [b"SGVsbG8=", b"=E9=\r\n", b"!!!not base64", b"\xff\xfe\x00", b"=3D=3", b"Final-Recipient: rfc822; a@b.c\r\n"
          b"Action: failed\r\nStatus: 5.1.1\r\n", b"> quoted\r\nOn Mon, X wrote:\r\n", b"<html><body>hi</body></html>",
          b"back on 31/02/2027", b"\r\n.\r\n"]


def check(raw: bytes) -> None:
    result = _classify(raw, None)  # the rules must not raise ...
    assert isinstance(result, Classification)
    assert result.kind in InboundKind
    assert result.bounce in (None, "hard", "soft")
    assert result.recipient is None or isinstance(result.recipient, str)
    assert isinstance(result.subject, str) and isinstance(result.in_reply_to, tuple)
    assert classify(raw) == result  # ... so the safety net in classify() never acts


header_value = st.one_of(nasty_text, st.sampled_from(ENCODED_WORDS), st.binary(max_size=30).map(lambda b: b.decode("latin-1")))


@st.composite
def malformed_mime(draw):
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=8))
    boundary = draw(st.sampled_from(["B", "", '"', "B B", "=_x", "-" * 80]))
    ctype = draw(st.sampled_from(TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    lines = [f"{name}: {value}" for name, value in headers]
    lines.append(f'Content-Type: {ctype}; charset="{charset}"; boundary="{boundary}"')
    lines.append(f"Content-Transfer-Encoding: {draw(st.sampled_from(CTES))}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 4))):
        raw += f"--{boundary}\r\n".encode()
        raw += f"Content-Type: {draw(st.sampled_from(TYPES))}; charset={draw(st.sampled_from(CHARSETS))}\r\n".encode(
            "utf-8", "surrogatepass")
        raw += f"Content-Transfer-Encoding: {draw(st.sampled_from(CTES))}\r\n\r\n".encode()
        raw += draw(st.one_of(st.sampled_from(BODIES), st.binary(max_size=60))) + b"\r\n"
    if draw(st.booleans()):
        raw += f"--{boundary}--\r\n".encode()
    return raw


@pytest.mark.timeout(300)
def test_malformed_mime(request):
    fuzz(request, malformed_mime(), check)


@st.composite
def broken_encodings(draw):
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(CTES))
    subject = draw(st.lists(st.sampled_from(ENCODED_WORDS), max_size=5).map(" ".join))
    body = draw(st.one_of(st.binary(max_size=200), st.sampled_from(BODIES),
                          nasty_text.map(lambda t: t.encode("utf-16", "surrogatepass"))))
    return (f"From: =?{charset}?b?{draw(st.sampled_from(['', '!!', 'AAAA', '/w==']))}?= <a@b.c>\r\n"
            f"Subject: {subject}\r\nContent-Type: text/{draw(st.sampled_from(['plain', 'html']))}; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("utf-8", "surrogatepass") + body


@pytest.mark.timeout(300)
def test_broken_encodings(request):
    fuzz(request, broken_encodings(), check)


@st.composite
def giant_headers(draw):
    name = draw(st.sampled_from(HEADER_NAMES + ["X-" + "A" * 5000]))
    unit = draw(st.sampled_from(["a", " ", "=?utf-8?b?SGk=?= ", "<x@y.z> ", "\r\n ", ",", "\t", "é", "(", "\"", "<"]))
    size = draw(st.sampled_from([1_000, 50_000, 300_000]))
    folded = draw(st.booleans())
    value = unit * (size // len(unit))
    if folded:
        value = "\r\n ".join(value[i : i + 70] for i in range(0, len(value), 70))
    many = draw(st.integers(1, 3))
    head = "".join(f"{name}: {value}\r\n" for _ in range(many))
    return f"From: a@b.c\r\n{head}\r\nbody\r\n".encode("utf-8", "surrogatepass")


@pytest.mark.timeout(300)
def test_giant_headers(request):
    fuzz(request, giant_headers(), check, scale=1.0)


@st.composite
def deep_multiparts(draw):
    depth = draw(st.sampled_from([5, 50, 200, 1_000]))
    kind = draw(st.sampled_from(["multipart/mixed", "message/rfc822", "multipart/report; report-type=delivery-status",
                                 "multipart/alternative"]))
    close = draw(st.booleans())
    parts = []
    for level in range(depth):
        if kind == "message/rfc822":
            parts.append("Content-Type: message/rfc822\r\n\r\nFrom: x@y.z\r\n")
        else:
            parts.append(f'Content-Type: {kind}; boundary="b{level}"\r\n\r\n--b{level}\r\n')
    inner = draw(st.sampled_from(BODIES)).decode("latin-1")
    tail = "".join(f"\r\n--b{level}--\r\n" for level in reversed(range(depth))) if close and kind != "message/rfc822" else ""
    return ("From: MAILER-DAEMON@mx.example\r\nSubject: deep\r\n" + "".join(parts)
            + "Content-Type: text/plain\r\n\r\n" + inner + tail).encode("latin-1")


@pytest.mark.timeout(300)
def test_deep_multiparts(request):
    fuzz(request, deep_multiparts(), check)
