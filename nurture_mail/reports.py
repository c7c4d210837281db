"""Report rows -> a report: campaigns with their steps and variants, then JSON, CSV and table rows.

The store counts (sends by state and week, what came back, hours of delay to a reply); this
module adds the counts up to variants, steps and campaigns, works out rates, time to reply
(`reply_times.py`) and the variant significance note, and formats. Nothing here reads the clock
or the database but `gather`, the one function that asks the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from . import reply_times
from .errors import NotFound
from .store import reports as store
from .store.ledger import aware
from .store.responses import CameBack, GroupKey, Kind, Tally

# A variant comparison needs at least this many delivered sends per variant, and this many
# replies in all, before a z-score means anything.
MIN_DELIVERED = 30
MIN_REPLIES = 10
Z_CRITICAL = 1.96  # two-sided, 95%


@dataclass(frozen=True)
class Stats:
    counts: dict[str, int]
    delivered: int
    reply_rate: float | None
    median_reply: float | None = None  # seconds
    p90_reply: float | None = None

    @property
    def replied(self) -> int:
        return self.counts["replied"]


# The counts of every variant, step and campaign.
COUNTS = (
    "sends", "sent", "scheduled", "deferred", "failed", "unknown", "skipped", "cancelled",
    "replied", "auto_replies", "bounced", "bounced_hard", "bounced_soft",
)
EMPTY = Stats(dict.fromkeys(COUNTS, 0), 0, None)


@dataclass(frozen=True)
class VariantTest:
    """Two-proportion z-test between the best and the runner-up variant of a step."""

    leader: str | None
    runner_up: str | None
    z: float | None
    significant: bool
    note: str


@dataclass
class VariantReport:
    id: str | None
    stats: Stats


@dataclass
class StepReport:
    id: str
    number: int | None
    stats: Stats
    variants: list[VariantReport] = field(default_factory=list)
    exits: dict[str, int] = field(default_factory=dict)
    test: VariantTest | None = None


@dataclass
class CampaignReport:
    id: str
    name: str
    status: str | None
    enrolled: int
    active: int
    stats: Stats
    steps: list[StepReport]
    exits: dict[str, int]

    @property
    def unsubscribed(self) -> int:
        return self.exits.get("unsubscribed", 0)


@dataclass
class Report:
    as_of: datetime
    since: datetime | None
    campaigns: list[CampaignReport]
    weekly: list[tuple[date, int, int]]


# --- arithmetic -------------------------------------------------------------------------------


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """z for the difference of two proportions with a pooled standard error; None when it is
    undefined (an empty group, or no variation at all)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    return (x1 / n1 - x2 / n2) / se


def compare_variants(variants: list[VariantReport]) -> VariantTest | None:
    """The leader against the runner-up by reply rate; None with fewer than two variants."""
    named = [v for v in variants if v.id is not None]
    if len(named) < 2:
        return None
    ranked = sorted(named, key=lambda v: (-(v.stats.reply_rate or 0.0), -v.stats.delivered, v.id))
    a, b = ranked[0], ranked[1]
    sa, sb = a.stats, b.stats
    z = two_proportion_z(sa.replied, sa.delivered, sb.replied, sb.delivered)
    small = min(sa.delivered, sb.delivered) < MIN_DELIVERED or sa.replied + sb.replied < MIN_REPLIES
    shown = "n/a" if z is None else f"{z:.2f}"
    if small:
        note = (f"not significant yet: too few sends to tell ({a.id}: {sa.delivered} delivered, "
                f"{b.id}: {sb.delivered}; z={shown})")
        return VariantTest(a.id, b.id, z, False, note)
    if z is None or abs(z) < Z_CRITICAL:
        return VariantTest(a.id, b.id, z, False, f"not significant yet ({a.id} vs {b.id}: z={shown}, |z|<1.96)")
    return VariantTest(a.id, b.id, z, True, f"{a.id} beats {b.id} (z={shown}, p<0.05)")


# --- adding up ----------------------------------------------------------------------------------

# Ledger states as report columns; `claimed` is being sent right now: still scheduled.
_STATE_COLUMNS = {"sent": "sent", "scheduled": "scheduled", "claimed": "scheduled", "deferred": "deferred",
                  "failed": "failed", "unknown": "unknown", "skipped": "skipped", "cancelled": "cancelled"}
