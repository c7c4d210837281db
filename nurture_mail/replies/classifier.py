"""classify(raw) -> Classification: the one decision the inbox makes about each message.

Order matters and is deliberate: complaints and delivery reports are read first (a bounce
often carries Auto-Submitted and Precedence: bulk too), then automatic replies (which are
never unsubscribes), then unsubscribe requests, then mail that is clearly not personal
(lists, no-reply senders); what remains is a person writing, i.e. a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from .autoreplies import auto_reply_reason
from .bounces import read_bounce
from .dates import parse_return_date
from .htmltext import html_to_text
from .parsing import (
    Part,
    addresses,
    decode_header_value,
    header_date,
    leaves,
    message_ids,
    parse_message,
)
from .quotes import extract_reply_text, has_quoted_original
from .unsubscribes import read_complaint, unsubscribe_reason

_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "list-archive")
_NO_REPLY = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|notifications?|notify|alerts?|"
    r"newsletters?|news|mailer|bounces?)(?:[-_+.].*)?$",
    re.I,
)
_REPLY_SUBJECT = re.compile(
    r"^\s*(?:re|aw|sv|vs|antw|odp|ynt|res|rif|r|ref|réf)\s*(?:\[\d+\])?\s*:", re.I
)


class InboundKind(StrEnum):
    """What an inbound message is, as far as a campaign is concerned."""

    REPLY = "reply"  # a person wrote back: the candidate answered
    AUTO_REPLY = "auto_reply"  # an out-of-office note or other automatic responder
    BOUNCE = "bounce"  # a mail server says the message was not (or not yet) delivered
    UNSUBSCRIBE = "unsubscribe"  # the recipient asked to stop, or reported spam (ARF)
    OTHER = "other"  # newsletters, receipts, delivery confirmations, unreadable input


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one inbound message and the facts it was based on."""

    kind: InboundKind
    bounce: str | None = None  # "hard" | "soft" for bounces
    recipient: str | None = None  # the failed (bounce) or complaining (ARF) address
    status: str | None = None  # enhanced status code such as "5.1.1"
    diagnostic: str | None = None  # the server's reason, one short line
    message_id: str | None = None  # this message's own Message-ID, without <>
    in_reply_to: tuple[str, ...] = ()  # In-Reply-To then References ids, without <>
    original_message_ids: tuple[str, ...] = ()  # ids of our message quoted in a report
    from_addr: str | None = None
    subject: str = ""
    date: datetime | None = None  # the Date header, aware UTC
    return_date: date | None = None  # auto-replies: first day the person is back
    reply_text: str | None = None  # replies: the new text, without quote and signature
    reason: str = ""  # which rule decided
    recipients: tuple[str, ...] = ()  # every failed recipient a bounce names


def classify(raw: bytes, *, received: datetime | None = None) -> Classification:
    """Classify one raw RFC 5322 message; never raises.

    `received` is when the inbox got the message; it anchors return dates written without a
    year ("back on 3 March"). Without it the message's Date header is used.
    """
    try:
        return _classify(raw, received)
    except Exception as exc:  # last line of defence: one bad message must not stop a sync
        return Classification(
            InboundKind.OTHER, reason=f"unreadable message ({type(exc).__name__})"
        )


