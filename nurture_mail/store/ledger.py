"""The enrollments and the send ledger: claim, record, cancel (enrolment and scheduling:
`enrolment`).

Exactly-once rests on three things here:
* one ledger row per (enrollment, step), enforced by a unique constraint, with its Message-ID
  generated and stored when the row is created;
* claiming with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several daemons share the
  work; SQLite: one daemon, see `daemon_lock`);
* `data_started` committed before a message's data goes out, so a lease that expires after that
  point turns the row `unknown` instead of sending it again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import (
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import DateTime, Integer, String, Text

from ..models import (
    _CLAIMABLE_SQL,
    CLAIMABLE_STATES,
    Campaign,
    Candidate,
    CandidateTag,
    Enrollment,
    Send,
    Suppression,
)
from . import sent_messages
from .batch_sql import ExecuteMany, OneOf, dialect_insert, update_each

ACTIVE_ENROLLMENT = ("active", "paused")
PENDING_STATES = ("scheduled", "claimed", "deferred")
FINAL_STATES = ("sent", "failed", "skipped", "cancelled", "unknown")
SENT_LIKE = ("sent", "unknown", "claimed")  # count against a daily cap
STEP_REMOVED = "step removed from the campaign"  # why a removed step's rows are cancelled


def naive(moment: datetime) -> datetime:
    """Aware -> naive UTC, as stored."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _insert(session: Session, table):
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect."""
    return dialect_insert(session.get_bind().dialect.name, table)


# --- prebuilt Core statements for the send path ------------------------------------------------
# Built once: constructing SQLAlchemy statements per message costs more than running them.
_SENDS = Send.__table__
_ENROLLMENTS = Enrollment.__table__

# Each one UPDATE ... FROM unnest(arrays) on PostgreSQL, one executemany on SQLite
# (`batch_sql.update_each`): a batch's rows never name a send or an enrollment twice.
_MARK_STARTED = update_each(  # one row each, fenced by the claim, with what is about to leave
    {"p_id": Integer, "p_to": Text, "p_subject": Text}, {"p_owner": String, "p_lease": DateTime},
    lambda value: update(_SENDS)
    .where(
        _SENDS.c.id == value("p_id"),
        _SENDS.c.state == "claimed",
        _SENDS.c.claimed_by == value("p_owner"),
    )
    .values(
        data_started=True,
        attempts=_SENDS.c.attempts + 1,
        lease_until=value("p_lease"),
        to_addr=value("p_to"),
        subject=value("p_subject"),
    ),
)
_MARKED = select(_SENDS.c.id).where(
    _SENDS.c.id.in_(bindparam("ids", expanding=True)),
    _SENDS.c.state == "claimed",
    _SENDS.c.claimed_by == bindparam("owner"),
    _SENDS.c.data_started.is_(True),
)
_FINISH = update_each(
    {"p_id": Integer, "p_state": Text, "p_response": Text, "p_reason": Text, "p_sent_at": DateTime},
    {"p_stamp": DateTime},
    lambda value: update(_SENDS)
    .where(_SENDS.c.id == value("p_id"))
    .values(
        state=value("p_state"), smtp_response=value("p_response"),
        reason=value("p_reason"), sent_at=value("p_sent_at"),
        claimed_by=None, lease_until=None, updated_at=value("p_stamp"),
    ),
)
_NEXT_STEP = update_each(
    {"p_enrollment": Integer, "p_step": Text}, {"p_stamp": DateTime},
    lambda value: update(_ENROLLMENTS)
    .where(_ENROLLMENTS.c.id == value("p_enrollment"), _ENROLLMENTS.c.state == "active")
    .values(needs_next=True, last_sent_at=value("p_stamp"), last_step_id=value("p_step")),
)
_MOVE_ON = ExecuteMany(  # a removed step's row cancelled: its enrollment takes the next step
    update(_ENROLLMENTS)
    .where(_ENROLLMENTS.c.id == bindparam("p_enrollment"), _ENROLLMENTS.c.state == "active")
    .values(needs_next=True)
)
_MOVE = ExecuteMany(
    update(_SENDS)
    .where(_SENDS.c.id == bindparam("p_id"))
    .values(
        state=bindparam("p_state"), due_at=bindparam("p_due"),
        reason=func.coalesce(bindparam("p_reason"), _SENDS.c.reason),
        claimed_by=None, lease_until=None, data_started=False, updated_at=bindparam("p_stamp"),
    )
)
_CANCEL = ExecuteMany(
    update(_SENDS)
    .where(_SENDS.c.id == bindparam("p_id"))
    .values(
        state="cancelled", reason=bindparam("p_reason"),
        claimed_by=None, lease_until=None, updated_at=bindparam("p_stamp"),
    )
)


def _claim_statement(postgresql: bool):
    # The states as literal SQL, so the planner can prove the partial index `ix_sends_claimable`
    # applies; on SQLite the campaign test is written `+campaign_id` so the planner does not
    # prefer the report index instead: that read every row of the campaign, sent ones too, and
    # sorted them on every claim (10 ms per claim over 20,000 rows, 0.08 ms via the index).
    campaign = _SENDS.c.campaign_id if postgresql else literal_column("+sends.campaign_id")
    pick = (
        select(_SENDS.c.id)
        .where(
            text(f"sends.{_CLAIMABLE_SQL}"),
            _SENDS.c.due_at <= bindparam("due_by"),
            campaign.in_(bindparam("campaigns", expanding=True)),
        )
        .order_by(_SENDS.c.due_at, _SENDS.c.id)
        .limit(bindparam("limit"))
    )
    if postgresql:
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(_SENDS)
        .where(_SENDS.c.id.in_(pick.scalar_subquery()))
        .values(
            state="claimed",
            claimed_by=bindparam("owner"),
            lease_until=bindparam("lease"),
            updated_at=bindparam("due_by"),
        )
        .returning(_SENDS.c.id)
    )


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}


def end_enrollments(
    session: Session, candidate_ids: Sequence[int], reason: str, stamp: datetime
) -> None:
    """Stop every later step for these candidates at once: exit the enrollments and cancel
    ledger rows that have not been handed to the server."""
    if not candidate_ids:
        return
    session.execute(
        update(Enrollment)
        .where(Enrollment.candidate_id.in_(candidate_ids), Enrollment.state.in_(ACTIVE_ENROLLMENT))
        .values(state="exited", exit_reason=reason, exited_at=stamp, needs_next=False)
    )
    session.execute(
        update(Send)
        .where(Send.candidate_id.in_(candidate_ids), Send.state.in_(CLAIMABLE_STATES))
        .values(state="cancelled", reason=reason, updated_at=stamp)
    )


# --- campaigns ---------------------------------------------------------------------------------


def sync_campaign(session: Session, campaign_id: str, name: str, status: str, step_ids: list[str], stamp: datetime) -> None:
    row = session.get(Campaign, campaign_id)
    if row is None:
        stmt = _insert(session, Campaign.__table__).values(
            id=campaign_id, name=name, status=status, steps=step_ids, updated_at=stamp
        )
        session.execute(stmt.on_conflict_do_nothing())
    elif (row.name, row.status, row.steps) != (name, status, step_ids):
        if row.steps != step_ids:
            cancel_removed_steps(session, campaign_id, step_ids, stamp)
        row.name, row.status, row.steps, row.updated_at = name, status, step_ids, stamp


def cancel_removed_steps(session: Session, campaign_id: str, step_ids: list[str], stamp: datetime) -> int:
    """A step deleted from a live campaign is never sent: cancel its queued rows now, and let
    those enrollments move on to their next step."""
    removed = and_(
        Send.campaign_id == campaign_id,
        Send.state.in_(CLAIMABLE_STATES),
        Send.step_id.not_in(step_ids),
    )
    enrollment_ids = list(session.execute(select(Send.enrollment_id).where(removed)).scalars())
    if not enrollment_ids:
        return 0
    session.execute(
        update(Send)
        .where(removed)
        .values(state="cancelled", reason=STEP_REMOVED, updated_at=stamp)
    )
    session.execute(
        update(Enrollment)
        .where(Enrollment.id.in_(enrollment_ids), Enrollment.state == "active")
        .values(needs_next=True)
    )
    return len(enrollment_ids)


# --- claiming ---------------------------------------------------------------------------------


def reap_expired(session: Session, stamp: datetime) -> tuple[int, int]:
    """Leases that ran out (a crashed or killed sender): rows whose data never started go back
    to the queue; rows whose data may have reached the server become `unknown`, never resent."""
    expired = and_(Send.state == "claimed", Send.lease_until < stamp)
    unknown_ids = list(
        session.execute(select(Send.enrollment_id).where(expired, Send.data_started.is_(True))).scalars()
    )
    unknown = session.execute(
        update(Send)
        .where(expired, Send.data_started.is_(True))
        .values(
            state="unknown",
            reason="the sender stopped after the message data started; not retried",
            claimed_by=None,
            lease_until=None,
            updated_at=stamp,
        )
    ).rowcount
    if unknown_ids:
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(unknown_ids), Enrollment.state == "active")
            .values(needs_next=True, last_sent_at=stamp)
        )
    requeued = session.execute(
        update(Send)
        .where(expired)
        .values(state="scheduled", claimed_by=None, lease_until=None, updated_at=stamp)
    ).rowcount
    return requeued or 0, unknown or 0


def claim(
    session: Session,
    *,
    due_by: datetime,
    lease_until: datetime,
    owner: str,
    limit: int,
    campaign_ids: Sequence[str],
) -> list[int]:
    """Take up to `limit` rows of these campaigns due by `due_by`, leased to `owner`."""
    if not campaign_ids or limit <= 0:
        return []
    conn = session.connection()
    stmt = _CLAIM[conn.dialect.name == "postgresql"]
    ids = conn.execute(
        stmt,
        {
            "due_by": naive(due_by),
            "campaigns": list(campaign_ids),
            "limit": limit,
            "owner": owner,
            "lease": naive(lease_until),
        },
    ).scalars()
    return sorted(ids)


def release(session: Session, send_ids: Sequence[int], owner: str, stamp: datetime) -> None:
    """Hand claimed rows back untouched (the sender is stopping before their data started)."""
    session.execute(
        update(Send)
        .where(
            Send.id.in_(list(send_ids)),
            Send.state == "claimed",
            Send.claimed_by == owner,
            Send.data_started.is_(False),
        )
        .values(state="scheduled", claimed_by=None, lease_until=None, updated_at=stamp)
    )


class Claimed(NamedTuple):
    """A claimed row with everything needed to decide, render and send it (a tuple: built per
    message, cheaper than a dataclass)."""

    send_id: int
    enrollment_id: int
    campaign_id: str
    step_id: str
    variant: str | None
    message_id: str
    attempts: int
    due_at: datetime
    enrollment_state: str
    suppressed: bool
    candidate: dict


def claimed_details(session: Session, ids: Sequence[int]) -> list[Claimed]:
    """Everything about the claimed rows in two Core queries (no ORM objects: a hot path)."""
    if not ids:
        return []
    conn = session.connection()
    # The id lists as one parameter each: the statements' text never changes with the batch.
    # The rows as the driver gives them (SQLAlchemy's processing of 25 columns cost more than
    # the query): moments and attributes are read below.
    rows = _CLAIMED_DETAILS.execute_raw(conn, ids).all()
    tags: dict[int, list[str]] = {}
    if rows:
        for cid, tag in _TAGS_OF.execute(conn, {r[_CANDIDATE_AT] for r in rows}):
            tags.setdefault(cid, []).append(tag)
    out = []
    keys, at = _CANDIDATE_KEYS, _CANDIDATE_AT
    if rows and len(rows[0]) != at + len(keys):  # checked once, not per row (zip's strict=)
        raise RuntimeError("claimed_details: the query's columns and _CANDIDATE_KEYS differ")
    # A batch repeats the same few moments (one import's created_at, one slot's due_at): each
    # stored value (SQLite's text, PostgreSQL's naive datetime) is made an aware datetime once.
    made: dict[object, datetime] = {}
    for r in rows:
        candidate = dict(zip(keys, r[at:]))  # noqa: B905 - the lengths are checked above
        if (decided := candidate["decided_at"]) is not None:
            candidate["decided_at"] = made.get(decided) or made.setdefault(decided, _moment(decided))
        if (created := candidate["created_at"]) is not None:
            candidate["created_at"] = made.get(created) or made.setdefault(created, _moment(created))
        attributes = candidate["attributes"]
        if type(attributes) is str:  # SQLite's text; "{}" is most candidates' (json.loads: 1.5 us)
            attributes = json.loads(attributes) if attributes != "{}" else None
        candidate["attributes"] = dict(attributes) if attributes else {}
        found = tags.get(candidate["id"])
        candidate["tags"] = sorted(found) if found else []
        if (due := r[7]) is not None:
            due = made.get(due) or made.setdefault(due, _moment(due))
        out.append(Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], due, r[8], bool(r[9]), candidate))
    return out


_SQLITE_DATETIME = sqlite.DATETIME().result_processor(sqlite.dialect(), None)


def _moment(stored: object) -> datetime:
    """A stored moment (naive UTC) as an aware datetime: SQLite's text, read as SQLAlchemy's
    DateTime reads it, or PostgreSQL's datetime."""
    return aware(_SQLITE_DATETIME(stored) if type(stored) is str else stored)  # type: ignore[arg-type,return-value]


