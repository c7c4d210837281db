"""Inbound mail in the database: sync positions, dedupe, matching look-ups and effects.

Every statement the reply sync runs lives here, in SQLAlchemy Core on the table objects (no
ORM-enabled updates in the hot path) and set-at-a-time: one statement per batch of messages for
the dedupe insert, the Message-ID look-up, the address look-up, and each kind of effect, sent
through the driver by the forms of store/batch_sql.py.

Effects are guarded so that they can only ever move things in one direction: an enrollment is
exited once, a pending send is only ever postponed (never brought forward), a suppression is
added once. `Effects` applies a batch's effects in message order against a snapshot of the
candidates' enrollments and queued sends taken inside the batch's transaction, then writes
them with one statement per kind (an executemany on SQLite, one UPDATE ... FROM unnest(arrays)
on PostgreSQL); each written statement keeps its guard (state still active / claimable), so a
row another process changed meanwhile is left alone, exactly as the per-message statements
did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import DateTime, Integer, String, Text

from ..models import (
    CLAIMABLE_STATES,
    Candidate,
    Enrollment,
    Event,
    Inbound,
    MailboxState,
    Send,
    Suppression,
)
from .batch_sql import ExecuteMany, OneOf, UnnestInsert, ValuesInsert, pg_insert, update_each
from .ledger import ACTIVE_ENROLLMENT, _insert, naive

# Sends that may have reached the recipient, so that mail about them can come back.
DELIVERED_STATES = ("sent", "unknown")

_INBOUND = Inbound.__table__
_SENDS = Send.__table__
_ENROLLMENTS = Enrollment.__table__
_CANDIDATES = Candidate.__table__
_EVENTS = Event.__table__
_SUPPRESSIONS = Suppression.__table__


def naive_utc(moment: datetime) -> datetime:
    """ledger.naive, with the common case (already UTC) first."""
    return moment.replace(tzinfo=None) if moment.tzinfo is UTC else naive(moment)


def _one_of(column, values: Sequence[str]):
    """column IN (...) as plain comparisons: an expanding IN cannot go in an executemany."""
    return or_(*(column == v for v in values))


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


_KNOWN = OneOf("keys", String, lambda one_of: select(_INBOUND.c.dedupe_key).where(one_of(_INBOUND.c.dedupe_key)))


def known_keys(session: Session, keys: Iterable[str]) -> set[str]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return set()
    return set(_KNOWN.execute(session.connection(), keys).scalars())


INBOUND_COLUMNS = tuple(c.name for c in _INBOUND.columns if c.name != "id")
EVENT_COLUMNS = ("at", "kind", "candidate_id", "campaign_id", "detail")
def _new_inbound(on_conflict):
    return on_conflict.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(
        _INBOUND.c.id, _INBOUND.c.dedupe_key
    )


_BULK: dict[tuple[str, str], ValuesInsert | UnnestInsert] = {}


def _bulk(conn, name: str) -> ValuesInsert | UnnestInsert:
    """The batch INSERT of `name` ("inbound", "events") for this connection's dialect."""
    key = (conn.dialect.name, name)
    bulk = _BULK.get(key)
    if bulk is None:  # built once per dialect: rendering costs more than running
        table, columns = (_INBOUND, INBOUND_COLUMNS) if name == "inbound" else (_EVENTS, EVENT_COLUMNS)
        if conn.dialect.name == "postgresql":
            bulk = UnnestInsert(pg_insert, table, columns)
            if name == "inbound":
                bulk.finish(_new_inbound)
        elif name == "inbound":
            bulk = ValuesInsert(conn, _new_inbound(sqlite.insert(table)), columns)
        else:
            bulk = ValuesInsert(conn, table.insert().inline(), columns)  # inline: no RETURNING id
        _BULK[key] = bulk
    return bulk


