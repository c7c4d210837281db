"""Hand-written RFC 5322 / MIME encoders for the hot path of `messages`.

Header text cleaning, RFC 2047 encoded-words, folding, address formatting and body transfer
encodings. `email.message` is correct but ~20x slower; these cover exactly what nurture_mail
writes and are checked against `email.parser` by property tests.
"""

from __future__ import annotations

import base64
import functools
import re
from binascii import b2a_qp

MAX_LINE = 78  # preferred header line length (RFC 5322 2.1.1)
_ENCODED_WORD_MAX = 75  # RFC 2047 2
_EW_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_PREFIX) + 2  # plus "?="

# Control characters, line/paragraph separators and every kind of whitespace: in a header
# they either break the line (header injection) or are invisible; all become one space.
_HEADER_BREAKING = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# The grammars below (RFC 5322 atext, dot-atom, phrase of atoms) are checked by searching
# for a character outside them, which `re` does in about half the time of a full match of
# `[...]+`; a URI by string tests (`check_uri`). tests/test_messages.py holds every one of
# them to its full pattern.
_NOT_ATEXT_OR_SPACE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]")
_NOT_ATEXT_OR_DOT = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class CrlfBytes(bytes):
    """Message bytes whose every line ends CRLF, with no CR or LF anywhere else: what
    `messages.build_message` writes (its property tests hold it to that). The SMTP writer
    takes them as they are instead of counting line ends through the whole message again."""

    __slots__ = ()


def clean_header_text(value: str) -> str:
    """What a subject or display name becomes in a header: one line, trimmed."""
    if value.isprintable() and "  " not in value:  # the usual case: " " is its only space
        return value.strip()
    return _HEADER_BREAKING.sub(" ", value).strip()


def _encoded_words(text: str, first_room: int) -> list[str]:
    """`text` as UTF-8 B encoded-words; the first fits in `first_room` columns if it can.

    Words break only between characters (RFC 2047 6.3) and are never longer than 75.
    """
    room = max(first_room, _EW_OVERHEAD + 8)
    data = text.encode("utf-8")
    if len(data) <= (min(room, _ENCODED_WORD_MAX) - _EW_OVERHEAD) // 4 * 3:
        return [f"{_EW_PREFIX}{base64.b64encode(data).decode('ascii')}?="]
    words: list[str] = []
    start = 0
    while start < len(text):
        max_bytes = (min(room, _ENCODED_WORD_MAX) - _EW_OVERHEAD) // 4 * 3
        end, size = start, 0
        while end < len(text):
            width = len(text[end].encode("utf-8"))
            if size + width > max_bytes and end > start:
                break
            size += width
            end += 1
        chunk = base64.b64encode(text[start:end].encode("utf-8")).decode("ascii")
        words.append(f"{_EW_PREFIX}{chunk}?=")
        start = end
        room = MAX_LINE - 1
    return words


def _needs_encoding(text: str) -> bool:
    # "=?" could be decoded as an encoded-word by the reader: encode it so it stays literal.
    return not text.isascii() or "=?" in text or not text.isprintable()


def fold(name: str, tokens: list[str]) -> str:
    """`Name: t1 t2 ...`, breaking before a token when the line would pass 78 columns."""
    lines: list[str] = []
    line = first = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > MAX_LINE and line is not first:
            lines.append(line)
            line = " " + token
        else:
            line = f"{line} {token}"
    lines.append(line)
    return "\r\n".join(lines)


def unstructured(name: str, value: str) -> str:
    """A header like Subject: cleaned, encoded if needed, folded."""
    text = clean_header_text(value)
    if text and len(name) + 2 + len(text) <= MAX_LINE and not _needs_encoding(text):
        return f"{name}: {text}"  # one line: what folding its words would make
    words = text.split(" ") if text else []
    if _needs_encoding(text) or any(len(word) > 900 for word in words):
        words = _encoded_words(text, MAX_LINE - len(name) - 2)
    return fold(name, words)


