"""Inbound mail classification: reply, auto-reply, bounce, unsubscribe or other.

Pure functions over raw message bytes; no I/O, no clock. `classify` is the entry point;
`extract_reply_text`, `html_to_text` and `parse_return_date` are its reusable pieces.
"""

from __future__ import annotations

from .classifier import Classification, InboundKind, classify
from .dates import parse_return_date
from .htmltext import html_to_text
from .quotes import extract_reply_text

__all__ = [
    "Classification",
    "InboundKind",
    "classify",
    "extract_reply_text",
    "html_to_text",
    "parse_return_date",
]
