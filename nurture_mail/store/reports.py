"""The ledger side of `nurture report`: sends counted by state and by week, enrolments, exits,
and the campaigns a report lists. What came back about the sends (replies, bounces, time to
reply) is `store/responses.py`; the warm pool is `store/warm_pool.py`.

Definitions (also in the README):

* `sent`: sends the SMTP server accepted (state `sent`); a later bounce still counts as sent.
* `--since`: the cohort of sends from that moment on (by `sent_at`, or `updated_at` for sends
  never accepted); their replies count whenever they came. Enrolments count by `enrolled_at`,
  exits by `exited_at`.

The database counts; only a few hundred aggregate rows come back, and `reports.py` adds them
up to variants, steps and campaigns. A report reads one snapshot (`snapshot`). Over 1,000,000
sends see bench/report_bench.py. Statements run on the session's connection (Core execution):
the ORM's would build ORM compile state for them, a cost paid again at every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy import Date, Integer, case, cast, func, literal, null, select, union_all
from sqlalchemy.orm import Session

from ..models import Campaign, Enrollment, Send
from .ledger import ACTIVE_ENROLLMENT, naive


@dataclass(frozen=True)
class CampaignInfo:
    id: str
    name: str
    status: str | None
    steps: tuple[str, ...]


class StateCount(NamedTuple):
    """How many sends of one (campaign, step, variant) are in `state`."""

    campaign: str
    step: str
    variant: str | None
    state: str
    step_number: int
    n: int


@dataclass
class LedgerCounts:
    states: list[StateCount]  # none of 0
    weekly: dict[int, int]  # week (see `monday`) -> sends accepted that week


def snapshot(session: Session) -> None:
    """Begin the report's read: every query after this sees the same moment of the database.

    SQLite: an explicit BEGIN (the driver opens none for reads); the temporary b-trees of the
    report stay in memory and the file is read through a memory map. PostgreSQL: a REPEATABLE
    READ transaction, without JIT compilation (it costs more than these statements run). The
    report writes to temporary tables only. Call it first in a fresh session; the session's
    end rolls it all back.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA temp_store=MEMORY")
        connection.exec_driver_sql("PRAGMA mmap_size=1073741824")
        if not connection.connection.dbapi_connection.in_transaction:
            connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        connection.exec_driver_sql("SET LOCAL jit = off")
        connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")


# --- weeks --------------------------------------------------------------------------------------

# Weeks are counted in SQL as whole weeks since Monday 0001-01-01 (proleptic Gregorian, as both
# databases and Python count): week w starts on `monday(w)`.
_EPOCH_JULIAN = 1721425.5  # SQLite's julianday('0001-01-01')


def monday(week: int) -> date:
    return date.fromordinal(7 * int(week) + 1)


def week_of(dialect: str, moment):
    """The week number of a timestamp column (see `monday`)."""
    if dialect == "postgresql":
        return (cast(moment, Date) - literal(date(1, 1, 1), Date)) // 7  # whole days: exact
    return week_of_julian(func.julianday(moment))


def week_of_julian(julian):
    """SQLite: the week number of a julian day number."""
    return cast((julian - _EPOCH_JULIAN) / 7, Integer)


# --- the ledger ---------------------------------------------------------------------------------


def send_filters(since: datetime | None, campaign: str | None, sends=Send) -> list:
    """The sends a report counts: one campaign, and the --since cohort."""
    where = []
    if campaign is not None:
        where.append(sends.campaign_id == campaign)
    if since is not None:
        where.append(func.coalesce(sends.sent_at, sends.updated_at) >= naive(since))
    return where


_PREFIX = ("campaign_id", "step_id", "variant", "state", "step_number")


def _same_prefix(sends, prefix) -> list:
    """sends row in the index prefix of `prefix` (variant may be NULL)."""
    return [sends.c[k].is_not_distinct_from(prefix.c[k]) if k == "variant" else sends.c[k] == prefix.c[k]
            for k in _PREFIX]


