"""Durations (`2d`, `90m`) and instants (`--now`, ISO dates) as users write them."""

from __future__ import annotations

import re
import reprlib
from datetime import UTC, date, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_DURATION = timedelta(weeks=5200)


def parse_duration(value: object) -> timedelta:
    """`Nm`, `Nh`, `Nd`, `Nw` -> timedelta; raises ValueError with a message fit for users."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        # reprlib: a YAML alias chain can make `value` a list far too big to repr in full.
        raise ValueError(f"expected a duration such as 2d, 12h, 30m or 3w, got {reprlib.repr(value)}")
    if isinstance(value, int):
        if value == 0:
            return timedelta(0)
        raise ValueError(f"a duration needs a unit (m, h, d or w): {value}")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"bad duration {value!r}: expected a number and a unit, e.g. 2d, 12h, 30m, 3w")
    delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if delta > MAX_DURATION:  # 999999w would push due dates past year 9999 (OverflowError)
        raise ValueError(f"duration {value.strip()!r} is too long: at most 100 years (5200w)")
    return delta


def parse_instant(value: str) -> datetime:
    """ISO 8601 date or date-time -> aware UTC datetime. Naive times are taken as UTC."""
    text = value.strip()
    if not text:
        raise ValueError("empty time")
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"bad time {value!r}: expected ISO 8601, e.g. 2027-03-01 or 2027-03-01T12:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
        raise ValueError(f"time {value!r} is out of range") from None


def resolve_moment(value: object, now: datetime) -> datetime:
    """`before`/`after` operands: a duration means that long before now; else an ISO date."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and _DURATION.match(value):
        return now - parse_duration(value)
    if isinstance(value, str):
        return parse_instant(value)
    raise ValueError(f"expected a duration such as 30d or an ISO date, got {reprlib.repr(value)}")


def format_duration(delta: timedelta) -> str:
    """The shortest exact `Nw/Nd/Nh/Nm` spelling of a timedelta (for messages)."""
    minutes = int(delta.total_seconds() // 60)
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"