def addr_spec(addr: str) -> str:
    """Check an address and put its domain in IDNA (punycode); non-ASCII local parts refused."""
    local, at, domain = addr.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {addr!r}")
    if not _dot_atom(local):
        raise ValueError(f"unsupported local part (ASCII dot-atom only): {addr!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"invalid domain in {addr!r}") from None
    if len(local) > 64 or len(local) + len(domain) > 253 or not _domain_ok(domain):
        raise ValueError(f"invalid email address: {addr!r}")
    return f"{local}@{domain}"


def _dot_atom(text: str) -> bool:
    """`atext+ ("." atext+)*` (RFC 5322 3.2.3)."""
    return (text != "" and _NOT_ATEXT_OR_DOT.search(text) is None and text[0] != "."
            and text[-1] != "." and ".." not in text)


def _atom_phrase(text: str) -> bool:
    """`atext+ (" " atext+)*`: words that need no quoting, one space apart."""
    return (text != "" and _NOT_ATEXT_OR_SPACE.search(text) is None and text[0] != " "
            and text[-1] != " " and "  " not in text)


@functools.lru_cache(maxsize=1024)  # recipients' domains repeat
def _domain_ok(domain: str) -> bool:
    return _DOMAIN.fullmatch(domain) is not None


def _display_name_tokens(name: str, room: int) -> list[str]:
    name = clean_header_text(name)
    if not name:
        return []
    if not _needs_encoding(name) and len(name) <= 60:
        if _atom_phrase(name):
            return [name]
        # Specials (comma, dot, quotes, ...) need a quoted-string (RFC 5322 3.2.4).
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return _encoded_words(name, room)


def address_header(name: str, display_name: str, addr: str) -> str:
    """`From: "Reyes, Dana" <dana@x>` with the name encoded/quoted as needed."""
    spec = addr_spec(addr)
    tokens = _display_name_tokens(display_name, MAX_LINE - len(name) - 2)
    if not tokens:
        return f"{name}: {spec}"
    return fold(name, [*tokens, f"<{spec}>"])


# The sender's headers repeat in every message (the recipient's never do: not cached).
sender_header = functools.lru_cache(maxsize=256)(address_header)


def angle_list(name: str, items: list[str], separator: str = "") -> str:
    """`References: <a> <b>` or, with separator ",", `List-Unsubscribe: <u1>, <u2>`."""
    tokens = []
    for item in items:  # a loop, not a comprehension: lists of two, one per email
        tokens.append(f"<{item}>{separator}")
    if separator and tokens:
        tokens[-1] = f"<{items[-1]}>"
    return fold(name, tokens)


def check_uri(uri: str) -> str:
    # Printable ASCII but space, "<" and ">" (`[!-;=?-~]+`), by string tests in C: a third
    # of the instructions of a regex search over the two URIs of every email.
    if (uri == "" or len(uri) > 900 or not uri.isascii() or not uri.isprintable()
            or " " in uri or "<" in uri or ">" in uri):
        raise ValueError(f"URI not usable in a header: {uri!r}")
    return uri


def check_msg_id(message_id: str) -> str:
    """A bare Message-ID (`left@right`, no angle brackets) as the ledger stores it."""
    left, at, right = message_id.partition("@")
    if (not at or left == "" or right == "" or _NOT_ATEXT_OR_DOT.search(left) is not None
            or _NOT_ATEXT_OR_DOT.search(right) is not None):
        raise ValueError(f"invalid Message-ID: {message_id!r}")
    return message_id


def encode_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, CRLF body) for a text part.

    7bit when the text is plain short-lined ASCII, else quoted-printable: line length stays
    <= 76, trailing whitespace survives transport, and "From " at a line start is encoded
    so mbox writers do not mangle it.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if _is_7bit_safe(text, lines):
        return "7bit", text.replace("\n", "\r\n").encode("ascii")
    try:
        return "quoted-printable", _quoted_printable(lines)
    except UnicodeEncodeError:  # a lone surrogate: fail as encoding the whole text does
        text.encode("utf-8")
        raise


# Quoted-printable works line by line: b2a_qp encodes each line of its input on its own (a
# line's length, its trailing whitespace, a lone "." and a "From " start depend on that line
# alone; only the last line, which no newline ends, is treated as the end of the data), so
# a text's encoding is its lines' encodings joined. Most lines of a part are template text
# that every email repeats: each is encoded once and kept, bounded in count and size.
_QP_LINES: dict[str, bytes] = {}
_QP_LINES_KEPT = 1024
_QP_LINE_CHARS = 1024


def _quoted_printable(lines: list[str]) -> bytes:
    """`"\n".join(lines)` (no CR in it) as quoted-printable with CRLF line ends."""
    cache = _QP_LINES
    out = list(map(cache.get, lines[:-1]))
    at = -1
    for _ in range(out.count(None)):  # lines not seen yet
        at = out.index(None, at + 1)
        line = lines[at]
        if _qp_plain(line):
            encoded = line.encode("ascii")
        else:  # the line and its newline; b2a_qp ends it with "\n", made "\r\n", dropped
            encoded = _qp(line.encode("utf-8") + b"\n")[:-2]
        out[at] = encoded
        if len(line) <= _QP_LINE_CHARS:
            if len(cache) >= _QP_LINES_KEPT:
                cache.clear()
            cache[line] = encoded
    last = lines[-1]
    out.append(last.encode("ascii") if _qp_plain(last) else _qp(last.encode("utf-8")))
    return b"\r\n".join(out)


def _qp_plain(line: str) -> bool:
    """Whether quoted-printable leaves `line` (a whole line, last or not) as it is: at most
    76 printable ASCII characters, no "=", no trailing space, not "." alone, no "From "."""
    return (
        len(line) <= 76
        and line.isascii()
        and line.isprintable()
        and "=" not in line
        and not line.endswith(" ")
        and line != "."
        and not line.startswith("From ")
    )


def _qp(data: bytes) -> bytes:
    data = b2a_qp(data, False, True, False)
    if data.startswith(b"From ") or b"\nFrom " in data:
        data = _escape_from_lines(data)
    return data.replace(b"\n", b"\r\n")


def _is_7bit_safe(text: str, lines: list[str]) -> bool:
    # Plain string tests: they run in C, a single regex for all of this is ~5x slower.
    return (
        text.isascii()
        and max(map(len, lines)) <= 76
        and not text.endswith((" ", "\t"))
        and " \n" not in text
        and "\t\n" not in text
        and not text.startswith("From ")
        and "\nFrom " not in text
        and not _ASCII_CONTROL.search(text)
    )


def _escape_from_lines(data: bytes) -> bytes:
    """Encode the "F" of lines starting "From ", re-wrapping a line that gets too long."""
    lines = []
    for line in data.split(b"\n"):
        if not line.startswith(b"From "):
            lines.append(line)
            continue
        line = b"=46" + line[1:]
        soft = line.endswith(b"=")  # escapes are "=XX", so a final "=" is a soft break
        content = line[:-1] if soft else line
        while len(content) + (1 if soft else 0) > 76:
            cut = 75
            # never split an "=XX" escape across the soft break
            escape_at = content.rfind(b"=", cut - 2, cut)
            if escape_at != -1:
                cut = escape_at
            lines.append(content[:cut] + b"=")
            content = content[cut:]
        lines.append(content + (b"=" if soft else b""))
    return b"\n".join(lines)