def insert_inbound_many(session: Session, rows: Sequence[dict]) -> dict[str, int]:
    """INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key for a batch of
    rows (every column but `id`, distinct dedupe keys), in as few statements as _bulk allows.
    Returns {dedupe key: new id} for the rows this call created; a key absent from the answer
    was stored before (or by another daemon a moment ago), and its effects are that earlier
    insert's."""
    if not rows:
        return {}
    conn = session.connection()
    created: dict[str, int] = {}
    for result in _bulk(conn, "inbound").execute(conn, rows):
        for new_id, key in result:
            created[key] = new_id
    return created


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
    sent_at: datetime | None  # naive UTC: its sent_at, or for a send without one, when it last changed
    variant: str | None
    accepted: bool  # state sent, with its time: `sent_at` is when the server accepted it

    @property
    def accepted_at(self) -> datetime | None:
        return self.sent_at if self.accepted else None


_SENT_AT = func.coalesce(_SENDS.c.sent_at, _SENDS.c.updated_at)
_SEND_COLUMNS = (
    _SENDS.c.id,
    _SENDS.c.enrollment_id,
    _SENDS.c.campaign_id,
    _SENDS.c.step_id,
    _SENDS.c.candidate_id,
    _CANDIDATES.c.email,
    _CANDIDATES.c.timezone,
    _SENDS.c.message_id,
    _SENT_AT,
    _SENDS.c.variant,
    # A flag, not a second time: the rows of a batch's window are many, and each time parsed
    # from SQLite's text costs more than the query's other columns together.
    and_(_SENDS.c.state == "sent", _SENDS.c.sent_at.is_not(None)),
)
_SENDS_WITH_CANDIDATE = _SENDS.join(_CANDIDATES, _CANDIDATES.c.id == _SENDS.c.candidate_id)

_BY_MESSAGE_ID = OneOf("ids", String, lambda one_of: (
    select(*_SEND_COLUMNS).select_from(_SENDS_WITH_CANDIDATE).where(one_of(_SENDS.c.message_id))
))


def sends_by_message_id(session: Session, message_ids: Iterable[str]) -> dict[str, SendRef]:
    """Ledger rows whose Message-ID is one of these (ids are stored without angle brackets)."""
    ids = list(dict.fromkeys(i for i in message_ids if i))
    if not ids:
        return {}
    return {r[7]: SendRef(*r) for r in _BY_MESSAGE_ID.execute(session.connection(), ids)}


_BY_ADDRESS = OneOf("addresses", String, lambda one_of: (
    select(*_SEND_COLUMNS)
    .select_from(_SENDS_WITH_CANDIDATE)
    .where(
        one_of(_CANDIDATES.c.email),
        _one_of(_SENDS.c.state, DELIVERED_STATES),
        _SENT_AT.between(bindparam("low"), bindparam("high")),
    )
))


class RecentSends:
    """Sends that may have reached some addresses, fetched once for a whole batch of
    messages (one query, over the union of their windows); then `latest(addresses, received)`
    answers each message from memory."""

    def __init__(self, by_address: Mapping[str, list[SendRef]], window: timedelta, slack: timedelta):
        self.by_address = by_address
        self.window = window
        self.slack = slack

    @classmethod
    def load(
        cls, session: Session, wanted: Mapping[str, Sequence[datetime]],
        window: timedelta, slack: timedelta,
    ) -> RecentSends:
        """`wanted`: address (lower-case) -> the arrival times of the messages naming it."""
        by_address: dict[str, list[SendRef]] = {}
        if wanted:
            times = [naive_utc(t) for ts in wanted.values() for t in ts]
            low, high = min(times) - window, max(times) + slack
            for r in _BY_ADDRESS.execute(session.connection(), sorted(wanted), low=low, high=high):
                by_address.setdefault(r[5], []).append(SendRef(*r))
            for refs in by_address.values():
                refs.sort(key=lambda ref: (ref.sent_at, ref.send_id), reverse=True)
        return cls(by_address, window, slack)

    def latest(self, addresses: Sequence[str], received: datetime) -> SendRef | None:
        """The latest send that may have reached one of these addresses within `window`
        before `received` (plus `slack` for clocks that disagree); ties: the higher id."""
        at = naive_utc(received)
        low, high = at - self.window, at + self.slack
        best = None
        for address in addresses:
            for ref in self.by_address.get(address, ()):
                if ref.sent_at > high:
                    continue
                if ref.sent_at >= low and (best is None or (ref.sent_at, ref.send_id) > (best.sent_at, best.send_id)):
                    best = ref
                break  # sorted newest first: the first in range is this address's latest
        return best


