"""Time to first reply: the median and 90th percentile of a group's delays, as PostgreSQL's
`percentile_cont` computes them - linear interpolation between the values at ranks
floor(1 + p * (n - 1)) and the next - without sorting every delay.

The store counts the delays per hour of delay; a coarser group (a step, a campaign) adds its
members' hours up. Running totals over the hours give the hour that holds each wanted rank and
how many delays come before it, so only the delays of those few hours are read exactly:
`wanted_hours`, then `percentiles`. Pure: hours and delays in, seconds out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

PERCENTILES = (0.5, 0.9)


def _ranks(total: int, p: float) -> tuple[int, float]:
    """The lower rank (1-based) around percentile p of `total` values, and the fraction of
    the way to the next one."""
    at = 1 + p * (total - 1)
    low = int(at)
    return low, at - low


def _needed(total: int) -> Iterable[int]:
    for p in PERCENTILES:
        low, fraction = _ranks(total, p)
        yield low
        if fraction:
            yield low + 1


def _locate(hours: Mapping[int, int], ranks: Iterable[int]) -> dict[int, tuple[int, int]]:
    """rank -> (the hour that holds it, its 0-based place among that hour's delays)."""
    wanted = sorted(set(ranks))
    found: dict[int, tuple[int, int]] = {}
    before = 0
    i = 0
    for hour in sorted(hours):
        upto = before + hours[hour]
        while i < len(wanted) and wanted[i] <= upto:
            found[wanted[i]] = (hour, wanted[i] - before - 1)
            i += 1
        if i == len(wanted):
            break
        before = upto
    return found


def wanted_hours(hours: Mapping[int, int]) -> set[int]:
    """The hours of delay whose exact delays the percentiles need."""
    total = sum(hours.values())
    if not total:
        return set()
    return {hour for hour, _ in _locate(hours, _needed(total)).values()}


def percentiles(
    hours: Mapping[int, int], exact: Mapping[int, Sequence[float]]
) -> tuple[float | None, float | None]:
    """(median, p90) in seconds; None without replies. `exact` holds every delay of each hour
    that `wanted_hours` named."""
    total = sum(hours.values())
    if not total:
        return None, None
    places = _locate(hours, _needed(total))
    ordered = {hour: sorted(exact[hour]) for hour in {h for h, _ in places.values()}}

    def value(rank: int) -> float:
        hour, place = places[rank]
        return ordered[hour][place]

    out = []
    for p in PERCENTILES:
        low, fraction = _ranks(total, p)
        out.append(value(low) if not fraction else value(low) * (1 - fraction) + value(low + 1) * fraction)
    return out[0], out[1]