# What rules and templates see of a candidate, in `candidate_fields` order (plus "tags").
_CANDIDATE_KEYS = (
    "id", "email", "first_name", "last_name", "full_name", "status", "timezone", "owner", "role",
    "stage_reached", "decided_at", "source", "created_at", "token_key", "attributes",
)
_CANDIDATE_AT = 10  # the first candidate column in _CLAIMED_DETAILS
_CLAIMED_DETAILS = OneOf("ids", Integer, lambda one_of: (
    select(
        _SENDS.c.id, _SENDS.c.enrollment_id, _SENDS.c.campaign_id, _SENDS.c.step_id,
        _SENDS.c.variant, _SENDS.c.message_id, _SENDS.c.attempts, _SENDS.c.due_at,
        _ENROLLMENTS.c.state,
        exists().where(Suppression.__table__.c.email == Candidate.__table__.c.email),
        *(Candidate.__table__.c[key] for key in _CANDIDATE_KEYS),
    )
    .select_from(
        _SENDS.join(_ENROLLMENTS, _ENROLLMENTS.c.id == _SENDS.c.enrollment_id)
        .join(Candidate.__table__, Candidate.__table__.c.id == _SENDS.c.candidate_id)
    )
    .where(one_of(_SENDS.c.id))
    .order_by(_SENDS.c.id)
))
_TAGS_OF = OneOf("ids", Integer, lambda one_of: (
    select(CandidateTag.__table__.c.candidate_id, CandidateTag.__table__.c.tag)
    .where(one_of(CandidateTag.__table__.c.candidate_id))
))


