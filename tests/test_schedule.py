"""Send windows, time zones, DST, daily caps and sticky A/B variants (nurture_mail.schedule)."""

from __future__ import annotations

import operator
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture_mail.schedule import (
    DailyCounter,
    SchedulePolicy,
    cap_zone_for,
    day_key,
    next_slot,
    pick_variant,
    step_due,
    zone_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
AUCKLAND = ZoneInfo("Pacific/Auckland")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
KOLKATA = ZoneInfo("Asia/Kolkata")
UTC_ZONE = ZoneInfo("UTC")
WEEKDAYS = frozenset(range(5))  # mon-fri

# 2027-03-01 is a Monday; Berlin is on CET (+01:00) until 2027-03-28.
WORKDAY = SchedulePolicy(days=WEEKDAYS, hours=(time(9), time(17)))
NIGHT = SchedulePolicy(days=WEEKDAYS, hours=(time(22), time(6)))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- zone_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_zone", "candidate_zone", "expected"),
    [
        ("candidate", "Pacific/Auckland", "Pacific/Auckland"),
        ("candidate", " Asia/Kolkata ", "Asia/Kolkata"),
        ("candidate", None, "Europe/Berlin"),
        ("candidate", "", "Europe/Berlin"),
        ("candidate", "Mars/Olympus_Mons", "Europe/Berlin"),
        ("candidate", "../../etc/passwd", "Europe/Berlin"),
        ("candidate", "/etc/localtime", "Europe/Berlin"),
        ("candidate", "Europe", "Europe/Berlin"),  # a directory of zones, not a zone
        ("America/Los_Angeles", "Pacific/Auckland", "America/Los_Angeles"),
        ("America/Los_Angeles", None, "America/Los_Angeles"),
    ],
)
def test_zone_for(policy_zone, candidate_zone, expected):
    policy = SchedulePolicy(timezone=policy_zone)
    assert zone_for(policy, candidate_zone, "Europe/Berlin") == ZoneInfo(expected)


@pytest.mark.parametrize(
    ("policy_zone", "default"),
    [("candidate", "Nowhere/Land"), ("Nowhere/Land", "UTC")],
)
def test_zone_for_rejects_a_bad_zone_it_must_use(policy_zone, default):
    with pytest.raises(ValueError, match="Nowhere/Land"):
        zone_for(SchedulePolicy(timezone=policy_zone), "Not/A_Zone", default)


def test_cap_zone_is_utc_per_candidate_else_the_campaign_zone():
    assert cap_zone_for(SchedulePolicy(timezone="candidate"), "Europe/Berlin") == UTC_ZONE
    assert cap_zone_for(SchedulePolicy(timezone="Asia/Kolkata")) == KOLKATA


# --- next_slot ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earliest", "expected"),
    [
        pytest.param("2027-03-03T12:00:00", "2027-03-03T12:00:00", id="inside"),
        pytest.param("2027-03-03T12:00:00.123456", "2027-03-03T12:00:00.123456", id="inside-exact"),
        pytest.param("2027-03-03T08:00:00", "2027-03-03T08:00:00", id="at-opening"),
        pytest.param("2027-03-03T05:00:00", "2027-03-03T08:00:00", id="before-opening"),
        pytest.param("2027-03-02T23:30:00", "2027-03-03T08:00:00", id="utc-yesterday-local-today"),
        pytest.param("2027-03-03T16:00:00", "2027-03-04T08:00:00", id="at-closing"),
        pytest.param("2027-03-03T17:30:00", "2027-03-04T08:00:00", id="after-closing"),
        pytest.param("2027-03-05T16:00:00", "2027-03-08T08:00:00", id="friday-evening"),
        pytest.param("2027-03-06T10:00:00", "2027-03-08T08:00:00", id="saturday"),
        pytest.param("2027-03-07T22:30:00", "2027-03-08T08:00:00", id="sunday-late"),
    ],
)
def test_workday_window_in_berlin(earliest, expected):
    assert next_slot(utc(earliest), WORKDAY, BERLIN) == utc(expected)


