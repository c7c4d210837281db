"""Every query behind `nurture report`, `nurture report pool` and the dashboard.

All arithmetic over the ledger happens in the database: one GROUP BY with conditional counts
per (campaign, step, variant), rolled up to steps and campaigns in the same statement, so the
sends are never loaded into Python. Definitions (also in the README):

* `sent`: sends the SMTP server accepted (state `sent`); a later bounce still counts as sent.
* An inbound message counts only when it was matched to one of those sends (`send_id`); mail
  that matched nothing, or matched a send whose fate is `unknown`, is not in the rates.
* `bounced`: sent sends with a bounce report and no reply (a reply proves delivery);
  `delivered` = `sent` - `bounced`; `reply_rate` = `replied` / `delivered` (NULL when 0).
* `--since`: the cohort of sends from that moment on (by `sent_at`, or `updated_at` for sends
  never accepted); their replies count whenever they came. Enrolments count by `enrolled_at`,
  exits by `exited_at`.
* Time to reply: from `sent_at` to the first reply, in seconds. PostgreSQL computes the median
  and 90th percentile with `percentile_cont`; SQLite has no percentile aggregate, so the same
  linear interpolation is found from an hourly histogram of the delays and the exact delays of
  the few hours that hold the wanted positions (see `_percentiles`).

`nurture report` is one statement (`ledger`) plus two small ones (enrolments, exits): the
ledger counted from `ix_sends_report` alone, what came back from `ix_inbound_report` alone with
its sends looked up by primary key once (a materialized CTE), and the weekly series. Over
1,000,000 sends see bench/report_bench.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import (
    Date,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    extract,
    func,
    literal,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from ..models import Campaign, Candidate, CandidateTag, Enrollment, Inbound, Send
from .ledger import ACTIVE_ENROLLMENT, naive

# Count columns of a ledger group, in the order the statements select them.
COUNTS = (
    "sends", "sent", "scheduled", "deferred", "failed", "unknown", "skipped", "cancelled",
    "replied", "auto_replies", "bounced", "bounced_hard", "bounced_soft",
)


@dataclass(frozen=True)
class GroupRow:
    """Counts of one campaign, step or variant (`step` / `variant` None above that level)."""

    level: str  # campaign | step | variant
    campaign: str
    step: str | None
    variant: str | None
    step_number: int | None
    counts: dict[str, int]
    delivered: int
    reply_rate: float | None
    median: float | None = None  # time to first reply, seconds
    p90: float | None = None


@dataclass(frozen=True)
class CampaignInfo:
    id: str
    name: str
    status: str | None
    steps: tuple[str, ...]


def prepare(session: Session) -> None:
    """SQLite: keep the report's temporary b-trees (materialized CTEs, sorts) in memory rather
    than in temporary files, and read the database file through a memory map. Per connection;
    harmless for whatever uses the connection next."""
    if session.get_bind().dialect.name == "sqlite":
        connection = session.connection()
        connection.exec_driver_sql("PRAGMA temp_store=MEMORY")
        connection.exec_driver_sql("PRAGMA mmap_size=1073741824")


# --- the ledger ---------------------------------------------------------------------------------

# Weeks are counted in SQL as whole weeks since Monday 0001-01-01 (proleptic Gregorian, as both
# databases and Python count): week w starts on `monday(w)`.
_EPOCH_JULIAN = 1721425.5  # SQLite's julianday('0001-01-01')


def monday(week: int) -> date:
    return date.fromordinal(7 * int(week) + 1)


def _send_filters(since: datetime | None, campaign: str | None, sends=Send) -> list:
    where = []
    if campaign is not None:
        where.append(sends.campaign_id == campaign)
    if since is not None:
        where.append(func.coalesce(sends.sent_at, sends.updated_at) >= naive(since))
    return where


def _week(dialect: str, column):
    if dialect == "postgresql":
        return (cast(column, Date) - literal(date(1, 1, 1), Date)) // 7  # whole days: exact
    return cast((func.julianday(column) - _EPOCH_JULIAN) / 7, Integer)


_PREFIX = ("campaign_id", "step_id", "variant", "state", "step_number")


def _same_prefix(sends, prefix) -> list:
    """sends row in the index prefix of `prefix` (variant may be NULL)."""
    return [sends.c[k].is_not_distinct_from(prefix.c[k]) if k == "variant" else sends.c[k] == prefix.c[k]
            for k in _PREFIX]


def _prefix_counts(dialect: str, since: datetime | None, campaign: str | None):
    """(campaign_id, step_id, variant, state, step_number, n): the ledger counted by the leading
    columns of `ix_sends_report`, with nothing evaluated per row but the count.

    SQLite reads the distinct prefixes by seeking through the index (a skip-scan: one probe per
    group), then counts each one's index range: a GROUP BY would sort every row through a temp
    b-tree. PostgreSQL aggregates by hash in one (parallel) pass."""
    keys = [Send.__table__.c[k] for k in _PREFIX]
    if dialect == "postgresql":
        return (
            select(*keys, func.count().label("n"))
            .where(*_send_filters(since, campaign))
            .group_by(*keys)
            .cte("prefix")
        )
    distinct = select(*keys).distinct()
    if campaign is not None:
        distinct = distinct.where(Send.campaign_id == campaign)
    k = distinct.subquery("k")
    s = Send.__table__.alias("s")
    n = select(func.count()).select_from(s).where(*_same_prefix(s, k), *_send_filters(since, None, s.c))
    # Prefixes with no row in the --since window count 0 here; `ledger` drops their groups.
    return select(*k.c, n.scalar_subquery().label("n")).cte("prefix")


def _weekly_sends(dialect: str, prefix, since: datetime | None, campaign: str | None):
    """(week, sends accepted that week). SQLite counts, per sent prefix and week, that week's
    range of the index (`sent_at` follows the prefix in it), so nothing is sorted."""
    if dialect == "postgresql":
        week = _week(dialect, Send.sent_at)
        return (
            select(week.label("week"), func.count().label("sent"))
            .where(Send.state == "sent", Send.sent_at.is_not(None), *_send_filters(since, campaign))
            .group_by(week)
        )
    sent = select(*prefix.c).where(prefix.c.state == "sent").cte("sent_prefix")
    s = Send.__table__.alias("w")

    # Sent sends have a sent_at, so --since is a range of it here (the same rows as the filter).
    after = [] if since is None else [s.c.sent_at >= naive(since)]

    def edge(fn):
        return select(fn(s.c.sent_at)).select_from(s).where(*_same_prefix(s, sent), *after).scalar_subquery()

    bounds = select(
        _week(dialect, func.min(edge(func.min))).label("lo"),
        _week(dialect, func.max(edge(func.max))).label("hi"),
    ).select_from(sent).cte("bounds")
    weeks = select(bounds.c.lo.label("w"), bounds.c.hi.label("hi")).where(bounds.c.lo.is_not(None)).cte(
        "weeks", recursive=True)
    weeks = weeks.union_all(select(weeks.c.w + 1, weeks.c.hi).where(weeks.c.w < weeks.c.hi))
    n = select(func.count()).select_from(s).where(
        *_same_prefix(s, sent),
        s.c.sent_at >= func.date(_EPOCH_JULIAN + 7 * weeks.c.w),
        s.c.sent_at < func.date(_EPOCH_JULIAN + 7 * (weeks.c.w + 1)),
        *after,
    )
    per = select(weeks.c.w.label("week"), n.scalar_subquery().label("sent")).select_from(
        weeks.join(sent, true())).subquery("per_week")
    return select(per.c.week, func.sum(per.c.sent).label("sent")).group_by(per.c.week)


def _matched(dialect: str, since: datetime | None, campaign: str | None):
    """One row per counted send that something came back about: its group, what came back
    (flags), and the delay to its first reply in seconds (NULL without a reply).

    The inbound rows are read from `ix_inbound_report` alone, in send order, and their sends
    looked up by primary key; the result is materialized once for counts, percentiles and weeks.
    """
    def flag(condition):
        if dialect == "sqlite":  # a comparison is already 0 or 1 there, and cheaper than CASE
            return func.max(condition)
        return func.max(case((condition, 1), else_=0))

    ib = (
        select(
            Inbound.send_id.label("send_id"),
            flag(Inbound.kind == "reply").label("replied"),
            flag(Inbound.kind == "auto_reply").label("auto_reply"),
            flag(Inbound.kind == "bounce").label("bounce"),
            # IS, not =: a bounce of no known type is soft, and its flag 0 rather than NULL.
            flag(and_(Inbound.kind == "bounce", Inbound.bounce.is_not_distinct_from("hard"))).label("hard"),
            func.min(case((Inbound.kind == "reply", Inbound.received_at))).label("first_reply"),
        )
        .where(Inbound.send_id.is_not(None))
        .group_by(Inbound.send_id)
        .subquery("ib")
    )
    if dialect == "postgresql":
        seconds = extract("epoch", ib.c.first_reply - Send.sent_at)
    else:
        seconds = (func.julianday(ib.c.first_reply) - func.julianday(Send.sent_at)) * 86400.0
    return (
        select(
            Send.campaign_id.label("campaign"),
            Send.step_id.label("step"),
            Send.variant.label("variant"),
            ib.c.replied, ib.c.auto_reply, ib.c.bounce, ib.c.hard,
            cast(seconds, Float).label("seconds"),
            _week(dialect, ib.c.first_reply).label("reply_week"),
            *([cast(seconds / 3600, Integer).label("bucket")] if dialect == "sqlite" else []),
        )
        .select_from(ib)
        .join(Send, Send.id == ib.c.send_id)
        .where(Send.state == "sent", *_send_filters(since, campaign))
        .cte("matched")
        .prefix_with("MATERIALIZED")
    )


def ledger(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> tuple[list[GroupRow], list[tuple[date, int, int]]]:
    """Counts, reply rate and time to reply per variant, step and campaign, and the weekly
    series (Monday, sent, first replies), in one statement.

    Two partial aggregates are added up per (campaign, step, variant): the ledger by state
    (`_prefix_counts`, from `ix_sends_report` alone), and what came back (`_matched`: the
    inbound rows, few, with their sends looked up by primary key) - so the big table is never
    joined whole. The weekly series rides along as rows of level `week` (its number in
    `step_number`), so the matched replies are read once.
    """
    dialect = session.get_bind().dialect.name
    prefix = _prefix_counts(dialect, since, campaign)
    matched = _matched(dialect, since, campaign)
    zero = literal(0, Integer)
    group = (prefix.c.campaign_id, prefix.c.step_id, prefix.c.variant)

    def pick(condition):
        return func.sum(case((condition, prefix.c.n), else_=0))

    state_counts = {
        "sends": func.sum(prefix.c.n),
        "sent": pick(prefix.c.state == "sent"),
        "scheduled": pick(prefix.c.state.in_(("scheduled", "claimed"))),
        "deferred": pick(prefix.c.state == "deferred"),
        "failed": pick(prefix.c.state == "failed"),
        "unknown": pick(prefix.c.state == "unknown"),
        "skipped": pick(prefix.c.state == "skipped"),
        "cancelled": pick(prefix.c.state == "cancelled"),
    }

    def count_if(condition):
        return func.count(case((condition, 1)))

    bounced = and_(matched.c.bounce == 1, matched.c.replied == 0)  # a reply proves delivery
    inbound_counts = {
        "replied": count_if(matched.c.replied == 1),
        "auto_replies": count_if(matched.c.auto_reply == 1),
        "bounced": count_if(bounced),
        "bounced_hard": count_if(and_(bounced, matched.c.hard == 1)),
        "bounced_soft": count_if(and_(bounced, matched.c.hard == 0)),
    }
    by_state = (
        select(*(c.label(n) for c, n in zip(group, ("campaign", "step", "variant"), strict=True)),
               func.min(prefix.c.step_number).label("step_number"),
               *(state_counts.get(c, zero).label(c) for c in COUNTS))
        .group_by(*group)
        .having(func.sum(prefix.c.n) > 0)
    )
    came_back = (
        select(matched.c.campaign, matched.c.step, matched.c.variant,
               cast(null(), Integer).label("step_number"),
               *(inbound_counts.get(c, zero).label(c) for c in COUNTS))
        .group_by(matched.c.campaign, matched.c.step, matched.c.variant)
    )
    parts = union_all(by_state, came_back).subquery("parts")
    fine = (
        select(parts.c.campaign, parts.c.step, parts.c.variant,
               func.min(parts.c.step_number).label("step_number"),
               *(func.sum(parts.c[c]).label(c) for c in COUNTS))
        .group_by(parts.c.campaign, parts.c.step, parts.c.variant)
        .cte("fine")
    )

    if dialect == "sqlite":  # the replied sends alone, narrow: read four times below
        delays = (
            select(matched.c.campaign, matched.c.step, matched.c.variant, matched.c.seconds,
                   matched.c.bucket)
            .where(matched.c.seconds.is_not(None))
            .cte("delays")
            .prefix_with("MATERIALIZED")
        )
        histogram = _histogram(delays)
    else:
        delays, histogram = matched, None

    def level(name: str, keys: Sequence[str]):
        sums = [func.sum(fine.c[c]).label(c) for c in COUNTS]
        delivered = func.sum(fine.c.sent) - func.sum(fine.c.bounced)
        rates = select(
            *_level_keys(name, fine, keys),
            func.min(fine.c.step_number).label("step_number") if "step" in keys
            else cast(null(), Integer).label("step_number"),
            *sums,
            delivered.label("delivered"),
            (cast(func.sum(fine.c.replied), Float) / func.nullif(delivered, 0)).label("reply_rate"),
        ).group_by(*(fine.c[k] for k in keys)).subquery(f"rates_{name}")
        times = _percentiles(dialect, delays, histogram, name, keys).subquery(f"times_{name}")
        on = [rates.c.campaign == times.c.campaign]
        on += [rates.c[k].is_not_distinct_from(times.c[k]) for k in keys if k != "campaign"]
        return select(*rates.c, times.c.median, times.c.p90).select_from(
            rates.outerjoin(times, and_(*on)))

    sends_weekly = _weekly_sends(dialect, prefix, since, campaign).subquery("sends_weekly")
    replies_weekly = (
        select(matched.c.reply_week.label("week"), zero.label("sent"), func.count().label("replied"))
        .where(matched.c.reply_week.is_not(None))
        .group_by(matched.c.reply_week)
    )
    weeks = union_all(select(sends_weekly.c.week, sends_weekly.c.sent, zero.label("replied")),
                      replies_weekly).subquery("weeks")
    nothing = cast(null(), String)
    weekly = select(
        literal("week", String).label("level"), nothing.label("campaign"), nothing.label("step"),
        nothing.label("variant"), weeks.c.week.label("step_number"),
        *(func.sum(weeks.c.sent).label(c) if c == "sent" else func.sum(weeks.c.replied).label(c)
          if c == "replied" else zero.label(c) for c in COUNTS),
        zero.label("delivered"), cast(null(), Float).label("reply_rate"),
        cast(null(), Float).label("median"), cast(null(), Float).label("p90"),
    ).group_by(weeks.c.week)

    statement = union_all(*(level(name, keys) for name, keys in LEVELS.items()), weekly)
    groups, series = [], []
    # Core execution: the statement needs no ORM compile state (it costs at every start).
    for row in session.connection().execute(statement).mappings():
        if row["level"] == "week":
            series.append((monday(row["step_number"]), int(row["sent"] or 0), int(row["replied"] or 0)))
            continue
        groups.append(
            GroupRow(
                level=row["level"],
                campaign=row["campaign"],
                step=row["step"],
                variant=row["variant"],
                step_number=row["step_number"],
                counts={c: int(row[c] or 0) for c in COUNTS},
                delivered=int(row["delivered"] or 0),
                reply_rate=None if row["reply_rate"] is None else float(row["reply_rate"]),
                median=None if row["median"] is None else float(row["median"]),
                p90=None if row["p90"] is None else float(row["p90"]),
            )
        )
    series.sort()
    return groups, series


# The groups of a report, finest first, by the columns that make them.
LEVELS = {
    "variant": ("campaign", "step", "variant"),
    "step": ("campaign", "step"),
    "campaign": ("campaign",),
}


def _level_keys(name: str, source, keys: Sequence[str]) -> list:
    """(level, campaign, step, variant) columns, NULL for those above the level."""
    return [
        literal(name, String).label("level"),
        source.c.campaign,
        source.c.step if "step" in keys else cast(null(), String).label("step"),
        source.c.variant if "variant" in keys else cast(null(), String).label("variant"),
    ]


def _histogram(matched):
    """(campaign, step, variant, bucket, n): the reply delays counted per hour of delay. Counts
    add up, so the coarser levels roll this up instead of reading the delays again."""
    return (
        select(matched.c.campaign, matched.c.step, matched.c.variant, matched.c.bucket,
               func.count().label("n"))
        .where(matched.c.seconds.is_not(None))
        .group_by(matched.c.campaign, matched.c.step, matched.c.variant, matched.c.bucket)
        .cte("histogram")
    )


def _percentiles(dialect: str, matched, histogram, name: str, keys: Sequence[str]):
    """(level keys, median, p90) of the reply delays per group.

    PostgreSQL: percentile_cont. SQLite has no percentile aggregate and its window functions
    cost a sort and a pass per level over every delay, so the same linear interpolation between
    the values at positions floor(1 + p * (n - 1)) and the next is found in two steps: running
    totals over the hourly histogram (a few rows per group) give the hour that holds each
    position and how many delays come before it; then only the delays of those hours are
    numbered, exactly.
    """
    if dialect == "postgresql":
        return select(
            *_level_keys(name, matched, keys),
            func.percentile_cont(0.5).within_group(matched.c.seconds).label("median"),
            func.percentile_cont(0.9).within_group(matched.c.seconds).label("p90"),
        ).where(matched.c.seconds.is_not(None)).group_by(*(matched.c[k] for k in keys))
    # Per group of the level: each hour's count, the delays before it, and the group's total.
    hours = (
        select(*(histogram.c[k] for k in keys), histogram.c.bucket, func.sum(histogram.c.n).label("n"))
        .group_by(*(histogram.c[k] for k in keys), histogram.c.bucket)
        .subquery(f"hours_{name}")
    )
    partition = [hours.c[k] for k in keys]
    running = select(
        *partition, hours.c.bucket, hours.c.n,
        func.sum(hours.c.n).over(partition_by=partition, order_by=hours.c.bucket, rows=(None, 0)).label("upto"),
        func.sum(hours.c.n).over(partition_by=partition).label("total"),
    ).subquery(f"running_{name}")
    place = {p: 1 + p * (running.c.total - 1) for p in (0.5, 0.9)}
    wanted = [pos for p in place for pos in (cast(place[p], Integer), cast(place[p], Integer) + 1)]
    before = running.c.upto - running.c.n
    holding = (
        select(*(running.c[k] for k in keys), running.c.bucket, before.label("before"),
               running.c.total)
        .where(or_(*(and_(pos > before, pos <= running.c.upto) for pos in wanted)))
        .subquery(f"holding_{name}")
    )
    # The delays of those hours: an IN over (campaign, step, hour) probes a small temporary
    # index once per delay, then the few rows found meet their hour's numbers.
    coarse = [k for k in keys if k != "variant"]
    inside = (
        select(matched)
        .where(
            matched.c.seconds.is_not(None),
            tuple_(*(matched.c[k] for k in coarse), matched.c.bucket).in_(
                select(*(holding.c[k] for k in coarse), holding.c.bucket)),
        )
        .cte(f"inside_{name}")
        .prefix_with("MATERIALIZED")
    )
    same_group = [inside.c[k].is_not_distinct_from(holding.c[k]) if k == "variant"
                  else inside.c[k] == holding.c[k] for k in keys]
    numbered = (
        select(
            *(holding.c[k] for k in keys), inside.c.seconds, holding.c.total.label("n"),
            (holding.c.before + func.row_number().over(
                partition_by=[*(holding.c[k] for k in keys), holding.c.bucket],
                order_by=inside.c.seconds)).label("rn"),
        )
        .select_from(inside.join(holding, and_(*same_group, inside.c.bucket == holding.c.bucket)))
        .subquery(f"numbered_{name}")
    )

    def percentile(p: float):
        at = 1 + p * (numbered.c.n - 1)
        low = cast(at, Integer)  # floor: positions are positive
        fraction = at - low
        return func.sum(
            case(
                (numbered.c.rn == low, numbered.c.seconds * (1 - fraction)),
                (numbered.c.rn == low + 1, numbered.c.seconds * fraction),
                else_=0.0,
            )
        )

    return select(
        *_level_keys(name, numbered, keys), percentile(0.5).label("median"), percentile(0.9).label("p90")
    ).group_by(*(numbered.c[k] for k in keys))


def enrollment_counts(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> dict[str, tuple[int, int]]:
    """campaign -> (enrolled, still active or paused)."""
    where = []
    if campaign is not None:
        where.append(Enrollment.campaign_id == campaign)
    if since is not None:
        where.append(Enrollment.enrolled_at >= naive(since))
    rows = session.execute(
        select(
            Enrollment.campaign_id,
            func.count(),
            func.count(case((Enrollment.state.in_(ACTIVE_ENROLLMENT), 1))),
        )
        .where(*where)
        .group_by(Enrollment.campaign_id)
    ).all()
    return {c: (int(n), int(active)) for c, n, active in rows}


def exits(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> list[tuple[str, str | None, str, int]]:
    """(campaign, last step sent or None, exit reason, count): who left, after which step."""
    where = [Enrollment.exit_reason.is_not(None)]
    if campaign is not None:
        where.append(Enrollment.campaign_id == campaign)
    if since is not None:
        where.append(Enrollment.exited_at >= naive(since))
    rows = session.execute(
        select(Enrollment.campaign_id, Enrollment.last_step_id, Enrollment.exit_reason, func.count())
        .where(*where)
        .group_by(Enrollment.campaign_id, Enrollment.last_step_id, Enrollment.exit_reason)
    ).all()
    return [(c, s, r, int(n)) for c, s, r, n in rows]


def campaigns(session: Session, campaign: str | None = None) -> list[CampaignInfo]:
    """Campaigns the engine has seen, plus any id found only in the ledger (a deleted file)."""
    query = select(Campaign.id, Campaign.name, Campaign.status, Campaign.steps)
    if campaign is not None:
        query = query.where(Campaign.id == campaign)
    known = {
        r.id: CampaignInfo(r.id, r.name, r.status, tuple(r.steps or ()))
        for r in session.execute(query)
    }
    for source in (Enrollment.campaign_id, Send.campaign_id):
        for cid in _distinct_leading(session, source, campaign):
            known.setdefault(cid, CampaignInfo(cid, cid, None, ()))
    return sorted(known.values(), key=lambda c: c.id)


def _distinct_leading(session: Session, column, only: str | None) -> list[str]:
    """The distinct values of an indexed leading column, one index probe each (a loose index
    scan as a recursive CTE: PostgreSQL would otherwise read the whole index for DISTINCT)."""
    if only is not None:
        found = session.execute(select(column).where(column == only).limit(1)).scalar()
        return [] if found is None else [found]
    walk = select(func.min(column).label("v")).cte("walk", recursive=True)
    after = select(func.min(column)).where(column > walk.c.v).scalar_subquery()
    walk = walk.union_all(select(after).where(walk.c.v.is_not(None)))
    return [v for (v,) in session.execute(select(walk.c.v).where(walk.c.v.is_not(None)))]


def sends_by_state(session: Session) -> list[tuple[str, int]]:
    """The whole ledger by state: what the dashboard shows of the queue."""
    return [
        (s, int(n))
        for s, n in session.execute(
            select(Send.state, func.count()).group_by(Send.state).order_by(Send.state)
        )
    ]


# --- the pool -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFilter:
    owner: str | None = None
    tags: tuple[str, ...] = ()
    campaign: str | None = None
    group: str | None = None


POOL_SORTS = ("group", "last-reply", "last-contact", "email", "owner")


def pool_rows(
    session: Session,
    *,
    now: datetime,
    warm_days: int,
    cold_days: int,
    where: PoolFilter = PoolFilter(),
    sort: str = "group",
    limit: int | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Candidates with their last contact, last reply and warmth, grouped in SQL, and how many
    there are per group. `limit` keeps the first rows (the HTML page shows 500): the order, the
    cut and the group counts (window counts over the whole match) are all SQL then.


    * warm: replied within `warm_days`;
    * cold: never in touch, or the last touch either way is older than `cold_days`;
    * cooling: the rest (contacted, no reply yet or only an older one).

    A reply counts here when it was matched to the candidate, even without a send: it is about
    the person, not a campaign's rate.
    """
    at = naive(now)
    warm_since = at - timedelta(days=warm_days)
    cold_before = at - timedelta(days=cold_days)
    contact = (
        select(Send.candidate_id.label("cid"), func.max(Send.sent_at).label("at"))
        .where(Send.state == "sent")
        .group_by(Send.candidate_id)
        .subquery("contact")
    )
    ranked = (
        select(
            Inbound.candidate_id.label("cid"),
            Inbound.received_at.label("at"),
            Inbound.reply_text.label("text"),
            Inbound.campaign_id.label("campaign"),
            func.row_number()
            .over(partition_by=Inbound.candidate_id, order_by=(Inbound.received_at.desc(), Inbound.id.desc()))
            .label("rn"),
        )
        .where(Inbound.kind == "reply", Inbound.candidate_id.is_not(None))
        .subquery("ranked")
    )
    reply = select(ranked.c.cid, ranked.c.at, ranked.c.text, ranked.c.campaign).where(ranked.c.rn == 1).subquery("reply")
    touch = case(
        (reply.c.at.is_(None), contact.c.at),
        (contact.c.at.is_(None), reply.c.at),
        (reply.c.at > contact.c.at, reply.c.at),
        else_=contact.c.at,
    )
    group = case(
        (reply.c.at >= warm_since, "warm"),
        (or_(touch.is_(None), touch < cold_before), "cold"),
        else_="cooling",
    ).label("grp")
    query = (
        select(
            Candidate.id,
            Candidate.email,
            Candidate.first_name,
            Candidate.last_name,
            Candidate.full_name,
            Candidate.owner,
            Candidate.status,
            contact.c.at.label("last_contact"),
            reply.c.at.label("last_reply"),
            reply.c.text.label("reply_text"),
            reply.c.campaign.label("reply_campaign"),
            group,
        )
        .outerjoin(contact, contact.c.cid == Candidate.id)
        .outerjoin(reply, reply.c.cid == Candidate.id)
    )
    if where.owner:
        query = query.where(func.lower(Candidate.owner) == where.owner.lower())
    for tag in where.tags:
        query = query.where(
            exists().where(CandidateTag.candidate_id == Candidate.id, CandidateTag.tag == tag.lower())
        )
    if where.campaign:
        query = query.where(
            exists().where(Enrollment.candidate_id == Candidate.id, Enrollment.campaign_id == where.campaign)
        )
    if where.group:
        query = query.where(group == where.group)
    order_group = case((group == "warm", 0), (group == "cooling", 1), else_=2)

    def newest_first(column):
        return (column.is_(None), column.desc())

    orders = {
        "group": (order_group, *newest_first(reply.c.at), *newest_first(contact.c.at)),
        "last-reply": newest_first(reply.c.at),
        "last-contact": newest_first(contact.c.at),
        "email": (),
        "owner": (Candidate.owner.is_(None), Candidate.owner),
    }
    query = query.order_by(*orders[sort], Candidate.email)
    if limit is None:
        rows = [dict(r) for r in session.execute(query).mappings()]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["grp"]] = counts.get(r["grp"], 0) + 1
        return rows, counts
    every = {g: func.count(case((group == g, 1))).over().label(f"n_{g}") for g in ("warm", "cooling", "cold")}
    rows = [dict(r) for r in session.execute(query.add_columns(*every.values()).limit(limit)).mappings()]
    counts = {g: int(rows[0][f"n_{g}"]) for g in every} if rows else {}
    return rows, counts
