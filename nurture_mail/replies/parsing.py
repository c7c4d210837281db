"""Fast, forgiving reading of raw RFC 5322 / MIME bytes.

The stdlib parser is correct but costs ~250 µs a message, and the inbox ingests thousands of
messages a second. This module reads only what classification needs: the top headers at once,
the MIME tree on demand, with caps on header size, text length, depth and part count. No
function here raises on bad input; broken structure degrades to "a text/plain body".
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import decode_header
from email.utils import parsedate_to_datetime

MAX_HEAD_BYTES = 256 * 1024  # a header section larger than this is spam or an attack
MAX_TEXT_CHARS = 64 * 1024  # decoded text scanned per part
MAX_DEPTH = 8  # nesting of multiparts we follow
MAX_PARTS = 64  # leaves we look at in one message

Headers = dict[str, list[str]]

# a field: a name of printable ASCII without ":" or space, then its continuation lines;
# anything else (an mbox "From " line, garbage) is skipped
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.M)
_PARAM = re.compile(
    r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\*?\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"?|([^;\s]*))"
)
_MSGID = re.compile(r"<([^<>\s]{1,998})>")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_SPACES = re.compile(r"\s+")
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMMENT = re.compile(r"\([^()]*\)")
_ADDRESS = re.compile(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>|([^\s<>(),;:\"\[\]]+@[^\s<>(),;:\"\[\]]+)")
_MESSAGE_ID_FIELD = re.compile(r"^message-id[ \t]*:[ \t]*(.*)$", re.I | re.M)

# Labels seen in the wild that Python does not know, or knows under another name.
_CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "x-unknown": "",
    "unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "default": "",
    "us-ascii": "",  # often a lie: 8-bit text labelled ascii; sniff instead
    "ascii": "",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "gb2312": "gb18030",
}
_codec_cache: dict[str, str] = {}


def _codec(label: str | None) -> str:
    """A usable Python text codec name for a MIME charset label, or "" to sniff."""
    if not label:
        return ""
    label = label.strip().strip("\"'").lower()
    if label in _codec_cache:
        return _codec_cache[label]
    name = _CHARSET_ALIASES.get(label, label)
    if name:
        try:
            info = codecs.lookup(name)
            # base64, rot13, zlib... resolve but are not text encodings
            name = info.name if getattr(info, "_is_text_encoding", True) else ""
        except (LookupError, ValueError, TypeError):
            name = ""
    if len(_codec_cache) < 512:
        _codec_cache[label] = name
    return name


# Characters that Python's re.IGNORECASE matches to an ASCII letter although their lower case
# is not that letter (dotted and dotless i, long s, Kelvin sign): a pattern holding one of
# them may match ASCII text that its lower-cased form does not.
_FOLDS_TO_ASCII = frozenset("\u0130\u0131\u017f\u212a")


class Caseless:
    """A case-insensitive pattern written in lower case. On ASCII text it searches the
    lower-cased text with the pattern's case-sensitive form: the same answer (ASCII letters
    are the only ones such text has, and for them ignoring case is lower-casing) at a third
    to a fifth of the cost of re.IGNORECASE; other text gets re.IGNORECASE itself."""

    def __init__(self, pattern: str):
        if any(c.isascii() and c.isupper() for c in pattern) or _FOLDS_TO_ASCII & set(pattern):
            raise ValueError(f"write the pattern in lower case, without \\S \\W \\D \\B: {pattern!r}")
        self.caseless = re.compile(pattern, re.I)
        self.lower = re.compile(pattern)

    def found(self, text: str) -> bool:
        if text.isascii():
            return self.lower.search(text.lower()) is not None
        return self.caseless.search(text) is not None


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes to text with the declared charset, else UTF-8, else Windows-1252; never fails."""
    name = _codec(charset)
    if name:
        try:
            return data.decode(name, "replace")
        except Exception:  # a codec can still blow up on hostile input
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def parse_headers(head: bytes) -> Headers:
    """Header section bytes -> {lower-case name: [unfolded values in order]}."""
    head = head[:MAX_HEAD_BYTES]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    return parse_header_text(text)