def test_result_is_utc_whatever_zone_earliest_is_given_in():
    earliest = datetime(2027, 3, 3, 1, 0, tzinfo=ZoneInfo("America/New_York"))  # 06:00Z
    result = next_slot(earliest, WORKDAY, BERLIN)
    assert result == utc("2027-03-03T08:00:00")
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("zone", "earliest", "expected"),
    [
        pytest.param(BERLIN, "2027-03-03T17:00:00", "2027-03-05T08:00:00", id="skip-thursday"),
        pytest.param(BERLIN, "2027-03-04T10:00:00", "2027-03-05T08:00:00", id="on-skip-date"),
        # 20:00Z on the 3rd is already Thursday the 4th in Auckland (+13:00): skipped there.
        pytest.param(AUCKLAND, "2027-03-03T20:00:00", "2027-03-04T20:00:00", id="local-date"),
    ],
)
def test_skip_dates_are_local_dates(zone, earliest, expected):
    policy = SchedulePolicy(
        days=WEEKDAYS, hours=(time(9), time(17)), skip_dates=frozenset({date(2027, 3, 4)})
    )
    assert next_slot(utc(earliest), policy, zone) == utc(expected)


@pytest.mark.parametrize(
    ("earliest", "expected"),
    [
        pytest.param("2027-03-03T23:00:00", "2027-03-03T23:00:00", id="wed-23h"),
        pytest.param("2027-03-04T02:00:00", "2027-03-04T02:00:00", id="thu-02h-tail-of-wed"),
        pytest.param("2027-03-04T06:00:00", "2027-03-04T22:00:00", id="thu-at-closing"),
        pytest.param("2027-03-04T07:00:00", "2027-03-04T22:00:00", id="thu-07h"),
        pytest.param("2027-03-06T02:00:00", "2027-03-06T02:00:00", id="sat-02h-tail-of-fri"),
        pytest.param("2027-03-06T23:00:00", "2027-03-08T22:00:00", id="sat-23h"),
        pytest.param("2027-03-07T02:00:00", "2027-03-08T22:00:00", id="sun-02h-tail-of-sat"),
        pytest.param("2027-03-08T02:00:00", "2027-03-08T22:00:00", id="mon-02h-tail-of-sun"),
    ],
)
def test_overnight_window_tail_belongs_to_the_opening_day(earliest, expected):
    assert next_slot(utc(earliest), NIGHT, UTC_ZONE) == utc(expected)


@pytest.mark.parametrize(
    ("earliest", "expected"),
    [
        pytest.param("2027-03-03T02:00:00", "2027-03-03T02:00:00", id="wed-02h-tail-of-tue"),
        pytest.param("2027-03-03T23:00:00", "2027-03-04T22:00:00", id="wed-23h-skipped"),
        pytest.param(
            "2027-03-04T02:00:00", "2027-03-04T22:00:00", id="thu-02h-tail-of-skipped-wed"
        ),
    ],
)
def test_overnight_window_skip_date_is_the_opening_date(earliest, expected):
    policy = SchedulePolicy(
        days=WEEKDAYS, hours=(time(22), time(6)), skip_dates=frozenset({date(2027, 3, 3)})
    )
    assert next_slot(utc(earliest), policy, UTC_ZONE) == utc(expected)


