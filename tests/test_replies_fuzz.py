"""classify never raises: random bytes, random MIME-ish text, and mangled real messages."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nurture_mail.replies import (
    Classification,
    InboundKind,
    classify,
    extract_reply_text,
    html_to_text,
)
from nurture_mail.replies.classifier import _classify

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SAMPLES = sorted(CORPUS.glob("*/*.eml")) if CORPUS.is_dir() else []
# without the corpus, mutate a small built-in message instead
FALLBACK = (
    b"Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\n<jane@example.com>:\r\nUser unknown (#5.1.1)\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; jane@example.com\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n--B--\r\n"
)
MESSAGES = [p.read_bytes() for p in SAMPLES] or [FALLBACK]

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# fragments that steer random input into the parser's interesting corners
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b": ",
    b"--",
    b"--B",
    b"--B--",
    b"=?",
    b"?=",
    b"=?utf-8?q?",
    b"=?x?b?",
    b"Content-Type: multipart/mixed; boundary=B\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/html; charset=utf-7\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b'charset="x-bogus"',
    b"Final-Recipient: rfc822;",
    b"Action: delayed\r\n",
    b"Status: 5.",
    b"Return-Path: <>\r\n",
    b"From: MAILER-DAEMON\r\n",
    b"<a@b.c>:",
    b"> ",
    b"<blockquote>",
    b"On Mon, 1 Jan 2026, X wrote:",
    b"back on ",
    b"until 31/12",
    b"\xff\xfe",
    b"\x00",
    b"\xc3(",
]


def _check(raw: bytes) -> None:
    result = _classify(raw, None)  # the rules themselves must not raise...
    assert isinstance(result, Classification)
    assert result.kind in InboundKind
    assert classify(raw) == result  # ...so the safety net in classify() never has to act


@FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes(raw):
    _check(raw)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=60))
def test_random_mime_fragments(chunks):
    _check(b"From: x@y.z\r\n" + b"".join(chunks))


@st.composite
def mutated(draw):
    raw = bytearray(draw(st.sampled_from(MESSAGES)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        if op == "insert":
            raw[at:at] = draw(
                st.one_of(st.sampled_from(FRAGMENTS), st.binary(min_size=1, max_size=20))
            )
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 200))]
        elif op == "replace" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[max(0, at - 300) : at]
    return bytes(raw)


@FUZZ
@given(mutated())
def test_mutated_real_messages(raw):
    _check(raw)


@FUZZ
@given(st.text(max_size=2000))
def test_text_helpers_never_raise(text):
    assert isinstance(extract_reply_text(text), str)
    assert isinstance(html_to_text(text), str)
