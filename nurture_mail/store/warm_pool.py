"""The query behind `nurture report pool` and the dashboard's pool: every candidate with their
last contact, last reply and warmth, grouped, filtered, ordered and cut in SQL.

* warm: replied within `warm_days`;
* cold: never in touch, or the last touch either way is older than `cold_days`;
* cooling: the rest (contacted, no reply yet or only an older one).

A reply counts here when it was matched to the candidate, even without a send: it is about the
person, not a campaign's rate. Last contact and last reply come from `ix_sends_contact` and
`ix_inbound_replies` (only accepted sends and replies are in them): one probe per candidate on
SQLite, a hashed pass over each index on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, exists, func, or_, select, true
from sqlalchemy.orm import Session

from ..models import Candidate, CandidateTag, Enrollment, Inbound, Send
from ..warmth import GROUPS, PoolFilter
from .ledger import naive


def _last_touches(dialect: str):
    """(candidates with their last contact and last reply, those two columns)."""
    if dialect == "sqlite":  # a probe per candidate: SQLite would sort both aggregates to join them
        # max() as the last entry of the candidate's index range: one seek to its end, where max()
        # steps through the range (descending, SQLite sorts NULLs last: the same value).
        contact = (select(Send.sent_at).where(Send.candidate_id == Candidate.id, Send.state == "sent")
                   .order_by(Send.sent_at.desc()).limit(1).scalar_subquery())
        reply = (select(Inbound.received_at).where(Inbound.candidate_id == Candidate.id, Inbound.kind == "reply")
                 .order_by(Inbound.received_at.desc()).limit(1).scalar_subquery())
        return Candidate.__table__, contact, reply
    sent = (select(Send.candidate_id.label("cid"), func.max(Send.sent_at).label("at"))
            .where(Send.state == "sent").group_by(Send.candidate_id).subquery("contact"))
    replied = (select(Inbound.candidate_id.label("cid"), func.max(Inbound.received_at).label("at"))
               .where(Inbound.kind == "reply", Inbound.candidate_id.is_not(None))
               .group_by(Inbound.candidate_id).subquery("reply"))
    joined = (Candidate.__table__.outerjoin(sent, sent.c.cid == Candidate.id)
              .outerjoin(replied, replied.c.cid == Candidate.id))
    return joined, sent.c.at, replied.c.at


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
    """Candidates with their last contact, last reply and warmth, and how many there are per
    group. `limit` keeps the first rows (the HTML page shows 500): the order, the cut and the
    group counts (over the whole match) are all SQL then, and only the rows kept look up the
    text of their last reply."""
    dialect = session.get_bind().dialect.name
    at = naive(now)
    warm_since = at - timedelta(days=warm_days)
    cold_before = at - timedelta(days=cold_days)
    source, contact, reply = _last_touches(dialect)
    # Columns the rows show but the filters, the groups and the order never use: with a limit,
    # read for the kept rows only instead of being carried through the whole match.
    shown = ("first_name", "last_name", "full_name", "status")
    carried = [] if limit is not None else [Candidate.__table__.c[name] for name in shown]
    candidates = (
        select(Candidate.id, Candidate.email, Candidate.owner, *carried,
               contact.label("last_contact"), reply.label("last_reply"))
        .select_from(source)
    )
    if where.owner:
        candidates = candidates.where(func.lower(Candidate.owner) == where.owner.lower())
    for tag in where.tags:
        candidates = candidates.where(
            exists().where(CandidateTag.candidate_id == Candidate.id, CandidateTag.tag == tag.lower())
        )
    if where.campaign:
        candidates = candidates.where(
            exists().where(Enrollment.candidate_id == Candidate.id, Enrollment.campaign_id == where.campaign)
        )
    touched = candidates.cte("touched")
    if dialect == "sqlite":  # else each use of a last touch below would probe again
        touched = touched.prefix_with("MATERIALIZED")
    last_reply, last_contact = touched.c.last_reply, touched.c.last_contact
    touch = case(
        (last_reply.is_(None), last_contact),
        (last_contact.is_(None), last_reply),
        (last_reply > last_contact, last_reply),
        else_=last_contact,
    )
    group = case(
        (last_reply >= warm_since, "warm"),
        (or_(touch.is_(None), touch < cold_before), "cold"),
        else_="cooling",
    )
    grouped = select(touched, group.label("grp"))
    if where.group:
        grouped = grouped.where(group == where.group)
    pool = grouped.cte("pool")
    if dialect == "sqlite":  # read twice below (rows, counts): made once
        pool = pool.prefix_with("MATERIALIZED")

    def newest_first(column):
        return (column.is_(None), column.desc())

    def order(rows):
        return {
            "group": (case((rows.c.grp == "warm", 0), (rows.c.grp == "cooling", 1), else_=2),
                      *newest_first(rows.c.last_reply), *newest_first(rows.c.last_contact)),
            "last-reply": newest_first(rows.c.last_reply),
            "last-contact": newest_first(rows.c.last_contact),
            "email": (),
            "owner": (rows.c.owner.is_(None), rows.c.owner),
        }[sort] + (rows.c.email,)

    kept = select(pool).order_by(*order(pool))
    if limit is not None:
        kept = kept.limit(limit)
    kept = kept.subquery("kept")
    rows_from = kept
    looked_up = []
    counts = []
    if limit is not None:
        kept_candidates = Candidate.__table__.alias("kept_candidates")
        looked_up = [kept_candidates.c[name] for name in shown]
        # ... and the group counts of the whole match, in one pass over it.
        counted = select(*(func.count(case((pool.c.grp == g, 1))).label(f"n_{g}") for g in GROUPS)).subquery("counts")
        rows_from = kept.join(kept_candidates, kept_candidates.c.id == kept.c.id).join(counted, true())
        counts = list(counted.c)

    def last_reply_of(column):  # the latest reply, the later one of a tie
        return (select(column).where(Inbound.candidate_id == kept.c.id, Inbound.kind == "reply")
                .order_by(Inbound.received_at.desc(), Inbound.id.desc()).limit(1).scalar_subquery())

    query = select(
        *(c for c in kept.c if c.name != "grp"), *looked_up, kept.c.grp,
        last_reply_of(Inbound.reply_text).label("reply_text"),
        last_reply_of(Inbound.campaign_id).label("reply_campaign"),
        *counts,
    ).select_from(rows_from).order_by(*order(kept))
    rows = [dict(r) for r in session.execute(query).mappings().all()]
    if limit is None:
        found: dict[str, int] = {}
        for r in rows:
            found[r["grp"]] = found.get(r["grp"], 0) + 1
        return rows, found
    return rows, ({g: int(rows[0][f"n_{g}"]) for g in GROUPS} if rows else {})