@pytest.mark.parametrize(
    ("zone", "earliest", "expected"),
    [
        # Thursday 06:00Z: 19:00 in Auckland, Wednesday 22:00 in Los Angeles, 11:30 in Kolkata.
        pytest.param(AUCKLAND, "2027-01-14T06:00:00", "2027-01-14T20:00:00", id="auckland"),
        pytest.param(LOS_ANGELES, "2027-01-14T06:00:00", "2027-01-14T17:00:00", id="los-angeles"),
        pytest.param(KOLKATA, "2027-01-14T06:00:00", "2027-01-14T06:00:00", id="kolkata"),
        pytest.param(KOLKATA, "2027-01-14T02:00:00", "2027-01-14T03:30:00", id="kolkata-half-hour"),
        # Friday 19:00Z is already Saturday 08:00 in Auckland: on to Monday 09:00 NZDT.
        pytest.param(AUCKLAND, "2027-01-15T19:00:00", "2027-01-17T20:00:00", id="auckland-weekend"),
    ],
)
def test_candidate_zones_far_apart(zone, earliest, expected):
    assert next_slot(utc(earliest), WORKDAY, zone) == utc(expected)


@pytest.mark.parametrize(
    ("hours", "earliest", "expected"),
    [
        # 2027-03-28: Berlin jumps from 02:00 CET to 03:00 CEST (01:00Z).
        pytest.param(
            (time(2, 30), time(5)), "2027-03-27T23:00:00", "2027-03-28T01:00:00", id="start-in-gap"
        ),
        pytest.param(
            (time(2, 30), time(5)),
            "2027-03-28T02:00:00",
            "2027-03-28T02:00:00",
            id="inside-gap-day",
        ),
        pytest.param(
            (time(2), time(2, 59)), "2027-03-27T23:00:00", "2027-03-29T00:00:00", id="window-in-gap"
        ),
        # 2027-10-31: Berlin goes back from 03:00 CEST (01:00Z) to 02:00 CET; 02:30 happens twice.
        pytest.param(
            (time(2, 30), time(5)),
            "2027-10-30T22:00:00",
            "2027-10-31T00:30:00",
            id="start-ambiguous",
        ),
        pytest.param(
            (time(2, 30), time(5)),
            "2027-10-31T00:45:00",
            "2027-10-31T00:45:00",
            id="between-the-two",
        ),
        pytest.param(
            (time(1), time(2, 30)), "2027-10-31T00:45:00", "2027-11-01T00:00:00", id="end-ambiguous"
        ),
        pytest.param(
            (time(22), time(6)), "2027-10-31T04:00:00", "2027-10-31T04:00:00", id="overnight-25h"
        ),
    ],
)
def test_dst_in_berlin(hours, earliest, expected):
    policy = SchedulePolicy(hours=hours)
    assert next_slot(utc(earliest), policy, BERLIN) == utc(expected)


@pytest.mark.parametrize(
    ("zone", "earliest", "expected"),
    [
        pytest.param(BERLIN, "2027-03-03T03:17:42.5", "2027-03-03T03:17:42.5", id="any-time"),
        pytest.param(
            BERLIN, "2027-03-06T10:00:00", "2027-03-07T23:00:00", id="weekend-to-midnight"
        ),
    ],
)
def test_hours_none_means_any_time_of_an_allowed_day(zone, earliest, expected):
    policy = SchedulePolicy(days=WEEKDAYS, hours=None)
    assert next_slot(utc(earliest), policy, zone) == utc(expected)


def test_sao_paulo_day_without_midnight_opens_at_the_first_instant():
    # Sao Paulo skipped midnight on Sunday 2018-11-04: the day began at 01:00 -02:00.
    policy = SchedulePolicy(days=frozenset({6}), hours=None)  # Sundays only
    result = next_slot(utc("2018-11-03T12:00:00"), policy, ZoneInfo("America/Sao_Paulo"))
    assert result == utc("2018-11-04T03:00:00")


