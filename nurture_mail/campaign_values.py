"""The scalar values of a campaign file: ids, time zones, days, send windows, dates, counts.

Each parser takes the plain YAML value and returns the typed value or raises ValueError with
the message a recruiter sees after ``file:line:``.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import date, datetime, time

from nurture_mail.campaign_yaml import describe
from nurture_mail.rules import suggest

# Ids end up in URLs, Message-IDs and database keys (String(100)).
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}", re.ASCII)
VARIANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}", re.ASCII)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*", re.ASCII)
_DAY_MINUTES = 24 * 60


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "my-campaign"


def slug_message(what: str, value: str) -> str:
    return (
        f"{what} {value!r} must be a slug (lowercase letters, digits, '-' and '_'), "
        f"e.g. {slugify(value)!r}"
    )


@functools.cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def parse_timezone(value: object) -> str:
    if value == "candidate":
        return value
    if isinstance(value, str) and value.strip():
        try:
            zoneinfo.ZoneInfo(value)
            return value
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
            pass
        hint = suggest(value, _zone_names() + ("candidate",))
        raise ValueError(f"unknown timezone {value!r}{hint}")
    raise ValueError(
        f"'timezone' must be 'candidate' or an IANA name such as 'Europe/Berlin', got {describe(value)}"
    )


def parse_days(value: object) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("'days' must name at least one day")
    days = set()
    for item in items:
        name = item.lower() if isinstance(item, str) else None
        if name in _DAYS:
            days.add(_DAYS.index(name))
        elif name in _DAY_NAMES:
            days.add(_DAY_NAMES.index(name))
        else:
            hint = suggest(name, _DAYS + _DAY_NAMES) if name else ""
            raise ValueError(
                f"unknown day {describe(item)} in 'days'{hint or ' (expected mon, tue, wed, thu, fri, sat or sun)'}"
            )
    return frozenset(days)


def parse_hours(value: object) -> tuple[time, time] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'hours' must be text such as \"09:00-17:00\", got {describe(value)}")
    match = _HOURS.fullmatch(value)
    if not match:
        raise ValueError(f'bad hours {value!r}: expected "HH:MM-HH:MM", e.g. "09:00-17:00"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or start >= _DAY_MINUTES or end > _DAY_MINUTES:
        raise ValueError(f"bad hours {value!r}: times must be between 00:00 and 24:00")
    if start == end:
        raise ValueError(f"bad hours {value!r}: the window is empty")
    if (start, end) == (0, _DAY_MINUTES):
        return None  # the whole day: no window
    # 24:00 is midnight at the end of the day: "22:00-24:00" becomes the window 22:00-00:00.
    return time(start // 60, start % 60), time((end % _DAY_MINUTES) // 60, end % 60)


def parse_skip_dates(value: object) -> frozenset[date]:
    items = value if isinstance(value, list) else [value]
    dates = set()
    for item in items:
        if isinstance(item, date) and not isinstance(item, datetime):
            dates.add(item)
            continue
        try:
            if not isinstance(item, str) or len(item.strip()) != 10:
                raise ValueError
            dates.add(date.fromisoformat(item.strip()))
        except ValueError:
            raise ValueError(
                f"bad date {describe(item)} in 'skip_dates': expected YYYY-MM-DD"
            ) from None
    return frozenset(dates)


def parse_max_per_day(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"'max_per_day' must be a positive integer, got {describe(value)}")
    return value


def parse_weight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"'weight' must be a positive integer, got {describe(value)}")
    return value
