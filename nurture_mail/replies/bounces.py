"""Delivery failure notices: RFC 3464 reports first, then the vendor formats that predate it.

A message is read as a bounce only with a sign from the envelope or headers (null return
path, a MAILER-DAEMON/postmaster sender, X-Failed-Recipients, a bounce subject, a report
content type) *and* bounce content, so a person who writes "could not be delivered" in a
reply is not taken for a mail server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .htmltext import html_to_text
from .parsing import Caseless, Part, addresses, decode_header_value, parse_header_text

MAX_RECIPIENT_SCAN = 16 * 1024  # the notice proper is short; the copied original is not

_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
_SMTP_CODE = re.compile(r"(?<![\w.#-])([45])[0-5]\d(?=[ -]|$)", re.MULTILINE)  # "550 ", "550-"
_BLOCK_SPLIT = re.compile(r"\r?\n[ \t]*\r?\n")
_SPACES = re.compile(r"\s+")

_DAEMON_LOCAL = re.compile(
    r"^(?:mailer[-_]?daemon|mail[-_]?daemon|postmaster|mail[-_]?delivery[-_]?(?:system|subsystem)?)$"
    r"|^microsoftexchange[0-9a-f]{20,}$"
)
_DAEMON_NAME = Caseless(r"mail delivery (?:subsystem|system)|mailer-daemon|postmaster")
_SUBJECT = Caseless(
    r"undeliver|undelivered|returned mail|return(?:ed|ing) (?:mail|message) to sender|"
    r"delivery status notification|delivery (?:failure|failed|problem|notification|report|"
    r"incomplete|delayed)|failure notice|mail delivery failed|could not send message|"
    r"delivery has failed|message not delivered|non remis|non recapitabile|unzustellbar|"
    r"nicht zustellbar|onbestelbaar|no entregado|no se puede entregar|olevererbart|"
    r"levering mislukt|mail system error|delayed mail|message delayed|"
    r"warning: could not send|address not found"
)
# the sentences that mail servers put in their notices, by vendor
_VENDOR_TEXT = (
    ("qmail", r"this is the qmail-send program|i'm afraid i wasn't able to deliver your message"),
    (
        "Postfix",
        r"this is the (?:mail system|postfix program) at host|"
        r"i'm sorry to have to inform you that your message could not",
    ),
    (
        "Exim",
        r"this message was created automatically by mail delivery software|"
        r"a message that you sent could not be delivered to (?:one or more of its|all of its) "
        r"recipients|following address\(es\) failed",
    ),
    (
        "Sendmail",
        r"-{3,}\s*the following addresses had (?:permanent fatal errors|transient non-fatal)|"
        r"-{3,}\s*transcript of session follows|the original message was received at",
    ),
    (
        "Exchange",
        r"delivery has failed to these recipients or groups|did not reach the following "
        r"recipient|your message did not reach some or all of the intended recipients|"
        r"couldn't be delivered|wasn't found at|det gick inte att leverera|"
        r"die zustellung an folgende empfänger oder gruppen ist fehlgeschlagen|"
        r"la remise (?:aux destinataires ou groupes suivants )?a échoué|"
        r"no se pudo entregar|impossibile recapitare",
    ),
    (
        "Gmail",
        r"delivery to the following recipients? (?:failed|has been delayed)|address not found|"
        r"your message wasn't delivered|there was a temporary problem delivering your message|"
        r"technical details of (?:permanent|temporary) failure",
    ),
    ("Yahoo", r"sorry, we were unable to deliver your message|unable to deliver message to"),
    (
        "Lotus Notes",
        r"was not delivered to:|not listed in (?:public )?(?:name & address book|domino)",
    ),
    (
        "generic",
        r"could not be delivered|delivery to the following recipients failed|"
        r"failed to deliver to|delivery of (?:e-?mail|your message) to .{0,60}(?:has )?failed|"
        r"message could not be delivered|undeliverable|permanent (?:error|failure)|"
        r"user unknown|no such user|mailbox (?:unavailable|not found|full|is full)|"
        r"recipient address rejected|has failed due to|delivery status notification|"
        r"unable to deliver|unrouteable address|host or domain name not found|"
        r"message delivery has been delayed|has not yet been delivered",
    ),
)
# one pass over the (lower-cased) notice for the named vendors, one for generic wording
_VENDORS = re.compile(
    "|".join(f"(?P<v{i}>{pattern})" for i, (_, pattern) in enumerate(_VENDOR_TEXT[:-1]))
)
_VENDOR_NAMES = {f"v{i}": name for i, (name, _) in enumerate(_VENDOR_TEXT)}
_GENERIC = re.compile(_VENDOR_TEXT[-1][1])

# Words that decide hard or soft, looked up in lower-cased notice text. Plain substring
# tests: a regex alternation of these costs ~20 µs a notice, `in` well under one.
_DELAY_WORDS = (
    "delayed",
    "will retry",
    "will be retried",
    "warning message only",
    "not yet been delivered",
    "still trying",
    "will continue to try",
    "will continue trying",
    "you do not need to resend",
)
_QUOTA_WORDS = (
    "quota",
    "mailbox full",
    "mailbox is full",
    "full mailbox",
    "storage space",
    "disk space",
    "diskspace",
    "insufficient storage",
    "insufficient system storage",
    "out of storage",
    "exceeded storage",
    "enough space",
    "enough disk space",
    "enough storage",
    "storage limit",
)
_QUOTA = re.compile(r"mailbox.{0,20}\bfull\b|(?<![\d.])[45]\.2\.2(?![\d])")
_PERMANENT_WORDS = (
    "permanent",
    "perm_failure",
    "fatal error",
    "given up",
    "gave up",
    "user unknown",
    "unknown user",
    "no such user",
    "does not exist",
    "doesn't exist",
    "not found",
    "address rejected",
    "invalid recipient",
    "invalid address",
    "invalid mailbox",
    "mailbox unavailable",
    "unrouteable",
    "no mailbox",
    "not listed",
)
_TEMPORARY_WORDS = ("temporar", "temp_failure", "try again later", "transient", "deferred")


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    return any(word in text for word in words)


# status codes that are about the message or a full box, not about a dead address
_SOFT_PERMANENT = frozenset(("5.2.2", "5.2.3", "5.3.4", "5.4.7"))

# where the copy of the original message starts in a notice
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:below this line is a copy of the message|enclosed is a copy of the "
    r"message|original message|message header follows|message body suppressed|this is a copy "
    r"of the message|returned message|undelivered message|headers of the original message)"
    r"|^(?:original message headers|ursprungshuvuden|original-?headers|"
    r"the first \d+ lines of your original message follow)"
    r"|^(?:return-path|received|message-id|dkim-signature):",
    re.I | re.M,
)
# phrases after which the notice names the failed address
_RECIPIENT_INTRO = re.compile(
    r"following (?:recipients?|addresses|address\(es\)|address)(?: or groups)?[^\n:]{0,60}:?|"
    r"delivery has failed to these recipients or groups|did not reach the following recipient|"
    r"was not delivered to|failed to deliver to|delivery of (?:e-?mail|your message) to this address|"
    r"your message to|your message wasn't delivered to|delivering your message to|"
    r"(?:couldn't|could not) be delivered to|unable to deliver (?:your )?message to|"
    r"mottagare eller grupper|empfänger oder gruppen|destinataires ou groupes",
    re.I,
)
_ANGLE_RECIPIENT = re.compile(
    r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>(?:[ \t]*\(expanded from <([^<>\s@]+@[^<>\s]+)>\))?[ \t]*:",
    re.M,
)
_TEXT_FIELD_RECIPIENT = re.compile(
    r"^[ \t>]*(?:original|final)-recipient:[ \t]*(?:rfc822[ \t]*;)?[ \t]*<?([^<>\s;]+@[^<>\s;]+)>?",
    re.I | re.M,
)
_LABEL_LINE = re.compile(r"^[ \t>*]*(?:to|from|cc|sent|date|subject|reply-to)\s*:", re.I)
_REASON_INTRO = re.compile(
    r"(?:technical details of (?:permanent|temporary) failure|because|reason|"
    r"the error that the other server returned was|remote host said)[ \t]*:?[ \t]*\r?\n",
    re.I,
)
_QUOTED_MESSAGE_ID = re.compile(
    r"^[ \t>]*message-id:[ \t]*<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$", re.I | re.M
)
_DAEMON_ADDRESS = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon)@", re.I)


@dataclass(frozen=True, slots=True)
class Bounce:
    """What a delivery report says about the message it returns."""

    failed: bool  # False for a report that only says delivered/relayed/expanded
    severity: str | None  # "hard" | "soft" | None when not failed
    recipient: str | None
    recipients: tuple[str, ...]
    status: str | None
    diagnostic: str | None
    original_message_ids: tuple[str, ...]
    reason: str


def read_bounce(msg: Part, parts: list[Part]) -> Bounce | None:
    """The bounce this message reports, or None when it is not a delivery report."""
    report = [
        p for p in parts if p.ctype in ("message/delivery-status", "message/global-delivery-status")
    ]
    is_report = msg.ctype == "multipart/report" and (
        msg.params.get("report-type", "").lower() == "delivery-status"
    )
    if report or is_report:
        bounce = _read_dsn(msg, parts, report)
        if bounce is not None:
            return bounce
    return _read_notice(msg, parts)


def header_signals(msg: Part) -> list[str]:
    """Envelope and header hints that a message comes from a mail server, not a person."""
    signals = []
    return_paths = [v.strip() for v in msg.all("return-path")]
    if any(v in ("<>", "") or v.replace(" ", "") == "<>" for v in return_paths):
        signals.append("null return path")
    sender = msg.header("from") or ""
    local = ""
    for address in addresses(sender) or [sender.strip().strip("<>")]:
        local = address.split("@", 1)[0].lower()
    if _DAEMON_LOCAL.match(local) or _DAEMON_NAME.found(sender):
        signals.append("MAILER-DAEMON sender")
    if msg.header("x-failed-recipients"):
        signals.append("X-Failed-Recipients")
    if _SUBJECT.found(decode_header_value(msg.header("subject"))):
        signals.append("bounce subject")
    return signals


def _read_dsn(msg: Part, parts: list[Part], report: list[Part]) -> Bounce | None:
    groups = []
    for part in report:
        for block in _BLOCK_SPLIT.split(part.text().strip()):
            fields = parse_header_text(block)
            if any(
                k in fields for k in ("final-recipient", "original-recipient", "action", "status")
            ):
                groups.append(fields)
    if not groups:
        return None
    actions = [_first(g, "action").lower() for g in groups]
    # a report may mix outcomes per recipient: failures first, then delays
    failed = [g for g, a in zip(groups, actions, strict=True) if a.startswith("failed")]
    failed = failed or [g for g, a in zip(groups, actions, strict=True) if a.startswith("delayed")]
    if not failed:
        if any(actions):
            return Bounce(
                failed=False,
                severity=None,
                recipient=None,
                recipients=(),
                status=None,
                diagnostic=None,
                original_message_ids=_original_ids(parts, ""),
                reason="RFC 3464 delivery report (delivered)",
            )
        failed = groups  # a report without Action fields: every group is a failure
    notice = _notice_text(parts)
    recipients = _unique(r for g in failed if (r := _group_recipient(g)))
    first = failed[0]
    action = _first(first, "action").lower()
    status = _status(_first(first, "status")) or _status(_first(first, "diagnostic-code"))
    diagnostic = _clean_diagnostic(_first(first, "diagnostic-code"))
    if not recipients:
        recipients = _text_recipients(msg, notice)
    severity = _severity(
        delayed=action.startswith("delayed"),
        status=status,
        text=" ".join(filter(None, (diagnostic, _notice_region(notice)))).lower(),
    )
    return Bounce(
        failed=True,
        severity=severity,
        recipient=recipients[0] if recipients else None,
        recipients=tuple(recipients),
        status=status,
        diagnostic=diagnostic or _text_diagnostic(_notice_region(notice), None),
        original_message_ids=_original_ids(parts, notice),
        reason="RFC 3464 delivery report" + (" (delayed)" if action.startswith("delayed") else ""),
    )


def _read_notice(msg: Part, parts: list[Part]) -> Bounce | None:
    signals = header_signals(msg)
    if not signals:
        return None
    notice = _notice_text(parts)
    region = _notice_region(notice)
    lowered = region.lower()
    found = _VENDORS.search(lowered)
    vendor = _VENDOR_NAMES[found.lastgroup] if found and found.lastgroup else None
    if vendor is None and _GENERIC.search(lowered):
        vendor = "generic"
    # a bounce-like subject alone is weak: people forward and answer such messages
    from_server = any(s != "bounce subject" for s in signals)
    if not (
        "X-Failed-Recipients" in signals
        or (vendor and (from_server or vendor != "generic"))
        or ("bounce subject" in signals and from_server)
    ):
        return None
    recipients = _unique(addresses(msg.header("x-failed-recipients")))
    if not recipients:
        recipients = _header_recipients(msg) or _text_recipients(msg, notice)
    status = _status(region)
    diagnostic = _text_diagnostic(region, recipients[0] if recipients else None)
    subject = decode_header_value(msg.header("subject"))
    severity = _severity(
        delayed=True if "delay" in subject.lower() else None,
        status=status,
        text=lowered,
    )
    what = f"{vendor} bounce" if vendor and vendor != "generic" else "bounce notice"
    return Bounce(
        failed=True,
        severity=severity,
        recipient=recipients[0] if recipients else None,
        recipients=tuple(recipients),
        status=status,
        diagnostic=diagnostic,
        original_message_ids=_original_ids(parts, notice),
        reason=f"{what} ({', '.join(signals)})",
    )


def _severity(*, delayed: bool | None, status: str | None, text: str) -> str:
    """ "hard" or "soft" from the report's action and status, else from its wording.

    `delayed` is the report's own verdict (None: read it from the wording); `text` must be
    lower-cased.
    """
    if delayed or (delayed is None and _mentions(text, _DELAY_WORDS)):
        return "soft"
    if status and status[0] == "4":
        return "soft"
    if _mentions(text, _QUOTA_WORDS) or _QUOTA.search(text):
        return "soft"
    code = _SMTP_CODE.search(text)
    if status and status[0] == "5" and not status.endswith(".0.0"):
        return "soft" if status in _SOFT_PERMANENT else "hard"
    if code and code[0] == "552":
        return "soft"  # 552: exceeded storage allocation
    if status and status[0] == "5":
        return "hard"
    if _mentions(text, _PERMANENT_WORDS) or (code and code[1] == "5"):
        return "hard"
    if _mentions(text, _TEMPORARY_WORDS) or (code and code[1] == "4"):
        return "soft"
    return "hard"  # the server gave up and said no more


def _first(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[0].strip() if values else ""


def _group_recipient(fields: dict[str, list[str]]) -> str | None:
    # Original-Recipient is the address we wrote to; Final-Recipient may be an alias target
    for name in ("original-recipient", "final-recipient"):
        value = _first(fields, name)
        address = value.split(";", 1)[-1].strip().strip("<>").strip().lower()
        if "@" in address and _EMAIL.fullmatch(address):
            return address
    return None


def _status(text: str) -> str | None:
    m = _ENHANCED.search(text or "")
    return f"{m[1]}.{m[2]}.{m[3]}" if m else None


def _clean_diagnostic(value: str) -> str | None:
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    if sep and len(kind) <= 20 and " " not in kind.strip():
        value = rest
    return _one_line(value)


def _one_line(value: str, limit: int = 200) -> str | None:
    value = _SPACES.sub(" ", value).strip().lstrip("-–* ")
    if not value:
        return None
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def _notice_text(parts: list[Part]) -> str:
    """The human-readable notice: the first text parts outside the returned message."""
    texts: list[str] = []
    for part in parts:
        if part.ctype == "text/plain" and not part.is_attachment:
            texts.append(part.text())
        elif part.ctype == "text/html" and not part.is_attachment and not texts:
            texts.append(html_to_text(part.text()))
        if len(texts) >= 2:
            break
    return "\n\n".join(texts)


def _notice_region(notice: str) -> str:
    """The notice up to where the copy of the original message begins."""
    head = notice[:MAX_RECIPIENT_SCAN]
    m = _ORIGINAL_MARKER.search(head)
    return head[: m.start()] if m else head


def _header_recipients(msg: Part) -> list[str]:
    # some servers (and unknown_code_bounce_01.eml) put DSN fields among the top headers
    return [r for r in (_group_recipient(msg.headers),) if r]


def _text_recipients(msg: Part, notice: str) -> list[str]:
    region = _notice_region(notice)
    own = set()
    for name in (
        "from",
        "to",
        "cc",
        "reply-to",
        "return-path",
        "delivered-to",
        "x-original-to",
        "sender",
    ):
        for value in msg.all(name):
            own.update(addresses(value))

    def usable(address: str) -> bool:
        address = address.lower().strip(".")
        return address not in own and not _DAEMON_ADDRESS.match(address)

    for m in _ANGLE_RECIPIENT.finditer(region):
        address = (m[2] or m[1]).lower()
        if usable(address):
            return [address]
    for intro in _RECIPIENT_INTRO.finditer(region):
        window = region[intro.end() : intro.end() + 400]
        for m in _EMAIL.finditer(window):
            line_start = window.rfind("\n", 0, m.start()) + 1
            if _LABEL_LINE.match(window[line_start : m.start()]):
                continue
            if usable(m[0]):
                return [m[0].lower().strip(".")]
    for m in _TEXT_FIELD_RECIPIENT.finditer(region):
        if usable(m[1]):
            return [m[1].lower()]
    for line in region.splitlines():
        if _LABEL_LINE.match(line):
            continue
        for m in _EMAIL.finditer(line):
            if usable(m[0]):
                return [m[0].lower().strip(".")]
    return []


def _text_diagnostic(region: str, recipient: str | None) -> str | None:
    m = _REASON_INTRO.search(region)
    if m:
        for line in region[m.end() : m.end() + 600].splitlines():
            if line.strip():
                return _one_line(line)
    code = _ENHANCED.search(region) or _SMTP_CODE.search(region)
    if code:
        start = region.rfind("\n", 0, code.start()) + 1
        end = region.find("\n", code.end())
        return _one_line(region[start : end if end >= 0 else len(region)])
    if recipient:
        # Exim, qmail: "<addr>:" then the reason on the same or the next line
        at = region.lower().find(recipient)
        if at >= 0:
            rest = region[at + len(recipient) :].lstrip(">\"' \t:")
            for line in rest[:600].splitlines():
                if line.strip(" \t:"):
                    return _one_line(line)
    return None


def _original_ids(parts: list[Part], notice: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in parts:
        if part.ctype in (
            "message/rfc822",
            "text/rfc822-headers",
            "message/global",
            "message/global-headers",
        ):
            found.extend(part.embedded_message_ids())
    if "essage-" in notice or "ESSAGE-" in notice:  # cheap test before the regex
        found.extend(m[1] for m in _QUOTED_MESSAGE_ID.finditer(notice))
    return tuple(_unique(found))


def _unique(items: object) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:  # type: ignore[attr-defined]
        if item and item not in seen:
            seen[item] = None
    return list(seen)