def test_twenty_four_hour_window_when_start_equals_end():
    policy = SchedulePolicy(days=frozenset({0}), hours=(time(9), time(9)))  # Mon 09:00 - Tue 09:00
    assert next_slot(utc("2027-03-02T08:59:00"), policy, UTC_ZONE) == utc("2027-03-02T08:59:00")
    assert next_slot(utc("2027-03-02T09:00:00"), policy, UTC_ZONE) == utc("2027-03-08T09:00:00")


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(SchedulePolicy(days=frozenset()), id="no-days"),
        pytest.param(
            SchedulePolicy(
                days=frozenset({0}),
                skip_dates=frozenset(date(2027, 3, 1) + timedelta(weeks=w) for w in range(200)),
            ),
            id="every-monday-skipped",
        ),
    ],
)
def test_impossible_policy_raises(policy):
    with pytest.raises(ValueError):
        next_slot(utc("2027-03-01T00:00:00"), policy, UTC_ZONE)


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot(datetime(2027, 3, 3, 12), WORKDAY, BERLIN)


# --- step_due and day_key -------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "wait", "expected"),
    [
        pytest.param(
            utc("2027-03-01T10:00:00"),
            timedelta(days=2),
            utc("2027-03-03T10:00:00"),
            id="in-window",
        ),
        pytest.param(
            utc("2027-03-04T10:00:00"),
            timedelta(days=2),
            utc("2027-03-08T08:00:00"),
            id="to-monday",
        ),
        pytest.param(
            utc("2027-03-01T10:00:00"), timedelta(0), utc("2027-03-01T10:00:00"), id="no-wait"
        ),
    ],
)
def test_step_due(anchor, wait, expected):
    assert step_due(anchor, wait, WORKDAY, BERLIN) == expected


def test_step_due_wait_is_elapsed_time_across_dst():
    # 24 h after 12:00 CET on the eve of DST is 13:00 CEST, not 12:00 CEST.
    anytime = SchedulePolicy()
    anchor = datetime(2027, 3, 27, 12, tzinfo=BERLIN)  # 11:00Z
    assert step_due(anchor, timedelta(days=1), anytime, BERLIN) == utc("2027-03-28T11:00:00")


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (UTC_ZONE, date(2027, 1, 14)),
        (AUCKLAND, date(2027, 1, 15)),
        (LOS_ANGELES, date(2027, 1, 14)),
    ],
)
def test_day_key_is_the_local_calendar_day(zone, expected):
    assert day_key(utc("2027-01-14T23:30:00"), zone) == expected


# --- DailyCounter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "counts", "expected"),
    [
        pytest.param(
            2,
            None,
            ["2027-03-05T10:00:00", "2027-03-05T10:00:00", "2027-03-08T08:00:00"],
            id="overflow-to-monday",
        ),
        pytest.param(
            1,
            None,
            ["2027-03-05T10:00:00", "2027-03-08T08:00:00", "2027-03-09T08:00:00"],
            id="one-a-day",
        ),
        pytest.param(
            2,
            {date(2027, 3, 5): 2, date(2027, 3, 8): 1},
            ["2027-03-08T08:00:00", "2027-03-09T08:00:00", "2027-03-09T08:00:00"],
            id="seeded",
        ),
        pytest.param(None, None, ["2027-03-05T10:00:00"] * 3, id="no-cap"),
    ],
)
def test_daily_counter_pushes_overflow_to_the_next_allowed_day(cap, counts, expected):
    counter = DailyCounter(cap, counts)
    placed = [counter.place(utc("2027-03-05T10:00:00"), WORKDAY, BERLIN, BERLIN) for _ in expected]
    assert placed == [utc(text) for text in expected]


def test_daily_counter_remaining_and_seed_is_not_mutated():
    seed = {date(2027, 3, 5): 1}
    counter = DailyCounter(2, seed)
    assert counter.place(utc("2027-03-05T10:00:00"), WORKDAY, BERLIN, BERLIN) == utc(
        "2027-03-05T10:00:00"
    )
    assert counter.remaining(date(2027, 3, 5)) == 0
    assert counter.remaining(date(2027, 3, 8)) == 2
    assert seed == {date(2027, 3, 5): 1}
    assert DailyCounter(None).remaining(date(2027, 3, 5)) is None


