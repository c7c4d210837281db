"""Inbound mail in the database: sync positions, dedupe, matching look-ups and effects.

Every statement the reply sync runs lives here. Effects are guarded so that they can only ever
move things in one direction: an enrollment is exited once, a pending send is only ever
postponed (never brought forward), a suppression is added once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from ..models import (
    CLAIMABLE_STATES,
    Candidate,
    Enrollment,
    Event,
    Inbound,
    MailboxState,
    Send,
)
from .ledger import ACTIVE_ENROLLMENT, _insert, end_enrollment, naive

# Sends that may have reached the recipient, so that mail about them can come back.
DELIVERED_STATES = ("sent", "unknown")
CHUNK = 500


# --- positions --------------------------------------------------------------------------------


def load_position(session: Session, mailbox: str) -> tuple[int, int] | None:
    row = session.get(MailboxState, mailbox)
    return (row.uidvalidity, row.last_uid) if row is not None else None


def save_position(session: Session, mailbox: str, uidvalidity: int, last_uid: int) -> None:
    """Upsert; the position only moves forward within one UIDVALIDITY."""
    row = session.get(MailboxState, mailbox)
    if row is None:
        stmt = _insert(session, MailboxState.__table__).values(
            mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid
        )
        session.execute(stmt.on_conflict_do_nothing())
        row = session.get(MailboxState, mailbox, populate_existing=True)
    if row.uidvalidity != uidvalidity:
        row.uidvalidity, row.last_uid = uidvalidity, last_uid
    elif last_uid > row.last_uid:
        row.last_uid = last_uid


# --- dedupe -----------------------------------------------------------------------------------


def known_keys(session: Session, keys: Iterable[str]) -> set[str]:
    keys = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        found.update(
            session.execute(
                select(Inbound.dedupe_key).where(Inbound.dedupe_key.in_(keys[start : start + CHUNK]))
            ).scalars()
        )
    return found


_INSERTS: dict[str, object] = {}


def insert_inbound(session: Session, row: dict) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING: the new row's id, or None when it was already there
    (stored earlier, or by another daemon a moment ago). `row` has every column but `id`."""
    dialect = session.get_bind().dialect.name
    stmt = _INSERTS.get(dialect)
    if stmt is None:  # built once: constructing the statement costs more than running it
        stmt = _INSERTS[dialect] = (
            _insert(session, Inbound.__table__)
            .values({c.name: bindparam(c.name) for c in Inbound.__table__.columns if c.name != "id"})
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Inbound.id)
        )
    return session.execute(stmt, row).scalar()


# --- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRef:
    """A ledger row that inbound mail refers to, with its candidate."""

    send_id: int
    enrollment_id: int
    campaign_id: str
    step_id: str
    candidate_id: int
    email: str
    timezone: str | None
    message_id: str
    sent_at: datetime | None  # naive UTC


def _send_columns():
    return (
        Send.id,
        Send.enrollment_id,
        Send.campaign_id,
        Send.step_id,
        Send.candidate_id,
        Candidate.email,
        Candidate.timezone,
        Send.message_id,
        func.coalesce(Send.sent_at, Send.updated_at),
    )


def sends_by_message_id(session: Session, message_ids: Iterable[str]) -> dict[str, SendRef]:
    """Ledger rows whose Message-ID is one of these (ids are stored without angle brackets)."""
    ids = list(dict.fromkeys(i for i in message_ids if i))
    out: dict[str, SendRef] = {}
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(*_send_columns())
            .join(Candidate, Candidate.id == Send.candidate_id)
            .where(Send.message_id.in_(ids[start : start + CHUNK]))
        ).all()
        for r in rows:
            out[r[7]] = SendRef(*r)
    return out


def _recent_send_query():
    sent = func.coalesce(Send.sent_at, Send.updated_at)
    return (
        select(*_send_columns())
        .join(Candidate, Candidate.id == Send.candidate_id)
        .where(
            Candidate.email.in_(bindparam("addresses", expanding=True)),
            Send.state.in_(DELIVERED_STATES),
            sent >= bindparam("low"),
            sent <= bindparam("high"),
        )
        .order_by(sent.desc(), Send.id.desc())
        .limit(1)
    )


_RECENT_SEND = _recent_send_query()