def candidate_fields(c: Candidate, tags: list[str]) -> dict:
    """The plain mapping rules and templates see."""
    return {
        "id": c.id,
        "email": c.email,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "full_name": c.full_name,
        "status": c.status,
        "timezone": c.timezone,
        "owner": c.owner,
        "role": c.role,
        "stage_reached": c.stage_reached,
        "decided_at": aware(c.decided_at),
        "source": c.source,
        "created_at": aware(c.created_at),
        "token_key": c.token_key,
        "attributes": dict(c.attributes or {}),
        "tags": tags,
    }


class Prepared(NamedTuple):
    """What the ledger keeps of a message about to leave."""

    to_addr: str
    subject: str
    dictionary_id: int | None  # what `body` was packed against (`sent_messages.Packer`)
    body: bytes  # the packed message


def mark_data_started(
    session: Session,
    owner: str,
    prepared: dict[int, Prepared],
    lease_until: datetime,
) -> list[int]:
    """The commit point before data goes out: from here on an expired lease means `unknown`.

    Fenced by the claim: a row another sender took over (our lease ran out) is not marked, and
    so not sent. Stores what is about to be sent (recipient and subject in the row, the message
    packed by the caller outside the transaction in `sent_messages`). Returns the ids that may
    be sent. `updated_at` stays the claim's: the row's state does not change here (and leaving
    it spares a rewrite of the report index's entry per message).
    """
    if not prepared:
        return []
    conn = session.connection()
    lease = naive(lease_until)
    rows = [
        {"p_id": sid, "p_owner": owner, "p_lease": lease, "p_to": p.to_addr, "p_subject": p.subject}
        for sid, p in prepared.items()
    ]
    # All marked is the rule; when a row was fenced out (another sender took it over), ask
    # which ones are ours, and keep only their messages.
    if _MARK_STARTED(conn, rows).rowcount == len(rows):
        marked = list(prepared)
    else:
        marked = list(conn.execute(_MARKED, {"ids": list(prepared), "owner": owner}).scalars())
    sent_messages.store(session, {sid: prepared[sid][2:] for sid in marked})
    return marked