_KIND_COLUMNS = {Kind.REPLIED: ("replied",), Kind.AUTO_REPLIED: ("auto_replies",),
                 Kind.BOUNCED_SOFT: ("bounced", "bounced_soft"), Kind.BOUNCED_HARD: ("bounced", "bounced_hard")}

# (level, campaign, step, variant): step and variant None above their level.
LevelKey = tuple[str, str, str | None, str | None]


def _levels(group: GroupKey) -> tuple[LevelKey, ...]:
    campaign, step, variant = group
    return ("variant", campaign, step, variant), ("step", campaign, step, None), ("campaign", campaign, None, None)


@dataclass
class Figures:
    """One variant, step or campaign while its counts are added up."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    step_number: int | None = None
    hours: dict[int, int] = field(default_factory=dict)  # hour of delay -> first replies
    members: set[int] = field(default_factory=set)  # the finest groups in it, by position


@dataclass
class Totals:
    """What the store counted, added up per variant, step and campaign."""

    levels: dict[LevelKey, Figures]
    weekly: list[tuple[date, int, int]]  # (Monday, sent, first replies), weeks with either

    def wanted(self, tally: Tally) -> set[tuple[int, int]]:
        """(group, hour): the delays the percentiles of every level need exactly."""
        return {(g, hour) for figures in self.levels.values()
                for hour in reply_times.wanted_hours(figures.hours)
                for g in figures.members if hour in tally.hours.get(g, {})}


def add_up(counts: store.LedgerCounts, tally: Tally, groups: Sequence[GroupKey]) -> Totals:
    """The store's counts per (campaign, step, variant) and state, and its tally of what came
    back per group, added up to every level. `groups` numbers the tally's groups."""
    position = {group: g for g, group in enumerate(groups)}
    levels: dict[LevelKey, Figures] = {}
    weeks = {week: [n, 0] for week, n in counts.weekly.items()}
    for row in counts.states:
        group = (row.campaign, row.step, row.variant)
        column = _STATE_COLUMNS.get(row.state)
        for key in _levels(group):
            figures = levels.setdefault(key, Figures())
            figures.members.add(position[group])
            figures.counts["sends"] += row.n
            if column:
                figures.counts[column] += row.n
            if key[0] != "campaign" and (figures.step_number is None or row.step_number < figures.step_number):
                figures.step_number = row.step_number
    for g, kinds in tally.kinds.items():
        for key in _levels(groups[g]):
            figures = levels[key]
            for kind, n in kinds.items():
                for column in _KIND_COLUMNS[kind]:
                    figures.counts[column] += n
            for hour, n in tally.hours.get(g, {}).items():
                figures.hours[hour] = figures.hours.get(hour, 0) + n
    for week, n in tally.weekly.items():
        weeks.setdefault(week, [0, 0])[1] += n
    weekly = sorted((store.monday(w), sent, replied) for w, (sent, replied) in weeks.items())
    return Totals(levels, weekly)


def level_stats(totals: Totals, exact: dict[tuple[int, int], list[float]]) -> dict[LevelKey, Stats]:
    """Stats of every level: rates from the counts, time to reply from the hours and the exact
    delays of the wanted ones (`Totals.wanted`)."""
    out = {}
    for key, figures in totals.levels.items():
        counts = figures.counts
        delivered = counts["sent"] - counts["bounced"]
        hours = {hour: [d for g in figures.members for d in exact.get((g, hour), ())]
                 for hour in reply_times.wanted_hours(figures.hours)}
        median, p90 = reply_times.percentiles(figures.hours, hours)
        out[key] = Stats(counts, delivered, counts["replied"] / delivered if delivered else None, median, p90)
    return out


