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
  linear interpolation is done with ROW_NUMBER() and COUNT() windows over the ordered delays.
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


@dataclass(frozen=True)
class Delays:
    """Median and 90th percentile time to first reply of a group, in seconds."""

    level: str
    campaign: str
    step: str | None
    variant: str | None
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class CampaignInfo:
    id: str
    name: str
    status: str | None
    steps: tuple[str, ...]


# --- the ledger ---------------------------------------------------------------------------------


def _inbound_per_send():
    """One row per matched send: what came back about it (flags) and its first reply."""
    def flag(condition):
        return func.max(case((condition, 1), else_=0))

    return (
        select(
            Inbound.send_id.label("send_id"),
            flag(Inbound.kind == "reply").label("replied"),
            flag(Inbound.kind == "auto_reply").label("auto_reply"),
            flag(Inbound.kind == "bounce").label("bounce"),
            flag(and_(Inbound.kind == "bounce", Inbound.bounce == "hard")).label("hard"),
        )
        .where(Inbound.send_id.is_not(None))
        .group_by(Inbound.send_id)
        .subquery("ib")
    )


def _send_filters(since: datetime | None, campaign: str | None) -> list:
    where = []
    if campaign is not None:
        where.append(Send.campaign_id == campaign)
    if since is not None:
        where.append(func.coalesce(Send.sent_at, Send.updated_at) >= naive(since))
    return where


def _first_replies():
    """(send_id, at): when each matched send got its first reply."""
    return (
        select(Inbound.send_id.label("send_id"), func.min(Inbound.received_at).label("at"))
        .where(Inbound.kind == "reply", Inbound.send_id.is_not(None))
        .group_by(Inbound.send_id)
        .subquery("first_reply")
    )