def parse_header_text(text: str) -> Headers:
    """Header fields already decoded to text (also used for delivery-status blocks)."""
    headers: Headers = {}
    for name, value in _FIELD.findall(text):
        if "\n" in value:
            value = value.replace("\r", "").replace("\n", "")  # unfold
        headers.setdefault(name.lower(), []).append(value.strip())
    return headers


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Raw bytes -> (header section, body). Leading blank lines are skipped."""
    raw = raw.lstrip(b" \t\r\n")
    found = head_end(raw, MAX_HEAD_BYTES + 4)
    if found is None:
        if len(raw) > MAX_HEAD_BYTES:
            return raw[:MAX_HEAD_BYTES], b""
        return raw, b""
    return raw[: found[0]], raw[found[1] :]


def head_end(raw: bytes, limit: int) -> tuple[int, int] | None:
    """(start, end) of the first blank line, i.e. of the first match of rb"\r?\n\r?\n" lying
    within raw[:limit], or None. Two substring searches (memchr speed) instead of a regex that
    tries every position of the header section: the first "\n" followed by "\n" or "\r\n"
    ends the section, and a "\r" just before that "\n" belongs to the match."""
    lf = raw.find(b"\n\n", 0, limit)
    crlf = raw.find(b"\n\r\n", 0, limit if lf < 0 else lf + 2)  # only one before `lf` matters
    if crlf >= 0:
        at, end = crlf, crlf + 3
    elif lf >= 0:
        at, end = lf, lf + 2
    else:
        return None
    return (at - 1 if at and raw[at - 1] == 13 else at), end  # 13: "\r"


def content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """A Content-Type value -> ("type/subtype" lower-cased, {param: value})."""
    if not value:
        return "text/plain", {}
    main, _, rest = value.partition(";")
    ctype = main.strip().lower()
    if ctype.count("/") != 1 or " " in ctype:
        ctype = "text/plain"  # RFC 2045: an invalid type means text/plain
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        params.setdefault(m[1].lower(), m[2] if m[2] is not None else m[3])
    return ctype, params


@dataclass(slots=True)
class Part:
    """One MIME entity: its headers and its still-encoded body."""

    headers: Headers
    body: bytes
    depth: int = 0
    _ctype: tuple[str, dict[str, str]] | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    @property
    def ctype(self) -> str:
        parsed = self._ctype  # read a dozen times a message: no extra call once parsed
        return (parsed if parsed is not None else self._content_type())[0]

    @property
    def params(self) -> dict[str, str]:
        parsed = self._ctype
        return (parsed if parsed is not None else self._content_type())[1]

    def _content_type(self) -> tuple[str, dict[str, str]]:
        if self._ctype is None:
            self._ctype = content_type(self.header("content-type"))
        return self._ctype

    @property
    def is_attachment(self) -> bool:
        disposition = (self.header("content-disposition") or "").lower()
        return disposition.startswith("attachment")

    def payload(self, limit: int = MAX_TEXT_CHARS * 2) -> bytes:
        """The body with its Content-Transfer-Encoding undone, about `limit` bytes at most."""
        cte = (self.header("content-transfer-encoding") or "").strip().lower()
        data = self.body
        if cte == "base64":
            data = data[: limit * 4 // 3 + limit // 38 + 8]  # base64 grows 4/3, plus line ends
            try:
                return binascii.a2b_base64(data)
            except (binascii.Error, ValueError):
                clean = _B64_JUNK.sub(b"", data)
                clean = clean[: len(clean) // 4 * 4]
                try:
                    return binascii.a2b_base64(clean)
                except (binascii.Error, ValueError):
                    return b""
        if cte == "quoted-printable":
            try:
                return binascii.a2b_qp(data[: limit * 3])
            except (binascii.Error, ValueError):
                return data[:limit]
        return data[:limit]

    def text(self, limit: int = MAX_TEXT_CHARS) -> str:
        """The decoded text of this part (for text/* parts), at most `limit` characters."""
        text = decode_text(self.payload(limit * 2), self.params.get("charset"))[:limit]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def message_headers(self) -> Headers:
        """For message/rfc822 and text/rfc822-headers parts: the embedded header section."""
        head, _ = split_message(self.payload(MAX_HEAD_BYTES))
        return parse_headers(head)

    def embedded_message_ids(self) -> list[str]:
        """Message-IDs in the header section of an embedded message (cheaper than parsing it)."""
        head, _ = split_message(self.payload(MAX_HEAD_BYTES))
        text = head.decode("latin-1")
        ids: list[str] = []
        for m in _MESSAGE_ID_FIELD.finditer(text):
            ids.extend(message_ids(m[1].strip()))
        return ids


def parse_message(raw: bytes) -> Part:
    head, body = split_message(raw)
    return Part(parse_headers(head), body)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The bodies between "--boundary" lines; tolerates a missing closing delimiter."""
    marker = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    first = True
    size = len(body)
    while len(parts) < MAX_PARTS:
        if first and body.startswith(marker):
            line_start, at = 0, 0
        else:
            nl = body.find(b"\n" + marker, pos)
            if nl < 0:
                break
            line_start, at = nl, nl + 1
        first = False
        after = at + len(marker)
        eol = body.find(b"\n", after)
        if eol < 0:
            eol = size
        tail = body[after:eol]
        closing = tail.startswith(b"--")
        if not closing and tail.strip():
            pos = after  # the boundary string was a prefix of something longer
            continue
        if start is not None:
            end = line_start
            if end > start and body[end - 1 : end] == b"\r":
                end -= 1
            parts.append(body[start:end])
        if closing:
            return parts
        start = eol + 1
        pos = eol
    if start is not None and start <= size and len(parts) < MAX_PARTS:
        parts.append(body[start:])
    return parts


def leaves(root: Part) -> list[Part]:
    """Non-multipart parts in document order, without descending into message/rfc822."""
    out: list[Part] = []
    stack = [root]
    while stack and len(out) < MAX_PARTS:
        part = stack.pop()
        if part.ctype.startswith("multipart/") and part.depth < MAX_DEPTH:
            boundary = part.params.get("boundary")
            chunks = (
                _split_multipart(part.body, boundary.encode("utf-8", "replace")) if boundary else []
            )
            if chunks:
                children = []
                for chunk in chunks:
                    head, body = split_message_part(chunk)
                    children.append(Part(parse_headers(head), body, part.depth + 1))
                stack.extend(reversed(children))
                continue
            # a multipart without usable boundaries: read its body as text
            out.append(Part({}, part.body, part.depth))
            continue
        out.append(part)
    return out


def split_message_part(chunk: bytes) -> tuple[bytes, bytes]:
    """A body part -> (headers, body); a part that opens with a blank line has no headers."""
    if chunk.startswith(b"\n"):
        return b"", chunk[1:]
    if chunk.startswith(b"\r\n"):
        return b"", chunk[2:]
    first_line = chunk[: chunk.find(b"\n")] if b"\n" in chunk else chunk
    if b":" not in first_line or first_line[:1] in (b" ", b"\t"):
        return b"", chunk  # no header section at all
    return split_message(chunk)


# The last value decoded and parsed, by identity: classification asks for the Subject and the
# From of a message several times (the classifier, then the bounce and unsubscribe readers),
# always the same string object from its headers.
_last_decoded: tuple[object, str] = (None, "")
_last_addresses: tuple[object, tuple[str, ...]] = (None, ())


def decode_header_value(value: str | None) -> str:
    """RFC 2047 encoded-words -> text, whitespace collapsed; unknown charsets degrade."""
    global _last_decoded
    if not value:
        return ""
    last = _last_decoded  # one read: another thread may replace it meanwhile
    if last[0] is value:
        return last[1]
    text = _decode_header_value(value)
    _last_decoded = (value, text)
    return text


def _decode_header_value(value: str) -> str:
    if "=?" in value:
        try:
            chunks = decode_header(value)
        except Exception:  # the stdlib decoder raises on some malformed words
            chunks = [(value, None)]
        value = "".join(
            data if isinstance(data, str) else decode_text(data, charset)
            for data, charset in chunks
        )
    return _SPACES.sub(" ", value).strip()


def addresses(value: str | None) -> list[str]:
    """Every addr-spec in an address-list header, lower-cased, in order.

    A regex rather than email.utils.getaddresses: that parser costs ~50 µs a header and
    classification only needs the addresses, not the display names.
    """
    global _last_addresses
    if not value or "@" not in value:
        return []
    last = _last_addresses
    if last[0] is value:
        return list(last[1])
    found = _addresses(value)
    _last_addresses = (value, tuple(found))
    return found


def _addresses(value: str) -> list[str]:
    value = _QUOTED_STRING.sub(" ", value)
    if "(" in value:
        value = _COMMENT.sub(" ", value)
    found = []
    for m in _ADDRESS.finditer(value):
        address = (m[1] or m[2]).strip().rstrip(".").lower()
        if address.count("@") == 1 and not address.startswith("@"):
            found.append(address)
    return found


def message_ids(value: str | None) -> list[str]:
    """Message-IDs in a header value, without angle brackets."""
    if not value:
        return []
    ids = _MSGID.findall(value)
    if not ids:
        ids = [token.strip("<>,;") for token in value.split() if "@" in token]
    return [i for i in ids if i]


_DAY = timedelta(days=1)
_MONTH_NUMBERS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
# "Mon, 9 Feb 2009 12:36:39 +0200": the common shape, read without the slow stdlib parser
_RFC5322_DATE = re.compile(
    r"(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})[a-z]*\s+(\d{4})\s+(\d{1,2}):(\d{2})"
    r"(?::(\d{2}))?\s*([+-])(\d{2})(\d{2})\b"
)


def header_date(value: str | None) -> datetime | None:
    """A Date header -> aware UTC datetime; a date without zone is taken as UTC."""
    if not value:
        return None
    m = _RFC5322_DATE.match(value.strip())
    if m:
        day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = m.groups()
        month = _MONTH_NUMBERS.get(month.lower())
        if month is not None:
            try:
                # The wall time less its offset, in UTC: what astimezone(UTC) gives for the
                # same fields with timezone(offset), without building the zone each time.
                offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
                if offset >= _DAY:
                    raise ValueError("offset of a day or more")  # timezone() refuses those
                when = datetime(int(year), month, int(day), int(hour), int(minute),
                                int(second or 0), tzinfo=UTC)
                return when - offset if sign == "+" else when + offset
            except (ValueError, OverflowError):
                pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