# --- effects ----------------------------------------------------------------------------------


@dataclass
class _Enrollment:
    id: int
    candidate_id: int
    campaign_id: str
    paused_until: datetime | None
    enrolled_at: datetime


_ACTIVE_OF = OneOf("candidates", Integer, lambda one_of: select(
    _ENROLLMENTS.c.id, _ENROLLMENTS.c.candidate_id, _ENROLLMENTS.c.campaign_id,
    _ENROLLMENTS.c.paused_until, _ENROLLMENTS.c.enrolled_at,
).where(
    one_of(_ENROLLMENTS.c.candidate_id),
    _one_of(_ENROLLMENTS.c.state, ACTIVE_ENROLLMENT),
).order_by(_ENROLLMENTS.c.id))

_QUEUED_OF = OneOf("candidates", Integer, lambda one_of: select(
    _SENDS.c.id, _SENDS.c.enrollment_id, _SENDS.c.due_at
).where(
    one_of(_SENDS.c.candidate_id),
    _one_of(_SENDS.c.state, CLAIMABLE_STATES),
).order_by(_SENDS.c.id))

_SUPPRESSED = OneOf("hashes", String, lambda one_of: (
    select(_SUPPRESSIONS.c.email_hash).where(one_of(_SUPPRESSIONS.c.email_hash))
))

# Each one UPDATE ... FROM unnest(arrays) on PostgreSQL (batch_sql.update_each): a batch's few
# thousand exits are then a statement each, not a planned statement per row. The rows of one
# call never name a row twice (Effects.flush), so the two forms agree.
_PAUSE = update_each({"e_id": Integer, "until": DateTime}, {}, lambda value: (
    update(_ENROLLMENTS)
    .where(
        _ENROLLMENTS.c.id == value("e_id"),
        (_ENROLLMENTS.c.paused_until.is_(None)) | (_ENROLLMENTS.c.paused_until < value("until")),
    )
    .values(paused_until=value("until"))
))
_POSTPONE = update_each({"s_id": Integer, "until": DateTime}, {"stamp": DateTime}, lambda value: (
    update(_SENDS)
    .where(
        _SENDS.c.id == value("s_id"),
        _one_of(_SENDS.c.state, CLAIMABLE_STATES),
        _SENDS.c.due_at < value("until"),
    )
    .values(due_at=value("until"), updated_at=value("stamp"))
))


def _ends(key: str, target, key_column, state_column, active_states, values: Callable) -> ExecuteMany:
    """The UPDATE that ends (exits, cancels) the `target` rows whose `key_column` is the row's
    `key` and whose state is still one of `active_states`, setting `values(why, stamp)`."""
    return update_each({key: Integer, "why": Text}, {"stamp": DateTime}, lambda value: (
        update(target)
        .where(key_column == value(key), _one_of(state_column, active_states))
        .values(**values(value("why"), value("stamp")))
    ))


def _exited(why, stamp) -> dict:
    return {"state": "exited", "exit_reason": why, "exited_at": stamp, "needs_next": False}


def _cancelled(why, stamp) -> dict:
    return {"state": "cancelled", "reason": why, "updated_at": stamp}


_EXIT_ENROLLMENT = _ends("e_id", _ENROLLMENTS, _ENROLLMENTS.c.id, _ENROLLMENTS.c.state, ACTIVE_ENROLLMENT, _exited)
_CANCEL_ENROLLMENT_SENDS = _ends(
    "e_id", _SENDS, _SENDS.c.enrollment_id, _SENDS.c.state, CLAIMABLE_STATES, _cancelled
)
# A suppression ends every enrollment of the candidate (ledger.end_enrollments, per candidate).
_EXIT_CANDIDATE = _ends(
    "c_id", _ENROLLMENTS, _ENROLLMENTS.c.candidate_id, _ENROLLMENTS.c.state, ACTIVE_ENROLLMENT, _exited
)
_CANCEL_CANDIDATE_SENDS = _ends(
    "c_id", _SENDS, _SENDS.c.candidate_id, _SENDS.c.state, CLAIMABLE_STATES, _cancelled
)

