"""Pure scheduling: when is a step due, given now, the send window, time zones and caps.

One implementation for both `nurture plan` and the sender. Every function here is a pure
function of its arguments: datetimes in must be timezone-aware, datetimes out are in UTC.

Semantics worth knowing:

* A send window belongs to the local date on which it *opens*. An overnight window
  ("22:00-06:00", end <= start) runs into the next date, and its tail after midnight is
  governed by the opening date's weekday and skip dates: with ``days: [fri]`` a window
  opening Friday 22:00 is open until Saturday 06:00, and nothing opens on Saturday night.
  ``start == end`` is a 24-hour window; ``hours: None`` is the 24-hour window from midnight.
* Local times are turned into instants with DST in mind: a time that falls in a
  spring-forward gap becomes the first instant after the gap; a time that occurs twice at
  fall-back means its first occurrence (``fold=0``).
* ``max_per_day`` counts calendar days in a *cap zone*: the campaign's zone, or UTC when
  each candidate has their own zone (see `cap_zone_for`).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# How far next_slot looks ahead before calling a policy impossible (more than two years,
# so that a yearly skip date or a once-a-week window never trips it).
SEARCH_DAYS = 800

_ONE_DAY = timedelta(days=1)
_NO_DAYS = timedelta(0)
_MIDNIGHT = time(0, 0)
_UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class SchedulePolicy:
    """A campaign's `schedule:` block."""

    # "candidate" (the candidate's own zone, else the default) or an IANA zone name.
    timezone: str = "candidate"
    # Allowed weekdays, Monday=0 .. Sunday=6.
    days: frozenset[int] = frozenset(range(7))
    # Local send window [start, end); start > end is an overnight window; None = any time.
    hours: tuple[time, time] | None = None
    skip_dates: frozenset[date] = field(default_factory=frozenset)
    # Sends per calendar day (in the campaign's schedule zone, UTC when per-candidate) or None.
    max_per_day: int | None = None


def _zone_or_none(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name.strip())
    # Bad keys fail in three ways: unknown (KeyError), malformed (ValueError), a directory (OSError).
    except (KeyError, ValueError, OSError):
        return None