def _classify(raw: bytes, received: datetime | None) -> Classification:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = bytes(raw)
    if not raw.strip():
        return Classification(InboundKind.OTHER, reason="empty message")
    msg = parse_message(raw)
    if not msg.headers:
        return Classification(InboundKind.OTHER, reason="no header section: not an email")
    sent = header_date(msg.header("date"))
    subject = decode_header_value(msg.header("subject"))
    from_addr = next(iter(addresses(msg.header("from"))), None)
    thread = _thread_ids(msg)
    envelope = {
        "message_id": next(iter(message_ids(msg.header("message-id"))), None),
        "in_reply_to": thread,
        "from_addr": from_addr,
        "subject": subject,
        "date": sent,
    }
    parts = leaves(msg)

    complaint = read_complaint(msg, parts)
    if complaint is not None:
        return Classification(
            InboundKind.UNSUBSCRIBE,
            recipient=complaint.recipient,
            original_message_ids=complaint.original_message_ids,
            reason=f"ARF feedback report ({complaint.feedback_type})",
            **envelope,
        )
    if _is_read_receipt(msg, parts):
        return Classification(
            InboundKind.OTHER, reason="read receipt (message disposition notification)", **envelope
        )

    bounce = read_bounce(msg, parts)
    if bounce is not None:
        return Classification(
            InboundKind.BOUNCE if bounce.failed else InboundKind.OTHER,
            bounce=bounce.severity,
            recipient=bounce.recipient,
            recipients=bounce.recipients,
            status=bounce.status,
            diagnostic=bounce.diagnostic,
            original_message_ids=bounce.original_message_ids,
            reason=bounce.reason,
            **envelope,
        )

    text = _body_text(parts)
    auto = auto_reply_reason(msg, subject, text[:1000].lstrip())
    if auto is not None:
        reference = received.date() if received else (sent.date() if sent else None)
        back = None
        if reference is not None:
            back = parse_return_date(subject + "\n" + text[:3000], reference)
        return Classification(InboundKind.AUTO_REPLY, return_date=back, reason=auto, **envelope)

    new_text = extract_reply_text(text)
    request = unsubscribe_reason(msg, subject, new_text)
    if request is not None:
        return Classification(
            InboundKind.UNSUBSCRIBE, reply_text=new_text, reason=request, **envelope
        )

    not_personal = _not_personal(msg, from_addr, thread)
    if not_personal is not None:
        return Classification(InboundKind.OTHER, reason=not_personal, **envelope)
    return Classification(
        InboundKind.REPLY,
        reply_text=new_text,
        reason=_reply_reason(subject, thread, text),
        **envelope,
    )


def _thread_ids(msg: Part) -> tuple[str, ...]:
    ids: list[str] = []
    for name in ("in-reply-to", "references"):
        for value in msg.all(name):
            ids.extend(message_ids(value))
    return tuple(dict.fromkeys(ids))


def _is_read_receipt(msg: Part, parts: list[Part]) -> bool:
    report_type = msg.params.get("report-type", "").lower()
    if msg.ctype == "multipart/report" and report_type == "disposition-notification":
        return True
    return any(p.ctype == "message/disposition-notification" for p in parts)


def _body_text(parts: list[Part]) -> str:
    """The message text: the first inline text/plain part, else the first HTML part as text."""
    html: Part | None = None
    for part in parts:
        if part.is_attachment:
            continue
        if part.ctype == "text/plain":
            return part.text()
        if part.ctype == "text/html" and html is None:
            html = part
    return html_to_text(html.text()) if html is not None else ""


def _not_personal(msg: Part, from_addr: str | None, thread: tuple[str, ...]) -> str | None:
    """Why this is mail from a system or a list rather than a person, or None."""
    if not thread:  # newsletters never answer a message; a person on a list might
        for name in _LIST_HEADERS:
            if msg.header(name):
                return f"mailing list or newsletter ({name.title()})"
    precedence = (msg.header("precedence") or "").strip().lower()
    if precedence == "list":
        return "mailing list (Precedence: list)"
    if from_addr and _NO_REPLY.match(from_addr.split("@", 1)[0]):
        return "automated sender address"
    if from_addr is None and not msg.header("from"):
        return "no sender"
    return None


def _reply_reason(subject: str, thread: tuple[str, ...], text: str) -> str:
    if thread:
        return "In-Reply-To/References headers"
    if _REPLY_SUBJECT.match(subject):
        return "reply subject"
    if has_quoted_original(text):
        return "quotes an earlier message"
    return "message from a person"