_SUPPRESS_SQLITE = ExecuteMany(sqlite.insert(_SUPPRESSIONS).on_conflict_do_nothing(index_elements=["email_hash"]))
@functools.cache  # built on first use (batch_sql.pg_insert)
def _suppress_pg() -> ExecuteMany:
    return ExecuteMany(pg_insert(_SUPPRESSIONS).on_conflict_do_nothing(index_elements=["email_hash"]))

# pool.suppress: the exit reason of the enrollments a suppression ends.
SUPPRESSION_EXIT_REASON = {"bounced": "bounced", "complained": "unsubscribed"}


class Effects:
    """The effects of one batch of new, matched messages, applied in message order to a
    snapshot of the candidates' active enrollments and queued sends, written by `flush()`.

    The writes are ordered so that the result equals applying each message's statements one
    after the other: postponements first, then exits of single enrollments (replies), then
    exits of whole candidates (suppressions). A later message never sees what an earlier one
    ended or cancelled, because the snapshot is updated as each message is applied.
    """

    def __init__(self, session: Session, db, candidate_ids: Iterable[int], emails: Iterable[str],
                 stamp: datetime):
        self.session = session
        self.conn = session.connection()
        self.db = db
        self.stamp = stamp
        self.active: dict[int, list[_Enrollment]] = {}
        self.queued: dict[int, list[list]] = {}  # enrollment -> [[send id, due_at], ...]
        ids = sorted(set(candidate_ids))
        if ids:
            for row in _ACTIVE_OF.execute(self.conn, ids):
                self.active.setdefault(row.candidate_id, []).append(_Enrollment(*row))
            for send_id, enrollment_id, due_at in _QUEUED_OF.execute(self.conn, ids):
                self.queued.setdefault(enrollment_id, []).append([send_id, due_at])
        hashes = sorted({db.email_hash(e) for e in emails})
        self.suppressed: set[str] = set(_SUPPRESSED.execute(self.conn, hashes).scalars()) if hashes else set()
        self._pause: dict[int, datetime] = {}
        self._postpone: dict[int, datetime] = {}
        self._exit_enrollment: list[dict] = []
        self._exit_candidate: list[dict] = []
        self._suppress: list[dict] = []
        self.events: list[dict] = []

    def _started_before(self, candidate_id: int, received: datetime) -> list[_Enrollment]:
        at = naive_utc(received)
        return [e for e in self.active.get(candidate_id, ()) if e.enrolled_at <= at]

    def end_on_reply(
        self, candidate_id: int, exit_when: Mapping[str, frozenset[str]], default: frozenset[str],
        received: datetime,
    ) -> list[tuple[int, str]]:
        """Exit the candidate's active enrollments whose campaign exits on `replied` and that
        began before the reply arrived. Returns (enrollment id, campaign id) of those ended."""
        ended = []
        for e in self._started_before(candidate_id, received):
            if "replied" in exit_when.get(e.campaign_id, default):
                self.active[candidate_id].remove(e)
                self.queued.pop(e.id, None)
                self._exit_enrollment.append({"e_id": e.id, "why": "replied", "stamp": self.stamp})
                ended.append((e.id, e.campaign_id))
        return ended

    def postpone(
        self, candidate_id: int, resume_at: datetime, received: datetime
    ) -> list[tuple[int, str, list[int]]]:
        """Out of office: hold the candidate's active enrollments (that began before the note)
        until `resume_at`, stored in `paused_until` for the record, and move their queued
        sends that fall due before it. Claimed rows are in flight and left alone.
        Returns (enrollment, campaign, moved send ids)."""
        until = naive(resume_at)
        out = []
        for e in self._started_before(candidate_id, received):
            if e.paused_until is None or e.paused_until < until:
                e.paused_until = until
                self._pause[e.id] = until
            moved = []
            for send in self.queued.get(e.id, ()):
                if send[1] < until:
                    send[1] = until
                    self._postpone[send[0]] = until
                    moved.append(send[0])
            out.append((e.id, e.campaign_id, moved))
        return out

    def suppress(self, candidate_id: int, email: str, reason: str) -> bool:
        """pool.suppress for a candidate we matched: add the address to the suppression list
        (once), end all its enrollments and cancel its queued sends, and record a
        "suppressed" event. True if the address was not suppressed before."""
        key = self.db.email_hash(email)
        new = key not in self.suppressed
        if new:
            self.suppressed.add(key)
            self._suppress.append(
                {"email_hash": key, "email": email, "reason": reason, "created_at": self.stamp}
            )
        why = SUPPRESSION_EXIT_REASON.get(reason, reason)
        for e in self.active.pop(candidate_id, ()):
            self.queued.pop(e.id, None)
        self._exit_candidate.append({"c_id": candidate_id, "why": why, "stamp": self.stamp})
        self.events.append(event_row("suppressed", self.stamp, candidate_id=candidate_id,
                                     campaign_id=None, detail={"reason": reason}))
        return new

    def flush(self, extra_events: Sequence[dict] = ()) -> None:
        conn = self.conn
        if self._suppress:
            suppress = _suppress_pg() if conn.dialect.name == "postgresql" else _SUPPRESS_SQLITE
            suppress(conn, self._suppress)
        _PAUSE(conn, [{"e_id": k, "until": v} for k, v in self._pause.items()])
        _POSTPONE(conn, [{"s_id": k, "until": v, "stamp": self.stamp} for k, v in self._postpone.items()])
        _EXIT_ENROLLMENT(conn, self._exit_enrollment)
        _CANCEL_ENROLLMENT_SENDS(conn, self._exit_enrollment)
        # A candidate suppressed twice in a batch: the first ends everything, the next finds
        # nothing left to end; so only the first is written.
        first: dict[int, dict] = {}
        for row in self._exit_candidate:
            first.setdefault(row["c_id"], row)
        _EXIT_CANDIDATE(conn, list(first.values()))
        _CANCEL_CANDIDATE_SENDS(conn, list(first.values()))
        add_events(self.session, [*self.events, *extra_events])