def build(
    *,
    as_of: datetime,
    since: datetime | None,
    campaigns: list[store.CampaignInfo],
    totals: Totals,
    stats: dict[LevelKey, Stats],
    enrollments: dict[str, tuple[int, int]],
    exits: list[tuple[str, str | None, str, int]],
) -> Report:
    """Arrange the figures into campaigns > steps > variants. `totals.weekly` may hold daily
    counts: they are summed into weeks starting on Monday."""
    out = []
    for info in campaigns:
        steps: dict[str, StepReport] = {}
        for (level, cid, step, variant), figures in totals.levels.items():
            if level == "step" and cid == info.id:
                steps[step] = StepReport(step, figures.step_number, stats[(level, cid, step, variant)])
        for (level, cid, step, variant) in totals.levels:
            if level == "variant" and cid == info.id and step in steps:
                steps[step].variants.append(VariantReport(variant, stats[(level, cid, step, variant)]))
        campaign_exits: dict[str, int] = {}
        for cid, step, reason, n in exits:
            if cid != info.id:
                continue
            campaign_exits[reason] = campaign_exits.get(reason, 0) + n
            if step is not None:
                if step not in steps:
                    steps[step] = StepReport(step, None, EMPTY)
                steps[step].exits[reason] = steps[step].exits.get(reason, 0) + n
        for step in steps.values():
            if all(v.id is None for v in step.variants):
                step.variants = []  # a step without variants lists none
            step.variants.sort(key=lambda v: (v.id is None, v.id or ""))
            step.test = compare_variants(step.variants)
        total = stats.get(("campaign", info.id, None, None), EMPTY)
        enrolled, active = enrollments.get(info.id, (0, 0))
        order = {s: i for i, s in enumerate(info.steps)}
        ordered = sorted(
            steps.values(),
            key=lambda s: (order.get(s.id, len(order)), s.number if s.number is not None else 1 << 30, s.id),
        )
        out.append(CampaignReport(info.id, info.name, info.status, enrolled, active, total,
                                  ordered, dict(sorted(campaign_exits.items()))))
    return Report(as_of, since, out, every_week(totals.weekly))


def every_week(days: list[tuple[date, int, int]]) -> list[tuple[date, int, int]]:
    """(day, sent, replied) -> (Monday, sent, replied) for every week from the first to the
    last, quiet weeks included as zeros."""
    if not days:
        return []
    have: dict[date, tuple[int, int]] = {}
    for day, sent, replied in days:
        monday = day - timedelta(days=day.weekday())
        s, r = have.get(monday, (0, 0))
        have[monday] = (s + sent, r + replied)
    first, last = min(have), max(have)
    out = []
    while first <= last:
        out.append((first, *have.get(first, (0, 0))))
        first += timedelta(days=7)
    return out


def gather(db, *, now: datetime, since: datetime | None = None, campaign: str | None = None) -> Report:
    """Run the report queries (one snapshot of the database) and build the report."""
    filters = {"since": since, "campaign": campaign}
    with db.sessions() as session:
        store.snapshot(session)
        infos = store.campaigns(session, campaign)
        if campaign is not None and not infos:
            raise NotFound(f"no campaign {campaign!r} (not in campaigns/, never enrolled anyone)")
        counts = store.state_counts(session, **filters)
        groups = sorted({(c.campaign, c.step, c.variant) for c in counts.states},
                        key=lambda g: (g[0], g[1], g[2] is not None, g[2] or ""))
        with CameBack(session, groups, **filters) as came_back:
            tally = came_back.tally()
            totals = add_up(counts, tally, groups)
            exact = came_back.delays(totals.wanted(tally))
        enrollments = store.enrollment_counts(session, **filters)
        exits = store.exits(session, **filters)
    return build(as_of=now, since=since, campaigns=infos, totals=totals, stats=level_stats(totals, exact),
                 enrollments=enrollments, exits=exits)


# --- shapes -----------------------------------------------------------------------------------


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)


def _stats_dict(s: Stats) -> dict:
    c = s.counts
    return {
        "sent": c["sent"],
        "delivered": s.delivered,
        "replied": c["replied"],
        "reply_rate": _rate(s.reply_rate),
        "auto_replies": c["auto_replies"],
        "bounced": c["bounced"],
        "bounced_hard": c["bounced_hard"],
        "bounced_soft": c["bounced_soft"],
        "failed": c["failed"],
        "unknown": c["unknown"],
        "deferred": c["deferred"],
        "scheduled": c["scheduled"],
        "skipped": c["skipped"],
        "cancelled": c["cancelled"],
        "median_reply_seconds": _seconds(s.median_reply),
        "p90_reply_seconds": _seconds(s.p90_reply),
    }


