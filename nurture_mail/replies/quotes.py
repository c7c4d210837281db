"""The new text of a human reply: without the quoted original and without the signature.

Works on lines. A reply is top-posted (new text, then an attribution or a header block and
the original) or bottom-posted/interleaved (attribution, "> " quotes, then new text). The
first boundary decides: text before it is the reply; if there is none, the unquoted lines
after the quotes are.
"""

from __future__ import annotations

import re

MAX_LINES = 4000

_WROTE = (
    r"wrote|writes|schrieb|a\s+écrit|a\s+ecrit|escribió|escribio|ha\s+scritto|schreef|"
    r"escreveu|skrev|kirjoitti|napisał|napisal|написал|написала|írta|yazdı|έγραψε|"
    r"het\s+geschreven|kirjutas|rašė|rakstīja"
)
# "On <date>, <someone> wrote:" and its translations; the name may follow the verb (German)
_ATTRIBUTION = re.compile(rf"(?:^|\s)(?:{_WROTE})(?:\s[^:]{{0,160}})?\s*:\s*$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(
    r"^\s*(?:>\s*)?(?:on|am|le|el|il|op|em|den|på|w\s+dniu|dne|в|\d)", re.IGNORECASE
)
# "26.06.2014, 14:41, "Alexander L" <abc@example.com>:" (Yandex, Mail.ru): a date and an address
_DATED_ADDRESS = re.compile(r"\d.{0,120}@[^\s]+.{0,40}:\s*$")
_SEPARATOR = re.compile(
    r"^\s*[-_=*]{2,}\s*(?:original\s+message|original|forwarded\s+message|"
    r"ursprüngliche\s+nachricht|originalnachricht|weitergeleitete\s+nachricht|"
    r"message\s+d'origine|message\s+original|message\s+transféré|mensaje\s+original|"
    r"mensaje\s+reenviado|messaggio\s+originale|messaggio\s+inoltrato|oorspronkelijk\s+bericht|"
    r"doorgestuurd\s+bericht|originalmeddelande|vidarebefordrat\s+meddelande|"
    r"opprinnelig\s+melding|oprindelig\s+meddelelse|alkuperäinen\s+viesti|"
    r"wiadomość\s+oryginalna|mensagem\s+original|исходное\s+сообщение|"
    r"пересылаемое\s+сообщение)\s*[-_=*]*\s*$"
    r"|^\s*(?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+nachricht|"
    r"début\s+du\s+message\s+réexpédié|inicio\s+del\s+mensaje\s+reenviado)\s*:\s*$",
    re.IGNORECASE,
)
_FROM_LABELS = (
    r"from|von|de|da|van|od|från|fra|от|lähettäjä|feladó|expéditeur|remitente|mittente|afzender"
)
_OTHER_LABELS = (
    r"sent|date|to|cc|subject|reply-to|gesendet|datum|an|betreff|envoyé|à|objet|enviado|fecha|"
    r"para|asunto|inviato|data|a|oggetto|verzonden|aan|onderwerp|skickat|till|ämne|sendt|til|"
    r"emne|отправлено|дата|кому|тема|wysłano|temat|do|lähetetty|vastaanottaja|aihe"
)
_FROM_LINE = re.compile(rf"^\s*\*{{0,2}}(?:{_FROM_LABELS})\s*\*{{0,2}}\s*:", re.IGNORECASE)
_HEADER_LINE = re.compile(
    rf"^\s*\*{{0,2}}(?:{_FROM_LABELS}|{_OTHER_LABELS})\s*\*{{0,2}}\s*:", re.IGNORECASE
)
_DIGIT_OR_AT = re.compile(r"[\d@]")
_RULE = re.compile(r"^\s*[-_=*~]{3,}\s*$")
_MOBILE_SIGNATURE = re.compile(
    r"^\s*(?:sent\s+(?:from|via|with|using)\s+(?:my\s+|the\s+)?\w|get\s+outlook\s+for\s|"
    r"(?:von\s+meinem|gesendet\s+von)\s|envoyé\s+(?:de|depuis)\s+mon\s|"
    r"enviado\s+(?:desde|do|de)\s+(?:mi|meu)\s|inviato\s+da\s|"
    r"(?:verzonden|verstuurd)\s+(?:vanaf|met|van)\s+mijn\s|skickat\s+från\s|sendt\s+fra\s|"
    r"отправлено\s+с\s)",
    re.IGNORECASE,
)