def state_counts(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> LedgerCounts:
    """The ledger counted by (campaign, step, variant, state, step number), and accepted sends
    by week of `sent_at`, in one statement."""
    dialect = session.get_bind().dialect.name
    statement = _counts_postgresql(since, campaign) if dialect == "postgresql" else _counts_sqlite(since, campaign)
    states: dict[tuple, int] = {}
    weekly: dict[int, int] = {}
    # Rows are (prefix, week, n): a count of a prefix (SQLite: of one of its weeks), or of a
    # week alone (PostgreSQL). Core execution: no ORM compile state (it costs at every start).
    for *prefix, week, n in session.connection().execute(statement).all():
        if week is not None:
            weekly[week] = weekly.get(week, 0) + n
        if prefix[0] is not None:
            states[tuple(prefix)] = states.get(tuple(prefix), 0) + n
    return LedgerCounts([StateCount(*prefix, n) for prefix, n in states.items() if n], weekly)


def _counts_postgresql(since: datetime | None, campaign: str | None):
    """Two passes over `ix_sends_report` (index only, hashed, parallel): by prefix, by week."""
    keys = [Send.__table__.c[k] for k in _PREFIX]
    week = week_of("postgresql", Send.sent_at)
    nothing = [null()] * len(keys)
    return union_all(
        select(*keys, cast(null(), Integer), func.count()).where(*send_filters(since, campaign)).group_by(*keys),
        select(*nothing, week, func.count())
        .where(Send.state == "sent", Send.sent_at.is_not(None), *send_filters(since, campaign))
        .group_by(week),
    )


def _counts_sqlite(since: datetime | None, campaign: str | None):
    """SQLite sorts every row of a GROUP BY through a temporary b-tree. Instead: the distinct
    prefixes of `ix_sends_report` by skip-scan (one probe each), then a count of each one's
    index range - for accepted sends, of each week's range (`sent_at` follows the prefix in
    the index) - so nothing is sorted and each index entry is stepped over once."""
    keys = [Send.__table__.c[k] for k in _PREFIX]
    distinct = select(*keys).distinct()
    if campaign is not None:
        distinct = distinct.where(Send.campaign_id == campaign)
    prefix = distinct.cte("prefix")
    s = Send.__table__.alias("s")
    after = [] if since is None else [s.c.sent_at >= naive(since)]

    def count(*where):
        return select(func.count()).select_from(s).where(*_same_prefix(s, prefix), *where).scalar_subquery()

    # Unsent states whole; accepted sends without a time (none, normally) apart from the weeks.
    unsent = [] if since is None else [func.coalesce(s.c.sent_at, s.c.updated_at) >= naive(since)]
    untimed = [s.c.sent_at.is_(None)] + ([] if since is None else [s.c.updated_at >= naive(since)])
    rest = select(
        *prefix.c, cast(null(), Integer).label("week"),
        case((prefix.c.state == "sent", count(*untimed)), else_=count(*unsent)).label("n"),
    )

    # Each accepted prefix's weeks, from the first send to the last (min/max: one seek each).
    def edge(fn):
        return select(fn(s.c.sent_at)).select_from(s).where(*_same_prefix(s, prefix), *after).scalar_subquery()

    first = select(*prefix.c, week_of("sqlite", edge(func.min)).label("w"),
                   week_of("sqlite", edge(func.max)).label("last")).where(prefix.c.state == "sent").subquery()
    weeks = select(first).where(first.c.w.is_not(None)).cte("weeks", recursive=True)
    weeks = weeks.union_all(select(*(weeks.c[k] for k in _PREFIX), weeks.c.w + 1, weeks.c.last)
                            .where(weeks.c.w < weeks.c.last))
    weekly = select(
        *(weeks.c[k] for k in _PREFIX), weeks.c.w,
        select(func.count()).select_from(s).where(
            *_same_prefix(s, weeks),
            s.c.sent_at >= func.date(_EPOCH_JULIAN + 7 * weeks.c.w),
            s.c.sent_at < func.date(_EPOCH_JULIAN + 7 * (weeks.c.w + 1)),
            *after,
        ).scalar_subquery(),
    )
    return union_all(rest, weekly)


# --- enrolments and exits -----------------------------------------------------------------------


def enrollment_counts(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> dict[str, tuple[int, int]]:
    """campaign -> (enrolled, still active or paused). Counted per campaign and state, the
    order of `ix_enrollments_campaign_state`, so that a count is all each row costs."""
    where = []
    if campaign is not None:
        where.append(Enrollment.campaign_id == campaign)
    if since is not None:
        where.append(Enrollment.enrolled_at >= naive(since))
    rows = session.connection().execute(
        select(Enrollment.campaign_id, Enrollment.state, func.count())
        .where(*where)
        .group_by(Enrollment.campaign_id, Enrollment.state)
    ).all()
    out: dict[str, tuple[int, int]] = {}
    for c, state, n in rows:
        enrolled, active = out.get(c, (0, 0))
        out[c] = (enrolled + n, active + (n if state in ACTIVE_ENROLLMENT else 0))
    return out


def exits(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> list[tuple[str, str | None, str, int]]:
    """(campaign, last step sent or None, exit reason, count): who left, after which step.
    Read in the order of `ix_enrollments_exits`, so nothing is sorted."""
    where = [Enrollment.exit_reason.is_not(None)]
    if campaign is not None:
        where.append(Enrollment.campaign_id == campaign)
    if since is not None:
        where.append(Enrollment.exited_at >= naive(since))
    rows = session.connection().execute(
        select(Enrollment.campaign_id, Enrollment.last_step_id, Enrollment.exit_reason, func.count())
        .where(*where)
        .group_by(Enrollment.campaign_id, Enrollment.exit_reason, Enrollment.last_step_id)
    ).all()
    return [(c, s, r, int(n)) for c, s, r, n in rows]


# --- what a report lists ------------------------------------------------------------------------


def campaigns(session: Session, campaign: str | None = None) -> list[CampaignInfo]:
    """Campaigns the engine has seen, plus any id found only in the ledger (a deleted file)."""
    query = select(Campaign.id, Campaign.name, Campaign.status, Campaign.steps)
    if campaign is not None:
        query = query.where(Campaign.id == campaign)
    known = {
        r.id: CampaignInfo(r.id, r.name, r.status, tuple(r.steps or ()))
        for r in session.connection().execute(query)
    }
    for source in (Enrollment.campaign_id, Send.campaign_id):
        for cid in _distinct_leading(session, source, campaign):
            known.setdefault(cid, CampaignInfo(cid, cid, None, ()))
    return sorted(known.values(), key=lambda c: c.id)


def _distinct_leading(session: Session, column, only: str | None) -> list[str]:
    """The distinct values of an indexed leading column, one index probe each (a loose index
    scan as a recursive CTE: PostgreSQL would otherwise read the whole index for DISTINCT)."""
    if only is not None:
        found = session.connection().execute(select(column).where(column == only).limit(1)).scalar()
        return [] if found is None else [found]
    walk = select(func.min(column).label("v")).cte("walk", recursive=True)
    after = select(func.min(column)).where(column > walk.c.v).scalar_subquery()
    walk = walk.union_all(select(after).where(walk.c.v.is_not(None)))
    return [v for (v,) in session.connection().execute(select(walk.c.v).where(walk.c.v.is_not(None)))]


def sends_by_state(session: Session) -> list[tuple[str, int]]:
    """The whole ledger by state: what the dashboard shows of the queue."""
    return [
        (s, int(n))
        for s, n in session.connection().execute(
            select(Send.state, func.count()).group_by(Send.state).order_by(Send.state)
        )
    ]