def zone_for(
    policy: SchedulePolicy, candidate_timezone: str | None, default_timezone: str
) -> ZoneInfo:
    """The zone whose wall clock a send to this candidate follows.

    ``timezone: candidate`` uses the candidate's zone when it is a valid IANA name, else
    ``default_timezone``; any other value is the campaign's own zone. Raises ValueError when
    the zone that must be used (default or campaign) is not a valid IANA name.
    """
    if policy.timezone == "candidate":
        zone = _zone_or_none(candidate_timezone)
        if zone is not None:
            return zone
        name = default_timezone
    else:
        name = policy.timezone
    zone = _zone_or_none(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return zone


def cap_zone_for(policy: SchedulePolicy, default_timezone: str = "UTC") -> ZoneInfo:
    """The zone whose calendar days ``max_per_day`` counts: the campaign's, or UTC if per-candidate."""
    if policy.timezone == "candidate":
        return _UTC_ZONE
    return zone_for(policy, None, default_timezone)


def _utc(moment: datetime, what: str = "moment") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in ``zone`` reads ``day at`` or later."""
    local = datetime.combine(day, at, zone)  # fold=0: the first occurrence at fall-back
    before = local.utcoffset()
    after = local.replace(fold=1).utcoffset()
    if before >= after:  # an ordinary time, or an ambiguous one (first occurrence)
        return (local - before).replace(tzinfo=UTC)
    # In a spring-forward gap: the transition lies in (local - after, local - before]. Find
    # it by bisection over whole seconds (tz transitions are whole seconds); gaps are rare.
    lo = math.floor((local - after).replace(tzinfo=UTC).timestamp())  # still the old offset
    hi = math.ceil((local - before).replace(tzinfo=UTC).timestamp())  # already the new one
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def next_slot(earliest: datetime, policy: SchedulePolicy, zone: ZoneInfo) -> datetime:
    """The first instant >= ``earliest`` inside a send window of ``policy`` in ``zone`` (UTC).

    Raises ValueError when no window opens within `SEARCH_DAYS` days (an impossible policy).
    """
    start_utc = _utc(earliest, "earliest")
    if not policy.days:
        raise ValueError("schedule allows no weekday")
    start, end = policy.hours or (_MIDNIGHT, _MIDNIGHT)
    # end <= start: the window closes on the next local date (overnight or 24 hours).
    close_offset = _ONE_DAY if end <= start else _NO_DAYS
    day = start_utc.astimezone(zone).date()
    if close_offset:
        day -= _ONE_DAY  # yesterday's window may still be open
    # Day by day, never minute by minute: windows are ordered and disjoint, so the first
    # window that has not closed yet holds the answer.
    for _ in range(SEARCH_DAYS):
        if day.weekday() in policy.days and day not in policy.skip_dates:
            closes = _instant(day + close_offset, end, zone)
            if start_utc < closes:
                opens = _instant(day, start, zone)
                if opens < closes:  # a window swallowed by a DST gap is empty
                    return max(opens, start_utc)
        day += _ONE_DAY
    raise ValueError(f"no send window in the {SEARCH_DAYS} days from {earliest.isoformat()}")


# Sends placed together mostly share their earliest time (a batch fell due at once, a forecast
# of a thousand candidates enrolled in one tick): next_slot is pure in the instant, so the
# answer is kept. Aware datetimes compare and hash by instant, whatever their zone.
_next_slot = functools.lru_cache(maxsize=4096)(next_slot)


def step_due(anchor: datetime, wait: timedelta, policy: SchedulePolicy, zone: ZoneInfo) -> datetime:
    """When a step is due: the first slot after ``wait`` has elapsed since ``anchor`` (UTC).

    ``anchor`` is the enrolment time for the first step and the previous send for the rest.
    """
    # In UTC, so the wait is elapsed time whatever tzinfo the caller's anchor carries.
    return next_slot(_utc(anchor, "anchor") + wait, policy, zone)


def day_key(moment: datetime, zone: ZoneInfo) -> date:
    """The calendar day in ``zone`` that a send at ``moment`` counts against."""
    return _utc(moment).astimezone(zone).date()


class DailyCounter:
    """Sends per calendar day for one campaign, so that ``max_per_day`` holds.

    In memory only; seed it with the counts the store already holds for the days ahead.
    """

    def __init__(self, cap: int | None, counts: Mapping[date, int] | None = None):
        if cap is not None and cap < 1:
            raise ValueError(f"max_per_day must be at least 1, got {cap}")
        self.cap = cap
        self.counts: dict[date, int] = dict(counts or {})
        # (zone, day) -> a later day that may still have room, path-compressed over days that
        # are full (for every zone) or have no slot in that zone (e.g. a weekend), so placing
        # many sends behind a long run of full days stays cheap (a forecast of 100,000).
        self._after: dict[tuple[str, date], date] = {}
        self._dead: set[tuple[str, date]] = set()

    def remaining(self, day: date) -> int | None:
        """Sends still allowed on ``day``; None when there is no cap."""
        if self.cap is None:
            return None
        return max(self.cap - self.counts.get(day, 0), 0)

    def _first_open(self, day: date, zkey: str) -> date:
        """The first day >= ``day`` that is neither full nor slot-less in this zone."""
        path = []
        while self.remaining(day) == 0 or (zkey, day) in self._dead:
            path.append(day)
            day = self._after.get((zkey, day), day + _ONE_DAY)
        for skipped in path:  # full days never empty again; dead days stay dead
            self._after[(zkey, skipped)] = day
        return day

    def place(
        self, earliest: datetime, policy: SchedulePolicy, zone: ZoneInfo, cap_zone: ZoneInfo
    ) -> datetime:
        """The first slot >= ``earliest`` on a day that is not full yet; records the send."""
        slot = _next_slot(earliest, policy, zone)
        if self.cap is None:  # no day is ever full: nothing to count
            return slot
        day = day_key(slot, cap_zone)
        zkey = zone.key
        for _ in range(SEARCH_DAYS):
            if self.remaining(day) != 0:
                self.counts[day] = self.counts.get(day, 0) + 1
                return slot
            # The day is full: the first slot from the next day that still has room.
            open_day = self._first_open(day, zkey)
            slot = _next_slot(_instant(open_day, _MIDNIGHT, cap_zone), policy, zone)
            day = day_key(slot, cap_zone)
            if day != open_day:  # that day has no slot for this zone at all
                self._dead.add((zkey, open_day))
        raise ValueError(f"every day for {SEARCH_DAYS} days already holds {self.cap} sends")


def pick_variant(
    candidate_key: str, step_id: str, variants: Sequence[tuple[str, int]]
) -> str | None:
    """A weighted A/B choice that is the same for a candidate and step in every process.

    ``variants`` are ``(id, weight)`` pairs; weight 0 means never. None when there are none.
    """
    if not variants:
        return None
    total = sum(weight for _, weight in variants)
    if any(weight < 0 for _, weight in variants) or total <= 0:
        raise ValueError(f"variant weights must be >= 0 with a positive sum: {list(variants)}")
    # A keyed digest, never hash(): that one is salted per process.
    digest = hashlib.blake2b(
        f"{candidate_key}\x1f{step_id}".encode(), digest_size=8, person=b"nurture-ab"
    ).digest()
    # Integer arithmetic: point is the 64-bit fraction scaled to [0, total), exactly.
    point = (int.from_bytes(digest, "big") * total) >> 64
    for variant_id, weight in variants:
        if point < weight:
            return variant_id
        point -= weight
    raise AssertionError("unreachable: point < total")