class Writes:
    """Outcomes of a batch, written with one executemany per kind (Core: a hot path). Each
    row is built once, with the batch's stamp in it, as the statements take it."""

    def __init__(self, stamp: datetime):
        self.stamp = stamp
        self.finished: list[dict] = []
        self.next_steps: list[dict] = []
        self.moved: list[dict] = []
        self.cancelled: list[dict] = []
        self.moving_on: list[dict] = []

    def finish(self, send_id: int, enrollment_id: int, step_id: str, state: str, *,
               response: str | None = None, reason: str | None = None, sent: bool = False) -> None:
        """A final state (sent, failed, unknown, skipped): the enrollment moves to its next step."""
        stamp = self.stamp
        self.finished.append({
            "p_id": send_id, "p_state": state, "p_response": response, "p_reason": reason,
            "p_sent_at": stamp if sent else None, "p_stamp": stamp,
        })
        self.next_steps.append({"p_enrollment": enrollment_id, "p_step": step_id, "p_stamp": stamp})

    def defer(self, send_id: int, due: datetime, *, reason: str | None, count_attempt: bool) -> None:
        """Back to the queue at `due` (temporary failure, closed window, daily cap, stopping)."""
        self.moved.append({
            "p_id": send_id, "p_state": "deferred" if count_attempt else "scheduled",
            "p_due": naive(due), "p_reason": reason, "p_stamp": self.stamp,
        })

    def cancel(self, send_id: int, reason: str, *, move_on: int | None = None) -> None:
        """Never sent; `move_on` names an enrollment that takes its next step instead (the
        row's step was removed from the campaign), as `cancel_removed_steps` does."""
        self.cancelled.append({"p_id": send_id, "p_reason": reason, "p_stamp": self.stamp})
        if move_on is not None:
            self.moving_on.append({"p_enrollment": move_on})

    def any(self) -> bool:
        return bool(self.finished or self.moved or self.cancelled)

    def flush(self, session: Session) -> None:
        conn = session.connection()
        if self.finished:
            _FINISH(conn, self.finished)
            _NEXT_STEP(conn, self.next_steps)
        if self.moved:
            _MOVE(conn, self.moved)
        if self.cancelled:
            _CANCEL(conn, self.cancelled)
        if self.moving_on:
            _MOVE_ON(conn, self.moving_on)
        self.finished, self.next_steps, self.moved, self.cancelled, self.moving_on = [], [], [], [], []


def sent_between(session: Session, campaign_id: str, start: datetime, end: datetime) -> int:
    """Sends of a campaign handed to the server in [start, end): what a daily cap counts."""
    return session.execute(
        select(func.count())
        .select_from(Send)
        .where(
            Send.campaign_id == campaign_id,
            Send.state.in_(("sent", "unknown")),
            Send.sent_at >= naive(start),
            Send.sent_at < naive(end),
        )
    ).scalar_one()


def next_due(session: Session, campaign_ids: Sequence[str]) -> datetime | None:
    """The earliest time anything in the queue falls due (for the demo's time travel)."""
    value = session.execute(
        select(func.min(Send.due_at)).where(
            Send.state.in_(CLAIMABLE_STATES), Send.campaign_id.in_(list(campaign_ids))
        )
    ).scalar()
    return aware(value)