def extract_reply_text(text: str, *, strip_signature: bool = True) -> str:
    """The text the sender wrote: quoted original removed, and the signature unless asked."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n", MAX_LINES)[:MAX_LINES]
    kept = _new_lines(lines)
    if strip_signature:
        kept = _without_signature(kept)
    return "\n".join(kept).strip()


def has_quoted_original(text: str) -> bool:
    """Whether the text carries a quoted message (a sign that it answers one)."""
    lines = text.replace("\r\n", "\n").split("\n", MAX_LINES)[:MAX_LINES]
    return _first_boundary(lines, 0) < len(lines)


def _new_lines(lines: list[str]) -> list[str]:
    start = _first_boundary(lines, 0)
    head = _trim_tail(lines[:start])
    if any(line.strip() for line in head) or start >= len(lines):
        return head
    # nothing above the quote: bottom-posted or interleaved answers follow it
    kept: list[str] = []
    i = start
    while i < len(lines):
        if _is_hard_boundary(lines, i):
            if any(line.strip() for line in kept):
                break
            return []
        span = _attribution_span(lines, i)
        if span:
            i += span
            continue
        if not lines[i].lstrip().startswith(">"):
            kept.append(lines[i])
        i += 1
    return _trim_tail(kept)


def _first_boundary(lines: list[str], start: int) -> int:
    for i in range(start, len(lines)):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">"):
            return i
        if not stripped:
            continue
        if _is_hard_boundary(lines, i) or _attribution_span(lines, i):
            return i
    return len(lines)


def _is_hard_boundary(lines: list[str], i: int) -> bool:
    line = lines[i]
    if _SEPARATOR.match(line):
        return True
    if _RULE.match(line):
        return _header_block_at(lines, _next_text(lines, i + 1))
    return _header_block_at(lines, i)


def _header_block_at(lines: list[str], i: int) -> bool:
    """At least two header-like lines from here, one of them "From:" (any language)."""
    if i >= len(lines) or not _HEADER_LINE.match(lines[i]):
        return False
    seen_from = False
    count = 0
    for line in lines[i : i + 8]:
        if not line.strip():
            if count:
                break
            continue
        if not _HEADER_LINE.match(line):
            if count and _FROM_LINE.match(lines[i]) and line[:1] in " \t":
                continue  # a wrapped "To:" list
            break
        count += 1
        seen_from = seen_from or bool(_FROM_LINE.match(line))
    return seen_from and count >= 2


def _attribution_span(lines: list[str], i: int) -> int:
    """How many lines (1-3) an attribution such as "On ..., X wrote:" starting at i covers."""
    for size in (1, 2, 3):
        end = i + size
        if end > len(lines):
            break
        last = lines[end - 1].rstrip()
        if not last.endswith(":"):
            continue
        if size > 1 and not lines[i].strip():
            break
        joined = " ".join(line.strip() for line in lines[i:end])
        if len(joined) > 400:
            break
        if size > 1 and not _ATTRIBUTION_START.match(joined):
            continue
        # one line ending in "wrote:" is enough; a wrapped one must carry a date or address
        if _ATTRIBUTION.search(joined) and (size == 1 or _DIGIT_OR_AT.search(joined)):
            return size
        if _DATED_ADDRESS.search(joined) and _quote_follows(lines, end):
            return size
    return 0


def _quote_follows(lines: list[str], i: int) -> bool:
    j = _next_text(lines, i)
    return j >= len(lines) or lines[j].lstrip().startswith(">")


def _next_text(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _trim_tail(lines: list[str]) -> list[str]:
    """Drop trailing blanks, rules and a dangling attribution line above a cut."""
    lines = list(lines)
    while lines:
        last = lines[-1]
        if not last.strip() or _RULE.match(last):
            lines.pop()
            continue
        cut = 0
        for size in (1, 2, 3):
            if size <= len(lines):
                start = len(lines) - size
                joined = " ".join(line.strip() for line in lines[start:])
                if joined.endswith(":") and (
                    _ATTRIBUTION.search(joined) or _DATED_ADDRESS.search(joined)
                ):
                    cut = size
                    break
        if not cut:
            break
        del lines[len(lines) - cut :]
    return lines


def _without_signature(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        if line.rstrip() == "--" or line == "-- " or _MOBILE_SIGNATURE.match(line):
            return _trim_tail(lines[:i])
    return lines