def recent_send_to(
    session: Session, addresses: Sequence[str], received: datetime, window: timedelta, slack: timedelta
) -> SendRef | None:
    """The latest send that may have reached one of these addresses within `window` before
    `received` (plus `slack` for clocks that disagree)."""
    if not addresses:
        return None
    at = naive(received)
    row = session.execute(
        _RECENT_SEND, {"addresses": list(addresses), "low": at - window, "high": at + slack}
    ).first()
    return SendRef(*row) if row else None


# --- effects ----------------------------------------------------------------------------------

# The candidate's active enrollments that began before the message arrived.
_ACTIVE_ENROLLMENTS = select(Enrollment.id, Enrollment.campaign_id, Enrollment.paused_until).where(
    Enrollment.candidate_id == bindparam("candidate"),
    Enrollment.state.in_(ACTIVE_ENROLLMENT),
    Enrollment.enrolled_at <= bindparam("received"),
)


def end_on_reply(
    session: Session,
    candidate_id: int,
    exit_when: Mapping[str, frozenset[str]],
    default: frozenset[str],
    received: datetime,
    stamp: datetime,
) -> list[tuple[int, str]]:
    """Exit the candidate's active enrollments whose campaign exits on `replied` and that began
    before the reply arrived. Returns (enrollment id, campaign id) of those ended."""
    rows = session.execute(
        _ACTIVE_ENROLLMENTS, {"candidate": candidate_id, "received": naive(received)}
    ).all()
    ended = []
    for enrollment_id, campaign_id, _paused in rows:
        if "replied" in exit_when.get(campaign_id, default):
            end_enrollment(session, enrollment_id, "replied", stamp)
            ended.append((enrollment_id, campaign_id))
    return ended


def postpone(
    session: Session, candidate_id: int, resume_at: datetime, received: datetime, stamp: datetime
) -> list[tuple[int, str, list[int]]]:
    """Out of office: hold the candidate's active enrollments until `resume_at` (stored in
    `paused_until` for the record) and move their queued sends that fall due before it.
    Claimed rows are in flight and left alone. Returns (enrollment, campaign, moved send ids)."""
    until = naive(resume_at)
    rows = session.execute(
        _ACTIVE_ENROLLMENTS, {"candidate": candidate_id, "received": naive(received)}
    ).all()
    out = []
    for enrollment_id, campaign_id, paused in rows:
        if paused is None or paused < until:
            session.execute(
                update(Enrollment).where(Enrollment.id == enrollment_id).values(paused_until=until)
            )
        moved = _push_back(session, Send.enrollment_id == enrollment_id, until, stamp)
        out.append((enrollment_id, campaign_id, moved))
    return out


def _push_back(session: Session, which, until: datetime, stamp: datetime) -> list[int]:
    ids = list(
        session.execute(
            select(Send.id).where(which, Send.state.in_(CLAIMABLE_STATES), Send.due_at < until)
        ).scalars()
    )
    if ids:
        session.execute(
            update(Send)
            .where(Send.id.in_(ids), Send.state.in_(CLAIMABLE_STATES))
            .values(due_at=until, updated_at=stamp)
        )
    return ids


def hold_paused(session: Session, now: datetime) -> int:
    """Keep sends queued after an out-of-office arrived (the next step is often placed in the
    ledger only after the note came in) behind their enrollment's `paused_until`."""
    at = naive(now)
    paused = session.execute(
        select(Enrollment.id, Enrollment.paused_until).where(
            Enrollment.paused_until > at, Enrollment.state == "active"
        )
    ).all()
    moved = 0
    for enrollment_id, until in paused:
        moved += len(
            _push_back(
                session, and_(Send.enrollment_id == enrollment_id), until, at
            )
        )
    return moved


def event_row(
    kind: str, stamp: datetime, *, candidate_id: int | None, campaign_id: str | None, detail: dict
) -> dict:
    return {"at": stamp, "kind": kind, "candidate_id": candidate_id, "campaign_id": campaign_id,
            "detail": detail}


def add_events(session: Session, rows: list[dict]) -> None:
    """Audit events, in one executemany."""
    if rows:
        session.execute(insert(Event.__table__), rows)


def candidate_email(session: Session, candidate_id: int) -> str | None:
    return session.execute(select(Candidate.email).where(Candidate.id == candidate_id)).scalar()
