"""build_message: RFC 5322 bytes that Python's own parser reads back exactly."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nurture_mail.messages import Envelope, build_message, make_message_id
from nurture_mail.mime import CrlfBytes, clean_header_text, encode_body
from nurture_mail.smtp_wire import stuff
from nurture_mail.templates import RenderedEmail

BASE_HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "List-Unsubscribe", "List-Unsubscribe-Post",
}


def envelope(**changes: object) -> Envelope:
    values: dict[str, object] = {
        "from_name": "Dana Reyes",
        "from_addr": "dana@talent.example",
        "to_name": "Sam Lee",
        "to_addr": "sam@example.com",
        "reply_to": None,
        "message_id": "abc123@talent.example",
        "date": datetime(2026, 3, 4, 9, 30, tzinfo=UTC),
        "unsubscribe_https": "https://talent.example/u/tok123",
        "unsubscribe_mailto": "mailto:unsubscribe@talent.example?subject=tok123",
    }
    values.update(changes)
    return Envelope(**values)  # type: ignore[arg-type]


EMAIL = RenderedEmail("Thanks for your time", "Hi Sam,\n\nThanks!\n", "<p>Hi Sam,</p>\n")


def parse(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def rfc2047_display_name(raw: bytes, header: str) -> str:
    """The display name as RFC 2047 readers (mail clients) decode it.

    Python's parser keeps a space between adjacent encoded-words in a phrase; RFC 2047 6.2
    says to drop it, and that is what we write for. So decode by the RFC here.
    """
    value = BytesParser(policy=policy.compat32).parsebytes(raw)[header]
    value = re.sub(r"\r?\n", "", value)
    phrase = value.rpartition("<")[0].strip() if value.endswith(">") else ""
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    if "=?" in phrase:
        return str(make_header(decode_header(phrase)))
    return phrase


def assert_well_formed(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998


def test_basic_structure_and_headers():
    raw = build_message(envelope(reply_to="dana.replies@talent.example"), EMAIL)
    assert_well_formed(raw)
    msg = parse(raw)
    assert set(msg.keys()) == BASE_HEADERS | {"Reply-To"}
    assert msg.defects == []
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert text.get_content_charset() == "utf-8"
    assert msg["Message-ID"] == "<abc123@talent.example>"
    assert msg["Date"] == "Wed, 04 Mar 2026 09:30:00 +0000"
    assert msg["List-Unsubscribe"] == (
        "<https://talent.example/u/tok123>, <mailto:unsubscribe@talent.example?subject=tok123>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Reply-To"] == "dana.replies@talent.example"
    assert normalise(text.get_content()) == EMAIL.text
    assert normalise(html.get_content()) == EMAIL.html


def test_threading_headers():
    raw = build_message(
        envelope(in_reply_to="first@talent.example", references=("a@x", "first@talent.example")),
        EMAIL,
    )
    msg = parse(raw)
    assert msg["In-Reply-To"] == "<first@talent.example>"
    assert msg["References"] == "<a@x> <first@talent.example>"


def test_display_name_with_specials_is_quoted():
    raw = build_message(envelope(from_name="Reyes, Dana"), EMAIL)
    assert b'From: "Reyes, Dana" <dana@talent.example>\r\n' in raw
    assert parse(raw)["From"].addresses[0].display_name == "Reyes, Dana"


def test_unicode_subject_is_encoded_words_within_limits():
    subject = "Merci pour votre temps, Zoë 😀 " * 6
    raw = build_message(envelope(to_name="عربي Zoë"), RenderedEmail(subject, "x\n", "<p>x</p>"))
    assert raw.isascii()
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for word in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", header_block):
        assert len(word) <= 75
    subject_lines = header_block.split("Subject:", 1)[1].split("\r\nDate:")[0].split("\r\n")
    assert all(len(line) <= 78 - len("Subject:") for line in subject_lines[:1])
    assert all(len(line) <= 78 for line in subject_lines)
    msg = parse(raw)
    assert msg["Subject"] == clean_header_text(subject)
    assert msg["To"].addresses[0].display_name == "عربي Zoë"


def test_header_injection_in_name_and_subject_is_neutralised():
    raw = build_message(
        envelope(to_name="Sam\r\nBcc: victim@evil.example", from_name="x\nX-Evil: 1"),
        RenderedEmail("Hello\r\nBcc: victim@evil.example", "x\n", "<p>x</p>"),
    )
    msg = parse(raw)
    assert set(msg.keys()) == BASE_HEADERS
    assert msg["Subject"] == "Hello Bcc: victim@evil.example"
    assert msg["To"].addresses[0].addr_spec == "sam@example.com"


def test_looks_like_encoded_word_stays_literal():
    raw = build_message(envelope(to_name="=?utf-8?q?Admin?="), EMAIL)
    assert parse(raw)["To"].addresses[0].display_name == "=?utf-8?q?Admin?="


def test_idna_domain_and_refused_addresses():
    raw = build_message(envelope(to_addr="zoe@bücher.example"), EMAIL)
    assert parse(raw)["To"].addresses[0].domain == "xn--bcher-kva.example"
    for bad in ("zoë@example.com", "no-at-sign", "a b@example.com", "a@b@c", "x@-bad-.com"):
        with pytest.raises(ValueError):
            build_message(envelope(to_addr=bad), EMAIL)


def test_naive_date_and_bad_ids_and_uris_refused():
    with pytest.raises(ValueError):
        build_message(envelope(date=datetime(2026, 1, 1)), EMAIL)
    with pytest.raises(ValueError):
        build_message(envelope(message_id="<a@b>"), EMAIL)
    with pytest.raises(ValueError):
        build_message(envelope(unsubscribe_https="https://x/a b"), EMAIL)
    with pytest.raises(ValueError):
        build_message(envelope(unsubscribe_https="ftp://x/plain"), EMAIL)


def test_date_keeps_offset():
    when = datetime(2026, 3, 4, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert parse(build_message(envelope(date=when), EMAIL))["Date"].datetime == when


def test_make_message_id():
    ids = {make_message_id("talent.example") for _ in range(1000)}
    assert len(ids) == 1000
    for message_id in ids:
        left, _, right = message_id.partition("@")
        assert right == "talent.example"
        # the moment in ms (12 hex digits), then 12 random bytes as url-safe base64
        assert re.fullmatch(r"[0-9a-f]{12}[A-Za-z0-9_-]{16}", left)
    assert make_message_id("bücher.example").endswith("@xn--bcher-kva.example")


def test_body_encodings():
    assert encode_body("short ascii\nlines\n")[0] == "7bit"
    for text in ("caf\u00e9\n", "x" * 77 + "\n", "trailing \n", "From me\n", "a\x00b\n"):
        cte, data = encode_body(text)
        assert cte == "quoted-printable"
        assert all(len(line) <= 76 for line in data.split(b"\r\n"))
        assert not re.search(rb"^From ", data, re.MULTILINE)


def test_from_line_escape_rewraps_long_lines():
    text = "From " + "é" * 60 + "\nFrom " + "x" * 200 + "\n"
    cte, data = encode_body(text)
    assert all(len(line) <= 76 for line in data.split(b"\r\n"))
    raw = build_message(envelope(), RenderedEmail("s", text, "<p>x</p>"))
    assert normalise(next(parse(raw).iter_parts()).get_content()) == text


names = st.one_of(
    st.text(max_size=120),
    st.sampled_from([
        'Reyes, Dana', 'Dana "DR" Reyes', "O'Brien", "a\\b", "Sam\r\nBcc: x@y", "😀🎉",
        "שלום עליכם", "مرحبا بالعالم", "=?utf-8?b?QQ==?=", "", "  ", "<x@y>", "a.b",
    ]),
)
body_lines = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["From here", ".", "..", "trailing  ", "\t", "x" * 2000, "=3D", "--"]),
)
bodies = st.lists(body_lines, max_size=12).map("\n".join)
addresses = st.from_regex(
    r"[a-z0-9+_-]{1,10}(\.[a-z0-9+_-]{1,10}){0,2}@[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.[a-z]{2,6}",
    fullmatch=True,
)


@settings(max_examples=500, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    from_name=names, to_name=names, to_addr=addresses, subject=names,
    text=bodies, html=bodies, threaded=st.booleans(),
)
def test_round_trip(from_name, to_name, to_addr, subject, text, html, threaded):
    env = envelope(
        from_name=from_name, to_name=to_name, to_addr=to_addr,
        in_reply_to="first@talent.example" if threaded else None,
        references=("first@talent.example",) if threaded else (),
    )
    raw = build_message(env, RenderedEmail(subject, text, html))
    assert_well_formed(raw)
    # Marked CRLF throughout, so the SMTP writer skips its own line-end pass: the same payload.
    assert type(raw) is CrlfBytes
    assert stuff(raw) == stuff(bytes(raw))
    msg = parse(raw)
    expected = BASE_HEADERS | ({"In-Reply-To", "References"} if threaded else set())
    assert set(msg.keys()) == expected
    assert len(msg.keys()) == len(expected)
    assert msg.defects == []
    assert msg["Subject"] == clean_header_text(subject)
    (sender,) = msg["From"].addresses
    (recipient,) = msg["To"].addresses
    assert sender.addr_spec == "dana@talent.example"
    assert recipient.addr_spec == to_addr
    assert rfc2047_display_name(raw, "From") == clean_header_text(from_name)
    assert rfc2047_display_name(raw, "To") == clean_header_text(to_name)
    for parsed, name in ((sender, from_name), (recipient, to_name)):
        if len(clean_header_text(name).encode()) <= 42:  # one encoded-word at most
            assert parsed.display_name == clean_header_text(name)
    parts = list(msg.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part, body in zip(parts, (text, html), strict=True):
        assert part.defects == []
        assert normalise(part.get_content()) == normalise(body)


# -- the encoders' shortcuts give what the plain algorithms give --------------------------------
def reference_encode_body(text: str) -> tuple[str, bytes]:
    """encode_body as one b2a_qp call over the whole text (what the line cache must equal)."""
    import binascii

    from nurture_mail.mime import _escape_from_lines, _is_7bit_safe

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _is_7bit_safe(text, text.split("\n")):
        return "7bit", text.replace("\n", "\r\n").encode("ascii")
    data = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    if data.startswith(b"From ") or b"\nFrom " in data:
        data = _escape_from_lines(data)
    return "quoted-printable", data.replace(b"\n", b"\r\n")


qp_lines = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=" \t.=From\u00e9\u00a0\x00\x0bxyz\r", max_size=90),
    st.sampled_from([
        "", " ", ".", "..", "=", "From ", "From here", "from x", ">From x", "\t", "a\t", "a ",
        "x" * 75, "x" * 76, "x" * 77, "x" * 75 + " ", "x" * 76 + " ", "x" * 74 + "é", "x" * 75 + ".",
        "From " + "é" * 60, "From " + "x" * 200, "x" * 2000, "=3D", "caf\u00e9", "\u00a0",
    ]),
)
# Lines drawn from a small pool repeat within and across texts, as template text does.
pool_texts = st.lists(st.sampled_from([f"line {i} " + "é" * (i % 3) + "x" * (i * 7) for i in range(20)])
                      | qp_lines, max_size=16).map("\n".join)


@settings(max_examples=3000, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=pool_texts)
def test_line_cache_gives_whole_text_encoding(text):
    assert encode_body(text) == reference_encode_body(text)
    assert encode_body(text) == reference_encode_body(text)  # now from the cache


def test_line_cache_is_bounded():
    from nurture_mail import mime

    for i in range(3 * mime._QP_LINES_KEPT):
        encode_body(f"caf\u00e9 {i}\n" + "y" * (i % 3000) + "\n")
    assert len(mime._QP_LINES) <= mime._QP_LINES_KEPT
    assert max(map(len, mime._QP_LINES)) <= mime._QP_LINE_CHARS


def test_lone_surrogate_fails_as_before():
    for text in ("a\ud800b", "x" * 80 + "\ncaf\u00e9 \ud83d\n", "ok\n\udfff"):
        with pytest.raises(UnicodeEncodeError) as ours:
            encode_body(text)
        with pytest.raises(UnicodeEncodeError) as reference:
            reference_encode_body(text)
        assert str(ours.value) == str(reference.value)


def test_header_text_shortcuts_match_the_general_path():
    from nurture_mail.mime import (
        _HEADER_BREAKING,
        MAX_LINE,
        _encoded_words,
        _needs_encoding,
        fold,
        unstructured,
    )

    # Every printable character but " " is neither whitespace nor a control character.
    assert all(
        not _HEADER_BREAKING.match(c) and not c.isspace()
        for c in map(chr, range(0x110000)) if c.isprintable() and c != " "
    )

    def reference(name: str, value: str) -> str:
        text = _HEADER_BREAKING.sub(" ", value).strip()
        words = text.split(" ") if text else []
        if _needs_encoding(text) or any(len(word) > 900 for word in words):
            words = _encoded_words(text, MAX_LINE - len(name) - 2)
        return fold(name, words)

    values = ["Hi  there", " x ", "a\u00a0b", "tab\there", "", "  ", "Zoë — ok", "x" * 68,
              "x" * 69, "x" * 70, "a b " * 20, "=?x?=", "a =? b", "x" * 901]
    for value in values:
        assert clean_header_text(value) == _HEADER_BREAKING.sub(" ", value).strip()
        for name in ("Subject", "X"):
            assert unstructured(name, value) == reference(name, value)

    @settings(max_examples=2000, derandomize=True, deadline=None)
    @given(value=names)
    def check(value):
        assert clean_header_text(value) == _HEADER_BREAKING.sub(" ", value).strip()
        assert unstructured("Subject", value) == reference("Subject", value)

    check()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is what `run --workers` uses on Linux")
def test_a_forked_sender_draws_its_own_boundaries():
    from nurture_mail import messages

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, messages._boundary().encode("ascii"))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode("ascii")
    assert re.fullmatch(r"=_[0-9a-f]{32}", child)
    assert child != messages._boundary()  # the parent's next one: same state without a reseed


def test_header_grammar_checks_accept_exactly_the_rfc_patterns():
    """The checks that search for a character outside a grammar accept exactly what a full
    match of the grammar's pattern accepts: every string of up to four characters drawn
    from letters, the separators and the characters each grammar refuses."""
    import itertools

    from nurture_mail import mime

    atext = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
    dot_atom = re.compile(f"{atext}+(?:\\.{atext}+)*")
    phrase = re.compile(f"{atext}+(?: {atext}+)*")
    uri = re.compile(r"[!-;=?-~]+")
    msg_id_side = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")

    def accepted(check, text: str) -> bool:
        try:
            check(text)
        except ValueError:
            return False
        return True

    alphabet = "a.- @<>\"\\(é\x7f\t=~"
    checked = 0
    for size in range(5):
        for chars in itertools.product(alphabet, repeat=size):
            text = "".join(chars)
            assert mime._dot_atom(text) == bool(dot_atom.fullmatch(text)), text
            assert mime._atom_phrase(text) == bool(phrase.fullmatch(text)), text
            assert accepted(mime.check_uri, text) == bool(uri.fullmatch(text)), text
            left, at, right = text.partition("@")
            expected = bool(at and msg_id_side.fullmatch(left) and msg_id_side.fullmatch(right))
            assert accepted(mime.check_msg_id, text) == expected, text
            checked += 1
    assert checked == sum(len(alphabet) ** n for n in range(5))


def test_a_boundary_is_checked_against_7bit_parts_and_kept_with_quoted_printable_ones():
    """Only a 7bit part can hold a line like the boundary ("=_" never occurs in
    quoted-printable output): there a new one is drawn; the quoted-printable part of the
    same text keeps the one given, and both read back as written."""
    text = "plain ascii\n--=_fixed\nend\n"
    seven_bit = build_message(envelope(), RenderedEmail("Hi", text, "<p>x</p>"), boundary="=_fixed")
    assert b'boundary="=_fixed"' not in seven_bit
    quoted = build_message(envelope(), RenderedEmail("Hi", text + "Zoë\n", "<p>x</p>"),
                           boundary="=_fixed")
    assert b'boundary="=_fixed"' in quoted
    # A boundary given without the "=_" mark is looked for in every part.
    other = build_message(envelope(), RenderedEmail("Hi", "see xyz\nZoë\n", "<p>x</p>"),
                          boundary="xyz")
    assert b'boundary="xyz"' not in other
    for raw, body in ((seven_bit, text), (quoted, text + "Zoë\n"), (other, "see xyz\nZoë\n")):
        parts = list(parse(raw).iter_parts())
        assert len(parts) == 2
        assert parts[0].get_content().replace("\r\n", "\n") == body
        assert parts[1].get_content().strip() == "<p>x</p>"