def ledger_groups(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> list[GroupRow]:
    """Counts and reply rate per variant, step and campaign, in one statement.

    Two partial aggregates are added up per (campaign, step, variant): the ledger by state
    (an index-only scan of `ix_sends_report`), and what came back, read from the inbound rows
    (few) with their sends looked up by primary key - so the big table is never joined whole.
    """
    ib = _inbound_per_send()
    sent = Send.state == "sent"
    keys = (Send.campaign_id.label("campaign"), Send.step_id.label("step"),
            Send.variant.label("variant"))
    group = (Send.campaign_id, Send.step_id, Send.variant)
    zero = literal(0, Integer)

    def count_if(condition):
        return func.count(case((condition, 1)))

    state_counts = {
        "sends": func.count(),
        "sent": count_if(sent),
        "scheduled": count_if(Send.state.in_(("scheduled", "claimed"))),
        "deferred": count_if(Send.state == "deferred"),
        "failed": count_if(Send.state == "failed"),
        "unknown": count_if(Send.state == "unknown"),
        "skipped": count_if(Send.state == "skipped"),
        "cancelled": count_if(Send.state == "cancelled"),
    }
    bounced = and_(ib.c.bounce == 1, ib.c.replied == 0)  # a reply proves delivery
    inbound_counts = {
        "replied": count_if(ib.c.replied == 1),
        "auto_replies": count_if(ib.c.auto_reply == 1),
        "bounced": count_if(bounced),
        "bounced_hard": count_if(and_(bounced, ib.c.hard == 1)),
        "bounced_soft": count_if(and_(bounced, ib.c.hard == 0)),
    }
    ledger = (
        select(*keys, func.min(Send.step_number).label("step_number"),
               *(state_counts.get(c, zero).label(c) for c in COUNTS))
        .where(*_send_filters(since, campaign))
        .group_by(*group)
    )
    came_back = (
        select(*keys, cast(null(), Integer).label("step_number"),
               *(inbound_counts.get(c, zero).label(c) for c in COUNTS))
        .select_from(ib)
        .join(Send, Send.id == ib.c.send_id)
        .where(sent, *_send_filters(since, campaign))
        .group_by(*group)
    )
    parts = union_all(ledger, came_back).subquery("parts")
    fine = (
        select(parts.c.campaign, parts.c.step, parts.c.variant,
               func.min(parts.c.step_number).label("step_number"),
               *(func.sum(parts.c[c]).label(c) for c in COUNTS))
        .group_by(parts.c.campaign, parts.c.step, parts.c.variant)
        .cte("fine")
    )

    def level(name: str, keys: Sequence[str]):
        sums = [func.sum(fine.c[c]).label(c) for c in COUNTS]
        delivered = func.sum(fine.c.sent) - func.sum(fine.c.bounced)
        columns = [
            literal(name, String).label("level"),
            fine.c.campaign,
            fine.c.step if "step" in keys else null().label("step"),
            fine.c.variant if "variant" in keys else null().label("variant"),
            func.min(fine.c.step_number).label("step_number") if "step" in keys else cast(null(), Integer).label("step_number"),
            *sums,
            delivered.label("delivered"),
            (cast(func.sum(fine.c.replied), Float) / func.nullif(delivered, 0)).label("reply_rate"),
        ]
        return select(*columns).group_by(*(fine.c[k] for k in keys))

    statement = union_all(
        level("variant", ("campaign", "step", "variant")),
        level("step", ("campaign", "step")),
        level("campaign", ("campaign",)),
    )
    out = []
    for row in session.execute(statement).mappings():
        out.append(
            GroupRow(
                level=row["level"],
                campaign=row["campaign"],
                step=row["step"],
                variant=row["variant"],
                step_number=row["step_number"],
                counts={c: int(row[c] or 0) for c in COUNTS},
                delivered=int(row["delivered"] or 0),
                reply_rate=None if row["reply_rate"] is None else float(row["reply_rate"]),
            )
        )
    return out


def reply_delays(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> list[Delays]:
    """Median and p90 of the time from a send to its first reply, per variant, step, campaign."""
    first_reply = _first_replies()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        seconds = extract("epoch", first_reply.c.at - Send.sent_at)
    else:
        seconds = (func.julianday(first_reply.c.at) - func.julianday(Send.sent_at)) * 86400.0
    base = (
        select(
            Send.campaign_id.label("campaign"),
            Send.step_id.label("step"),
            Send.variant.label("variant"),
            cast(seconds, Float).label("seconds"),
        )
        .select_from(first_reply)
        .join(Send, Send.id == first_reply.c.send_id)
        .where(Send.state == "sent", *_send_filters(since, campaign))
        .cte("delays")
    )
    parts = []
    for name, keys in LEVELS.items():
        columns = [base.c[k] for k in keys]
        if dialect == "postgresql":
            parts.append(
                select(
                    *_level_keys(name, base, keys),
                    func.percentile_cont(0.5).within_group(base.c.seconds).label("median"),
                    func.percentile_cont(0.9).within_group(base.c.seconds).label("p90"),
                ).group_by(*columns)
            )
        else:
            parts.append(_window_percentiles(base, name, keys))
    return [
        Delays(r.level, r.campaign, r.step, r.variant,
               None if r.median is None else float(r.median),
               None if r.p90 is None else float(r.p90))
        for r in session.execute(union_all(*parts))
    ]


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
        source.c.step if "step" in keys else null().label("step"),
        source.c.variant if "variant" in keys else null().label("variant"),
    ]


def _window_percentiles(base, name: str, keys: Sequence[str]):
    """percentile_cont(0.5) and (0.9) without a percentile aggregate: number the ordered delays
    of each group, then interpolate between the two rows around position 1 + p * (n - 1)."""
    partition = [base.c[k] for k in keys]
    # One window definition for both numbers, so SQLite sorts the delays once.
    ranked = select(
        *partition,
        base.c.seconds,
        func.row_number().over(partition_by=partition, order_by=base.c.seconds).label("rn"),
        func.count().over(partition_by=partition, order_by=base.c.seconds, rows=(None, None)).label("n"),
    ).subquery(f"ranked_{name}")

    def low(p: float):
        return cast(1 + p * (ranked.c.n - 1), Integer)  # floor: positions are positive

    def percentile(p: float):
        fraction = 1 + p * (ranked.c.n - 1) - low(p)
        return func.sum(
            case(
                (ranked.c.rn == low(p), ranked.c.seconds * (1 - fraction)),
                (ranked.c.rn == low(p) + 1, ranked.c.seconds * fraction),
                else_=0.0,
            )
        )

    # Only the (at most four) rows around the two positions reach the GROUP BY.
    near = or_(*(ranked.c.rn.in_((low(p), low(p) + 1)) for p in (0.5, 0.9)))
    return (
        select(*_level_keys(name, ranked, keys), percentile(0.5).label("median"),
               percentile(0.9).label("p90"))
        .where(near)
        .group_by(*(ranked.c[k] for k in keys))
    )


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
        query = select(source).distinct()
        if campaign is not None:
            query = query.where(source == campaign)
        for (cid,) in session.execute(query):
            known.setdefault(cid, CampaignInfo(cid, cid, None, ()))
    return sorted(known.values(), key=lambda c: c.id)


def _day(session: Session, column):
    """The UTC calendar day of a naive UTC time (SQLite stores ISO text: its first ten chars)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(cast(column, Date), String)
    return func.substr(column, 1, 10)


def daily(
    session: Session, *, since: datetime | None = None, campaign: str | None = None
) -> list[tuple[date, int, int]]:
    """(day, sends accepted that day, first replies received that day to counted sends).
    Days rather than weeks: a cheap grouping key on both databases; `reports` sums weeks."""
    sent_day = _day(session, Send.sent_at)
    sends = session.execute(
        select(sent_day, func.count())
        .where(Send.state == "sent", *_send_filters(since, campaign))
        .group_by(sent_day)
    ).all()
    first_reply = _first_replies()
    reply_day = _day(session, first_reply.c.at)
    replies = session.execute(
        select(reply_day, func.count())
        .select_from(first_reply)
        .join(Send, Send.id == first_reply.c.send_id)
        .where(Send.state == "sent", *_send_filters(since, campaign))
        .group_by(reply_day)
    ).all()
    by_day: dict[date, list[int]] = {}
    for index, rows in ((0, sends), (1, replies)):
        for day, n in rows:
            if day is not None:
                by_day.setdefault(date.fromisoformat(str(day)[:10]), [0, 0])[index] += int(n)
    return [(d, s, r) for d, (s, r) in sorted(by_day.items())]


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
) -> list[dict]:
    """Every candidate with its last contact, last reply and warmth, grouped in SQL:

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
    return [dict(r) for r in session.execute(query).mappings()]
