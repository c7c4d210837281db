"""Requests to stop: ARF spam complaints and short "unsubscribe" / "remove me" messages.

Conservative on purpose: only a subject or first line that *is* the request counts, so a
candidate who writes "no need to unsubscribe me, I'm still interested" is a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parsing import Part, addresses, message_ids, parse_header_text

_VERB = (
    r"unsubscribe|unsub|remove|opt[\s-]?out|stop|take\s+me\s+off|delete\s+me|"
    r"abmelden|austragen|abbestellen|d[ée]sabonner|d[ée]sinscription|d[ée]sinscrire|"
    r"se\s+d[ée]sinscrire|me\s+d[ée]sinscrire|darse\s+de\s+baja|dar\s+de\s+baja|baja|"
    r"uitschrijven|afmelden|disiscrivi|disiscrivimi|cancellami|cancellazione"
)
_REQUEST = re.compile(
    rf"^(?:please\s+|pls\s+|bitte\s+|merci\s+de\s+)?(?:{_VERB})"
    r"(?:\s+(?:me|mich|moi|my\s+(?:e-?mail|address)))?"
    r"(?:\s+(?:from|off|of)\s+(?:this|your|the|all|these)\s+"
    r"(?:list|mailing\s+list|e-?mails?|mailings?|newsletters?|messages)(?:\s+list)?)?"
    r"(?:\s*[,.]?\s*(?:please|pls|thanks?|thank\s+you|bitte|merci|gracias|grazie|bedankt|danke))?"
    r"[\s.!]*$"
    r"|^(?:please\s+)?(?:stop|quit)\s+(?:e-?mailing|sending|contacting|writing\s+to|messaging)"
    r"(?:\s+me)?(?:\s+(?:e-?mails?|messages))?(?:\s+(?:again|anymore|any\s+more))?[\s.!]*$"
    r"|^(?:please\s+)?(?:do\s+not|don'?t|never)\s+(?:contact|e-?mail|write\s+to|message)\s+me"
    r"(?:\s+(?:again|anymore|any\s+more))?[\s.!]*$",
    re.I,
)
_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|odp|fwd?|wg|tr)\s*(?:\[\d+\])?\s*:\s*)+", re.I
)


@dataclass(frozen=True, slots=True)
class Complaint:
    """An ARF (RFC 5965) feedback report: a recipient marked our message as spam."""

    recipient: str | None
    original_message_ids: tuple[str, ...]
    feedback_type: str


def read_complaint(msg: Part, parts: list[Part]) -> Complaint | None:
    feedback = [p for p in parts if p.ctype == "message/feedback-report"]
    is_arf = msg.ctype == "multipart/report" and (
        msg.params.get("report-type", "").lower() == "feedback-report"
    )
    if not (feedback or is_arf):
        return None
    fields = parse_header_text(feedback[0].text()) if feedback else {}
    recipient = None
    for value in fields.get("original-rcpt-to", []):
        found = addresses(value) or [value.strip().strip("<>").lower()]
        recipient = recipient or next((a for a in found if "@" in a), None)
    ids: list[str] = []
    for part in parts:
        if part.ctype in ("message/rfc822", "text/rfc822-headers"):
            headers = part.message_headers()
            for value in headers.get("message-id", []):
                ids.extend(message_ids(value))
            if recipient is None:
                recipient = next(iter(addresses(", ".join(headers.get("to", [])))), None)
    kind = (fields.get("feedback-type") or ["abuse"])[0].strip().lower()
    return Complaint(recipient, tuple(dict.fromkeys(ids)), kind)


def unsubscribe_reason(msg: Part, subject: str, new_text: str | None) -> str | None:
    """Why this human message is a request to stop mailing, or None."""
    for name in ("to", "cc", "delivered-to", "x-original-to"):
        for value in msg.all(name):
            # an address whose lower-cased local part says "unsubscribe" is in a lower-cased
            # value that says it: most values need no parsing
            if "unsubscribe" in value.lower() and any(
                "unsubscribe" in a.split("@", 1)[0] for a in addresses(value)
            ):
                return "sent to an unsubscribe address"
    bare_subject = _REPLY_PREFIX.sub("", subject).strip()
    if bare_subject and len(bare_subject) <= 80 and _REQUEST.match(bare_subject):
        return "unsubscribe request in subject"
    if new_text:
        first = next((line.strip() for line in new_text.splitlines() if line.strip()), "")
        if first and len(first) <= 80 and _REQUEST.match(first):
            return "unsubscribe request in body"
    return None
