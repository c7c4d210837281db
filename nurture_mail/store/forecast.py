"""Read-only queries behind `nurture plan`: the queue as it stands, and who would be enrolled.

Core queries, streamed page by page in id order. A forecast needs of each candidate only the address
and time zone, unless a step has an `only_if` rule: then every field and tag, as the sender
evaluates it (`full=True`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import Session

from ..models import Candidate, CandidateTag, Enrollment, Send
from .ledger import aware, candidate_fields

PAGE = 5000
QUEUED = ("scheduled", "deferred", "claimed")

_CANDIDATES = Candidate.__table__
_ENROLLMENTS = Enrollment.__table__
_SENDS = Send.__table__
_TAGS = CandidateTag.__table__


@dataclass(slots=True)  # not frozen: a forecast makes a million, and frozen ones cost twice
class Track:
    """Where one candidate stands in one campaign, as the forecast starts from it."""

    candidate: dict
    done: frozenset[str]  # step ids with a ledger row
    anchor: datetime  # enrolment or last send (aware UTC)
    pending_step: str | None = None  # a queued row: its step, variant and due time
    pending_variant: str | None = None
    pending_due: datetime | None = None
    paused_until: datetime | None = None  # an out-of-office: no step before this


def _candidates(session: Session, rows: Sequence, full: bool) -> list[dict]:
    """The candidate mapping rules see (`full`), or just what placing a send needs."""
    if not full:
        return [{"email": r.email, "timezone": r.timezone} for r in rows]
    tags: dict[int, list[str]] = {}
    for cid, tag in session.execute(_TAGS_OF, {"ids": [r.id for r in rows]}):
        tags.setdefault(cid, []).append(tag)
    return [candidate_fields(r, sorted(tags.get(r.id, []))) for r in rows]


_TAGS_OF = select(_TAGS.c.candidate_id, _TAGS.c.tag).where(_TAGS.c.candidate_id.in_(bindparam("ids", expanding=True)))
_SENDS_OF = select(
    _SENDS.c.enrollment_id, _SENDS.c.step_id, _SENDS.c.state, _SENDS.c.variant, _SENDS.c.due_at
).where(_SENDS.c.enrollment_id.in_(bindparam("ids", expanding=True))).order_by(_SENDS.c.id)


def _candidate_columns(full: bool):
    return list(_CANDIDATES.c) if full else [_CANDIDATES.c.id, _CANDIDATES.c.email, _CANDIDATES.c.timezone]


def _pages(session: Session, stmt) -> Iterator[Sequence]:
    """The rows of one query, streamed in pages. One query, not one per page: the audience
    cannot use an index, so a page `WHERE id > last ... LIMIT` would scan and sort everything
    left once per page (PostgreSQL: quadratic over a million candidates)."""
    yield from session.execute(stmt, execution_options={"yield_per": PAGE}).partitions()


def enrolled_tracks(session: Session, campaign_id: str, *, full: bool = True) -> Iterator[Track]:
    """Active enrollments of a campaign, with their queued row if they have one."""
    stmt = (
        select(
            _ENROLLMENTS.c.id.label("enrollment_id"), _ENROLLMENTS.c.enrolled_at, _ENROLLMENTS.c.last_sent_at,
            _ENROLLMENTS.c.paused_until, *_candidate_columns(full),
        )
        .select_from(_ENROLLMENTS.join(_CANDIDATES, _CANDIDATES.c.id == _ENROLLMENTS.c.candidate_id))
        .where(_ENROLLMENTS.c.campaign_id == campaign_id, _ENROLLMENTS.c.state == "active")
        .order_by(_ENROLLMENTS.c.id)
    )
    for page in _pages(session, stmt):
        sends: dict[int, list] = {}
        for send in session.execute(_SENDS_OF, {"ids": [r.enrollment_id for r in page]}):
            sends.setdefault(send.enrollment_id, []).append(send)
        for row, cand in zip(page, _candidates(session, page, full), strict=True):
            rows = sends.get(row.enrollment_id, ())
            q = next((s for s in rows if s.state in QUEUED), None)
            yield Track(
                candidate=cand,
                done=frozenset(s.step_id for s in rows),
                anchor=aware(row.last_sent_at or row.enrolled_at),
                pending_step=q.step_id if q else None,
                pending_variant=q.variant if q else None,
                pending_due=aware(q.due_at) if q else None,
                paused_until=aware(row.paused_until),
            )


def would_enrol(session: Session, campaign_id: str, audience, *, full: bool = True) -> Iterator[dict]:
    """Candidates matching the audience now who are not enrolled yet (the SQL segment)."""
    enrolled = exists().where(_ENROLLMENTS.c.candidate_id == _CANDIDATES.c.id, _ENROLLMENTS.c.campaign_id == campaign_id)
    stmt = select(*_candidate_columns(full)).where(audience, ~enrolled).order_by(_CANDIDATES.c.id)
    for page in _pages(session, stmt):
        yield from _candidates(session, page, full)


def enrolled_count(session: Session, campaign_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(Enrollment).where(Enrollment.campaign_id == campaign_id)
    ).scalar_one()
