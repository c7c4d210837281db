"""Read-only queries behind `nurture plan`: the queue as it stands, and who would be enrolled."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from ..models import Candidate, CandidateTag, Enrollment, Send
from .ledger import aware, candidate_fields

PAGE = 2000


@dataclass(frozen=True)
class Track:
    """Where one candidate stands in one campaign, as the forecast starts from it."""

    candidate: dict
    done: frozenset[str]  # step ids with a ledger row
    anchor: datetime  # enrolment or last send (aware UTC)
    pending_step: str | None = None  # a queued row: its step, variant and due time
    pending_variant: str | None = None
    pending_due: datetime | None = None
    paused_until: datetime | None = None  # an out-of-office: no step before this


def _with_tags(session: Session, candidates: list[Candidate]) -> list[dict]:
    tags: dict[int, list[str]] = {}
    ids = [c.id for c in candidates]
    if ids:
        for cid, tag in session.execute(
            select(CandidateTag.candidate_id, CandidateTag.tag).where(CandidateTag.candidate_id.in_(ids))
        ):
            tags.setdefault(cid, []).append(tag)
    return [candidate_fields(c, sorted(tags.get(c.id, []))) for c in candidates]


def enrolled_tracks(session: Session, campaign_id: str) -> Iterator[Track]:
    """Active enrollments of a campaign, with their queued row if they have one."""
    last = 0
    while True:
        page = session.execute(
            select(Enrollment, Candidate)
            .join(Candidate, Candidate.id == Enrollment.candidate_id)
            .where(Enrollment.campaign_id == campaign_id, Enrollment.state == "active", Enrollment.id > last)
            .order_by(Enrollment.id)
            .limit(PAGE)
        ).all()
        if not page:
            return
        last = page[-1][0].id
        ids = [e.id for e, _ in page]
        rows: dict[int, list[Send]] = {}
        for send in session.execute(select(Send).where(Send.enrollment_id.in_(ids))).scalars():
            rows.setdefault(send.enrollment_id, []).append(send)
        fields = _with_tags(session, [c for _, c in page])
        for (enrollment, _), cand in zip(page, fields, strict=True):
            sends = rows.get(enrollment.id, [])
            queued = [s for s in sends if s.state in ("scheduled", "deferred", "claimed")]
            anchor = aware(enrollment.last_sent_at or enrollment.enrolled_at)
            q = queued[0] if queued else None
            yield Track(
                candidate=cand,
                done=frozenset(s.step_id for s in sends),
                anchor=anchor,
                pending_step=q.step_id if q else None,
                pending_variant=q.variant if q else None,
                pending_due=aware(q.due_at) if q else None,
                paused_until=aware(enrollment.paused_until),
            )


def would_enrol(session: Session, campaign_id: str, audience) -> Iterator[dict]:
    """Candidates matching the audience now who are not enrolled yet (the SQL segment)."""
    enrolled = exists().where(Enrollment.candidate_id == Candidate.id, Enrollment.campaign_id == campaign_id)
    last = 0
    while True:
        page = list(
            session.execute(
                select(Candidate)
                .where(audience, ~enrolled, Candidate.id > last)
                .order_by(Candidate.id)
                .limit(PAGE)
            ).scalars()
        )
        if not page:
            return
        last = page[-1].id
        yield from _with_tags(session, page)


def enrolled_count(session: Session, campaign_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(Enrollment).where(Enrollment.campaign_id == campaign_id)
    ).scalar_one()
