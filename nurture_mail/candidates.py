"""Candidate records: turning one imported row into a validated, normalised record.

Pure: no database, no files. The importer feeds rows in; the store writes records out.
Every value is checked against its column's size here (`FIELD_LIMITS`), so an over-long
value is a clear message naming its row or option, never a database error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .durations import parse_instant
from .errors import NurtureError

# Columns with a meaning of their own; every other column becomes a custom attribute.
BUILTIN_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "full_name",
    "status",
    "tags",
    "timezone",
    "owner",
    "role",
    "stage_reached",
    "decided_at",
    "source",
)
# Names rules read as built-in fields, never custom attributes.
RESERVED = ("created_at", "updated_at", "id", "token_key", "attributes", "suppressed")
TEXT_FIELDS = ("first_name", "last_name", "full_name", "owner", "role", "stage_reached", "source")
MAX_FIELD = 10_000  # characters; anything longer is a broken export, not a name
# The sizes of the database columns (models.Candidate, CandidateTag): PostgreSQL refuses longer.
FIELD_LIMITS = {"first_name": 200, "last_name": 200, "full_name": 400, "owner": 200, "role": 200,
                "stage_reached": 100, "source": 200, "timezone": 64, "tag": 100}
_STATUS = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_NUMBER = re.compile(r"^-?(0|[1-9]\d{0,14})(\.\d{1,10})?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class RowError(ValueError):
    """A row that cannot be imported; the message says why (the importer adds file:line)."""


@dataclass(frozen=True)
class CandidateRecord:
    email: str
    fields: dict[str, object]  # built-in fields present in the row (never email/tags)
    tags: tuple[str, ...] = ()
    attributes: dict[str, object] = field(default_factory=dict)


# A plain dot-atom local part; anything fancier (quoted, Unicode) takes the full validator.
_PLAIN_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


# email_validator is imported where it is used: its import (~20 ms of compiled patterns) is
# the daemon's to skip, which reaches this module through the store but validates nothing.
@lru_cache(maxsize=8192)
def _checked_domain(domain: str) -> str:
    """Domain validation is the costly part and real pools share few domains: do it once each."""
    from email_validator import validate_email

    result = validate_email("x@" + domain, check_deliverability=False, allow_smtputf8=False)
    return (result.ascii_domain or result.domain).lower()


def normalise_email(raw: str) -> str:
    """Validate (syntax only, no DNS) and normalise: IDNA domain, whole address lower-cased.

    Mailbox providers treat local parts case-insensitively in practice, so two addresses that
    differ only in case are one candidate.
    """
    text = raw.strip()
    if not text:
        raise RowError("email is empty")
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL.match(local):
        try:
            address = f"{local.lower()}@{_checked_domain(domain)}"
        except ValueError:  # EmailNotValidError is one
            address = ""  # let the full validator word the error
        if address and len(address) <= 254:
            return address
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise RowError(f"invalid email {text!r}: {exc}") from None
    return (result.ascii_email or result.normalized).lower()


def column_key(name: str) -> str:
    """Header spelling -> field name: trimmed, lower-case, spaces and dashes to underscores."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def clean_tag(value: object) -> str:
    """One tag as stored: no control characters, trimmed, lower-case ('' when blank)."""
    tag = _CONTROL.sub("", str(value)).strip().lower()
    limit = FIELD_LIMITS["tag"]
    if len(tag) > limit:
        raise RowError(
            f"tag {tag[:20]!r}... is too long ({len(tag)} characters; the limit is {limit})"
        )
    return tag


def parse_tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(";")
    tags = []
    for item in items:
        tag = clean_tag(item)
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def clean_status(value: str) -> str:
    """A status as stored (one lower-case word of at most 50 characters), or RowError."""
    status = _CONTROL.sub("", value).strip().lower()
    if not _STATUS.match(status):
        shown = repr(status) if len(status) <= 60 else f"{status[:20]!r}... ({len(status)} characters)"
        raise RowError(f"invalid status {shown}: use a single lower-case word such as rejected")
    return status