def test_daily_counter_counts_days_in_the_cap_zone():
    # Candidates in Auckland, cap counted in UTC: the next UTC day starts at 13:00 in Auckland.
    counter = DailyCounter(1)
    earliest = utc("2027-01-13T20:00:00")  # Thursday 09:00 NZDT, UTC day 13th
    placed = [counter.place(earliest, WORKDAY, AUCKLAND, UTC_ZONE) for _ in range(3)]
    assert placed == [
        utc("2027-01-13T20:00:00"),
        utc("2027-01-14T00:00:00"),
        utc("2027-01-15T00:00:00"),
    ]
    assert counter.counts == {date(2027, 1, 13): 1, date(2027, 1, 14): 1, date(2027, 1, 15): 1}


@pytest.mark.parametrize("cap", [0, -1])
def test_daily_counter_refuses_a_cap_below_one(cap):
    with pytest.raises(ValueError):
        DailyCounter(cap)


# --- pick_variant ---------------------------------------------------------------------

AB = [("a", 1), ("b", 1)]


def test_pick_variant_without_variants_is_none():
    assert pick_variant("dana@example.com", "check-in", []) is None


@pytest.mark.parametrize(
    ("key", "variants", "expected"),
    [
        # Pinned: a change here would re-shuffle every live A/B test (and means hash() crept in).
        ("dana@example.com", AB, "a"),
        ("sam@example.com", AB, "b"),
        ("sam@example.com", [("a", 1), ("b", 1), ("c", 1)], "c"),
        ("sam@example.com", [("only", 5)], "only"),
        ("sam@example.com", [("never", 0), ("always", 1)], "always"),
    ],
)
def test_pick_variant_is_pinned(key, variants, expected):
    assert pick_variant(key, "check-in", variants) == expected


@pytest.mark.parametrize("variants", [[("a", 1), ("b", -1)], [("a", 0), ("b", 0)]])
def test_pick_variant_refuses_bad_weights(variants):
    with pytest.raises(ValueError):
        pick_variant("dana@example.com", "check-in", variants)


@given(
    key=st.text(max_size=40),
    step=st.text(max_size=20),
    weights=st.lists(st.integers(0, 10), min_size=1, max_size=5).filter(any),
)
def test_pick_variant_is_sticky(key, step, weights):
    variants = [(f"v{i}", w) for i, w in enumerate(weights)]
    first = pick_variant(key, step, variants)
    assert first == pick_variant(key, step, tuple(variants))
    assert dict(variants)[first] > 0


@pytest.mark.parametrize(("weights", "low", "high"), [((1, 1), 0.45, 0.55), ((3, 1), 0.70, 0.80)])
def test_pick_variant_follows_weights(weights, low, high):
    variants = [("a", weights[0]), ("b", weights[1])]
    picks = [
        pick_variant(f"candidate-{i}@example.com", "check-in", variants) for i in range(10_000)
    ]
    assert low <= picks.count("a") / len(picks) <= high


# --- next_slot against a brute-force reference ----------------------------------------

MINUTE = timedelta(minutes=1)
# Zones with their offset changes (roughly, UTC): property cases often start near one.
TRANSITIONS = {
    "UTC": [],
    "Asia/Kolkata": [],
    "Asia/Kathmandu": [],
    "Europe/Berlin": ["2027-03-28T01:00", "2027-10-31T01:00"],
    "Europe/Dublin": ["2027-03-28T01:00", "2027-10-31T01:00"],  # "negative" DST in tzdata
    "America/Los_Angeles": ["2027-03-14T10:00", "2027-11-07T09:00"],
    "Pacific/Auckland": ["2027-04-03T14:00", "2027-09-25T14:00"],
    "Pacific/Chatham": ["2027-04-03T14:00", "2027-09-25T14:00"],
    "Australia/Lord_Howe": ["2027-04-03T15:00", "2027-10-02T15:30"],  # 30-minute DST
    "America/Sao_Paulo": ["2018-11-04T03:00", "2019-02-17T02:00"],  # DST at midnight
    "Pacific/Apia": ["2011-12-30T10:00"],  # skipped 2011-12-30 entirely
}
ZONES = [ZoneInfo(name) for name in TRANSITIONS]


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