def _test_dict(t: VariantTest | None) -> dict | None:
    if t is None:
        return None
    return {"leader": t.leader, "runner_up": t.runner_up,
            "z": None if t.z is None else round(t.z, 3), "significant": t.significant, "note": t.note}


def to_json(report: Report) -> dict:
    """The `report --format json` contract: fields may be added, never renamed."""
    campaigns = []
    for c in report.campaigns:
        steps = []
        for s in c.steps:
            steps.append({
                "id": s.id,
                **_stats_dict(s.stats),
                "unsubscribed": s.exits.get("unsubscribed", 0),
                "exits": s.exits,
                "variants": [{"id": v.id, **_stats_dict(v.stats)} for v in s.variants],
                "variant_test": _test_dict(s.test),
            })
        campaigns.append({
            "id": c.id,
            "name": c.name,
            "status": c.status,
            "enrolled": c.enrolled,
            "active": c.active,
            **_stats_dict(c.stats),
            "unsubscribed": c.unsubscribed,
            "exits": c.exits,
            "steps": steps,
        })
    return {
        "as_of": _iso(report.as_of),
        "since": _iso(report.since),
        "definitions": {
            "sent": "accepted by the SMTP server; a later bounce still counts as sent",
            "delivered": "sent minus bounced",
            "reply_rate": "replied / delivered",
        },
        "campaigns": campaigns,
        "weekly": [{"week": w.isoformat(), "sent": s, "replied": r} for w, s, r in report.weekly],
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return aware(moment).isoformat().replace("+00:00", "Z")


CSV_COLUMNS = (
    "level", "campaign", "step", "variant", "enrolled", "active", "sent", "delivered", "replied",
    "reply_rate", "auto_replies", "bounced", "bounced_hard", "bounced_soft", "unsubscribed",
    "scheduled", "deferred", "failed", "unknown", "skipped", "cancelled",
    "median_reply_seconds", "p90_reply_seconds", "exits", "variant_test",
)


def flat_rows(report: Report) -> Iterator[dict]:
    """One row per campaign, step and variant, in reading order (csv and the table)."""
    for c in report.campaigns:
        yield {"level": "campaign", "campaign": c.id, "enrolled": c.enrolled, "active": c.active,
               **_stats_dict(c.stats), "unsubscribed": c.unsubscribed, "exits": _exits_text(c.exits)}
        for s in c.steps:
            yield {"level": "step", "campaign": c.id, "step": s.id, **_stats_dict(s.stats),
                   "unsubscribed": s.exits.get("unsubscribed", 0), "exits": _exits_text(s.exits),
                   "variant_test": s.test.note if s.test else None}
            for v in s.variants:
                yield {"level": "variant", "campaign": c.id, "step": s.id, "variant": v.id,
                       **_stats_dict(v.stats)}


def _exits_text(exits: dict[str, int]) -> str:
    return ";".join(f"{reason}={n}" for reason, n in sorted(exits.items()))


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def human_duration(seconds: float | None) -> str:
    """3d 4h, 5h 12m, 40m: time to reply as a person reads it."""
    if seconds is None:
        return "–"
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"


TABLE_COLUMNS = (
    "campaign / step / variant", "enrolled", "active", "sent", "delivered", "replied", "rate",
    "auto", "bounced h/s", "unsub", "pending", "deferred", "failed", "unknown", "median", "p90",
)


def table_rows(report: Report) -> Iterator[tuple[str, ...]]:
    """Rows for the terminal table; the label column is indented by level."""
    for row in flat_rows(report):
        level = row["level"]
        label = {"campaign": row["campaign"], "step": f"  {row.get('step')}",
                 "variant": f"    variant {row.get('variant') or '(none)'}"}[level]
        blank = level != "campaign"
        yield (
            label,
            "" if blank else str(row["enrolled"]),
            "" if blank else str(row["active"]),
            str(row["sent"]),
            str(row["delivered"]),
            str(row["replied"]),
            percent(row["reply_rate"]),
            str(row["auto_replies"]),
            f"{row['bounced_hard']}/{row['bounced_soft']}",
            "" if level == "variant" else str(row["unsubscribed"]),
            str(row["scheduled"]),
            str(row["deferred"]),
            str(row["failed"]),
            str(row["unknown"]),
            human_duration(row["median_reply_seconds"]),
            human_duration(row["p90_reply_seconds"]),
        )