def option_tags(option: str, values: Iterable[str]) -> tuple[str, ...]:
    """Tags given on the command line (`--tag T`...), cleaned as a file's are.

    NurtureError names the option: a tag the database cannot hold (over 100 characters) is
    refused here, before anything is written, never left to fail as a database error.
    """
    tags: list[str] = []
    for value in values:
        try:
            tag = clean_tag(value)
        except RowError as exc:
            raise NurtureError(f"{option}: {exc}") from None
        if not tag:
            raise NurtureError(f"{option}: a tag cannot be empty")
        if ";" in tag:  # files separate tags with ";": such a tag could not be re-imported
            raise NurtureError(f"{option}: {tag!r} contains ';'; give one {option} per tag")
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


def option_status(option: str, value: str | None) -> str | None:
    """A status given on the command line (`--status S`), checked as a file's is."""
    if value is None:
        return None
    try:
        return clean_status(value)
    except RowError as exc:
        raise NurtureError(f"{option}: {exc}") from None


def coerce_attribute(value: object) -> object:
    """CSV cells are text; turn the obvious booleans and numbers into values rules can compare."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    lowered = text.lower()
    # Only true/false: "no" may well be Norway's country code.
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    return text


def _without_controls(value: object) -> object:
    """Control characters dropped inside JSON lists and objects too (PostgreSQL's JSONB
    refuses NUL, and no template or rule wants them)."""
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, list):
        return [_without_controls(v) for v in value]
    if isinstance(value, dict):
        return {_CONTROL.sub("", str(k)): _without_controls(v) for k, v in value.items()}
    return value


def _clean_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    text = _CONTROL.sub("", str(value)).strip()
    limit = FIELD_LIMITS.get(name, MAX_FIELD)
    if len(text) > limit:
        raise RowError(f"{name} is too long ({len(text)} characters; the limit is {limit})")
    return text or None


def record_from_row(
    row: Mapping[str, object],
    *,
    extra_tags: tuple[str, ...] = (),
    status: str | None = None,
) -> CandidateRecord:
    """One row (field name -> value) to a record, or RowError."""
    raw_email = row.get("email")
    if raw_email is None or (isinstance(raw_email, str) and not raw_email.strip()):
        raise RowError("email is empty")
    if not isinstance(raw_email, str):
        raise RowError(f"email must be text, got {raw_email!r}")
    email = normalise_email(raw_email)

    fields: dict[str, object] = {}
    for name in TEXT_FIELDS:
        if name in row:
            value = _clean_text(name, row[name])
            if value is not None:
                fields[name] = value

    given_status = status or _clean_text("status", row.get("status"))
    if given_status:
        fields["status"] = clean_status(given_status)

    tz = _clean_text("timezone", row.get("timezone"))
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            raise RowError(f"unknown timezone {tz!r} (use an IANA name such as Europe/Berlin)") from None
        fields["timezone"] = tz

    decided = row.get("decided_at")
    if isinstance(decided, str) and decided.strip():
        try:
            fields["decided_at"] = parse_instant(decided).astimezone(UTC).replace(tzinfo=None)
        except ValueError:
            raise RowError(f"invalid decided_at {decided.strip()!r}: use an ISO date such as 2026-09-30") from None
    elif isinstance(decided, datetime):
        fields["decided_at"] = decided

    if "full_name" not in fields and ("first_name" in fields or "last_name" in fields):
        fields["full_name"] = " ".join(
            str(fields[k]) for k in ("first_name", "last_name") if k in fields
        )[: FIELD_LIMITS["full_name"]]

    attributes: dict[str, object] = {}
    for name, value in row.items():
        if name in BUILTIN_FIELDS:
            continue
        if name in RESERVED:
            raise RowError(f"column {name!r} is reserved (set by nurture itself); rename it with --map")
        if not _ATTRIBUTE.match(name):
            raise RowError(
                f"column {name!r} cannot be a custom attribute: use letters, digits and _ only"
            )
        if isinstance(value, str):
            if len(value) > MAX_FIELD:
                raise RowError(f"{name} is too long ({len(value)} characters; the limit is {MAX_FIELD})")
            value = _CONTROL.sub("", value).strip()
            if not value:
                continue
        if value is None:
            continue
        attributes[name] = coerce_attribute(_without_controls(value))

    tags = parse_tags(row.get("tags"))
    for extra in extra_tags:
        tag = clean_tag(extra)
        if tag and tag not in tags:
            tags = tags + (tag,)
    return CandidateRecord(email=email, fields=fields, tags=tags, attributes=attributes)