_HELD = (
    select(_ENROLLMENTS.c.paused_until)
    .where(_ENROLLMENTS.c.id == _SENDS.c.enrollment_id)
    .scalar_subquery()
)


def hold_paused(session: Session, now: datetime) -> int:
    """Keep sends queued after an out-of-office arrived (the next step is often placed in the
    ledger only after the note came in) behind their enrollment's `paused_until`: one
    statement for all of them."""
    at = naive(now)
    paused = select(_ENROLLMENTS.c.id).where(
        _ENROLLMENTS.c.paused_until > at, _ENROLLMENTS.c.state == "active"
    )
    result = session.connection().execute(
        update(_SENDS)
        .where(
            and_(
                _SENDS.c.enrollment_id.in_(paused),
                _SENDS.c.state.in_(CLAIMABLE_STATES),
                _SENDS.c.due_at < _HELD,
            )
        )
        .values(due_at=_HELD, updated_at=at)
    )
    return result.rowcount


def event_row(
    kind: str, stamp: datetime, *, candidate_id: int | None, campaign_id: str | None, detail: dict
) -> dict:
    return {"at": stamp, "kind": kind, "candidate_id": candidate_id, "campaign_id": campaign_id,
            "detail": detail}


def add_events(session: Session, rows: Sequence[dict]) -> None:
    """Audit events (dicts of EVENT_COLUMNS), written as _bulk writes a batch."""
    if rows:
        conn = session.connection()
        for _result in _bulk(conn, "events").execute(conn, rows):
            pass


def candidate_email(session: Session, candidate_id: int) -> str | None:
    return session.execute(select(Candidate.email).where(Candidate.id == candidate_id)).scalar()