@cache
def _reference_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first minute whose wall clock reads `day at` or later, found by walking minutes."""
    target = datetime.combine(day, at)
    moment = datetime.combine(day, at, zone).astimezone(UTC)
    while _wall(moment - MINUTE, zone) >= target:
        moment -= MINUTE
    while _wall(moment, zone) < target:
        moment += MINUTE
    return moment


def _reference_window(
    day: date, policy: SchedulePolicy, zone: ZoneInfo
) -> tuple[datetime, datetime] | None:
    if day.weekday() not in policy.days or day in policy.skip_dates:
        return None
    start, end = policy.hours or (time(0), time(0))
    closing_day = day + timedelta(days=1) if end <= start else day
    return _reference_instant(day, start, zone), _reference_instant(closing_day, end, zone)


def _qualifies(moment: datetime, policy: SchedulePolicy, zone: ZoneInfo) -> bool:
    local_day = _wall(moment, zone).date()
    for days_back in range(-1, 3):
        window = _reference_window(local_day - timedelta(days=days_back), policy, zone)
        if window and window[0] <= moment < window[1]:
            return True
    return False


# Often in the small hours, where clocks change.
minute_times = st.builds(
    time, st.integers(0, 23) | st.integers(0, 3), st.sampled_from([0, 15, 30, 45, 59])
)


@st.composite
def scheduling_cases(draw):
    name = draw(st.sampled_from(sorted(TRANSITIONS)))
    zone = ZoneInfo(name)
    anywhere = st.datetimes(
        datetime(2005, 1, 1), datetime(2035, 12, 31), timezones=st.sampled_from(ZONES)
    )
    near_transition = st.builds(
        operator.add,
        st.sampled_from([utc(text) for text in TRANSITIONS[name]] or [utc("2027-03-01T00:00")]),
        st.timedeltas(-timedelta(days=3), timedelta(days=3)),
    )
    earliest = draw(anywhere | near_transition)
    skips = draw(st.frozensets(st.integers(-2, 20), max_size=6))
    base = earliest.astimezone(UTC).date()
    policy = SchedulePolicy(
        days=draw(st.frozensets(st.integers(0, 6), min_size=1)),
        hours=draw(st.none() | st.tuples(minute_times, minute_times)),
        skip_dates=frozenset(base + timedelta(days=n) for n in skips),
    )
    return earliest, policy, zone


@settings(max_examples=400, deadline=None)
@given(scheduling_cases())
def test_next_slot_is_the_first_qualifying_instant(case):
    earliest, policy, zone = case
    result = next_slot(earliest, policy, zone)
    # In UTC: an aware time in a DST gap or overlap never compares equal across zones.
    earliest = earliest.astimezone(UTC)

    assert result.tzinfo is UTC
    assert result >= earliest
    assert _qualifies(result, policy, zone)
    if result == earliest:
        return
    # Nothing earlier qualifies: earliest itself, every window opening in between...
    assert not _qualifies(earliest, policy, zone)
    day = _wall(earliest, zone).date() - timedelta(days=1)
    while day <= _wall(result, zone).date():
        window = _reference_window(day, policy, zone)
        if window and window[0] < window[1]:
            assert not earliest <= window[0] < result, (day, window)
        day += timedelta(days=1)
    # ...and a bounded sample of the minutes in between.
    first = earliest.replace(second=0, microsecond=0) + MINUTE
    count = max(int((result - first) / MINUTE), 0)
    for i in sorted({0, count - 1, *range(0, count, max(count // 50, 1))}):
        if i >= 0:
            moment = first + i * MINUTE
            assert moment >= result or not _qualifies(moment, policy, zone), moment
