"""Enrolment and the ledger rows that place each enrollment's next step.

Who joins a campaign (`enrol`, one INSERT ... SELECT), and which enrollments wait for their next
step to be put in the ledger (flag `needs_next`, read through its partial index). Two ways to
place steps, with the same rows as a result (`scheduling` uses both; tests/test_scheduling.py
holds them equal to the row-by-row definition):

* `place_first_steps`: enrollments with no ledger row yet and no pause get their first step
  set-at-a-time, one statement per span of enrollments. The due time depends only on the
  candidate's time zone and the anchor, so Python computes it once per (zone, anchor) group.
  SQLite: one INSERT ... SELECT joining the groups' due times from a temporary table; the
  Message-ID and the sticky variant come from Python functions registered on the connection
  for that statement. PostgreSQL (no Python inside): the span's rows are read, and their due
  times, Message-IDs and variants go back as arrays in one INSERT ... SELECT ... RETURNING that
  also clears `needs_next`, with the ledger ids reserved from the sequence (`reserve_send_ids`)
  so that spans placed at once still number their rows in enrollment order.
* `needing_next` + `add_sends`: any enrollment, in batches placed by Python.

Either way the ledger row and its Message-ID are created together, and `(enrollment, step)` is
unique, so a second daemon placing the same step inserts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..models import Candidate, Enrollment, Send
from .batch_sql import pg_array, pg_insert
from .ledger import _insert, aware, naive

_SENDS = Send.__table__
_ENROLLMENTS = Enrollment.__table__
_CANDIDATES = Candidate.__table__

# The partial index `ix_enrollments_needs_next` is only used when its predicate appears as
# written (`needs_next`): SQLite does not see `needs_next IS 1` or `= 1` as implying it, and
# then reads every enrollment of the campaign instead of the waiting ones.
_WAITING = literal_column("enrollments.needs_next")  # untyped: rendered as written
_HAS_ROW = exists().where(_SENDS.c.enrollment_id == _ENROLLMENTS.c.id)
# Enrollments with no ledger row at all: their next step is the campaign's first.
_NO_ROW = ~_HAS_ROW
_ANCHOR = func.coalesce(_ENROLLMENTS.c.last_sent_at, _ENROLLMENTS.c.enrolled_at)
# A missing and an empty time zone both mean the default zone: one group.
_ZONE_KEY = func.coalesce(_CANDIDATES.c.timezone, "")

# Columns of a new ledger row, in the order the INSERT ... SELECTs below give them.
_SEND_COLUMNS = (
    "enrollment_id", "campaign_id", "candidate_id", "step_id", "step_number", "variant", "state",
    "due_at", "message_id", "data_started", "attempts", "created_at", "updated_at",
)


def enrol(session: Session, campaign_id: str, audience_clause, stamp: datetime) -> int:
    """Enrol everyone newly matching the audience, in one INSERT ... SELECT inside the database."""
    already = exists().where(
        Enrollment.candidate_id == Candidate.id, Enrollment.campaign_id == campaign_id
    )
    source = select(
        Candidate.id,
        literal(campaign_id, String),
        literal("active", String),
        literal(stamp, DateTime),
        literal(True, Boolean),
    ).where(audience_clause, ~already)
    stmt = _insert(session, Enrollment.__table__).from_select(
        ["candidate_id", "campaign_id", "state", "enrolled_at", "needs_next"], source
    )
    # Counted before and after: rowcount of INSERT ... SELECT is not reliable on every driver,
    # and RETURNING would bring a million ids into memory for a big first enrolment.
    count = select(func.count()).select_from(Enrollment).where(Enrollment.campaign_id == campaign_id)
    before = session.execute(count).scalar_one()
    restore = None
    if session.get_bind().dialect.name == "postgresql":
        # With statistics that say enrollments (or suppressions) is small, PostgreSQL picks
        # a nested-loop anti-join that scans the table once per candidate, and the statement
        # scans the rows it has just inserted too: quadratic, 214 s for a first enrolment of
        # 200,000 after ANALYZE (2.8 s without). Anti-joins by hash read each table once.
        # For this statement only: the transaction's own setting comes back after it.
        restore = session.execute(text("SELECT current_setting('enable_nestloop')")).scalar_one()
        session.execute(text("SELECT set_config('enable_nestloop', 'off', true)"))
    session.execute(stmt.on_conflict_do_nothing())
    if restore is not None:
        session.execute(text("SELECT set_config('enable_nestloop', :was, true)"), {"was": restore})
    return session.execute(count).scalar_one() - before


# --- the first step, set-at-a-time --------------------------------------------------------------


def waiting_span(session: Session, campaign_id: str, after: int, limit: int) -> tuple[int, int]:
    """(the last id, how many) of the next `limit` waiting enrollments with ids above `after`;
    (after, 0) when there are none. One `place_first_steps` call covers such a span."""
    ids = (
        select(_ENROLLMENTS.c.id)
        .where(_ENROLLMENTS.c.campaign_id == campaign_id, _WAITING, _ENROLLMENTS.c.id > after)
        .order_by(_ENROLLMENTS.c.id)
        .limit(limit)
        .subquery()
    )
    last, count = session.execute(select(func.max(ids.c.id), func.count())).one()
    return (after, 0) if last is None else (last, count)


def _fresh_in(campaign_id: str, after: int, upto: int):
    """Waiting enrollments in (after, upto] whose next step is the first: no ledger row, no pause.
    (The first four terms: every waiting enrollment of the span.)"""
    return (
        _ENROLLMENTS.c.campaign_id == campaign_id,
        _WAITING,
        _ENROLLMENTS.c.id > after,
        _ENROLLMENTS.c.id <= upto,
        _ENROLLMENTS.c.state == "active",
        _ENROLLMENTS.c.paused_until.is_(None),
        _NO_ROW,
    )


@dataclass(frozen=True)
class FirstStep:
    """What `place_first_steps` writes for every fresh enrollment of a span."""

    campaign_id: str
    step_id: str
    step_number: int
    due: Callable[[str | None, datetime], datetime]  # (time zone as stored, naive anchor) -> naive due
    by_zone: bool  # whether the candidate's own zone matters (else `due` gets None for it)
    message_ids: Callable[[int], list[str]]  # n new Message-IDs
    variant: Callable[[str], str | None] | None  # address -> sticky variant; None: no variants
    stamp: datetime


def place_first_steps(
    session: Session, first: FirstStep, after: int, upto: int, most: int, send_ids: Sequence[int] = (),
) -> int:
    """A ledger row for the first step of every fresh enrollment in (after, upto] (at most
    `most` of them), in enrollment order, and `needs_next` cleared for exactly those.
    Enrollments in the span that are not fresh stay waiting, for `needing_next`.
    PostgreSQL: `send_ids` (from `reserve_send_ids`, ascending), when there are enough of them,
    are the new rows' ids, given in enrollment order; else ids are reserved for the rows then.
    Returns the number of rows placed."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return _place_postgresql(conn, first, after, upto, send_ids)
    before = conn.execute(select(func.coalesce(func.max(_SENDS.c.id), 0))).scalar_one()
    placed = _place_sqlite(conn, first, after, upto, most)
    if not placed:
        return 0
    span = (
        _ENROLLMENTS.c.campaign_id == first.campaign_id,
        _WAITING,
        _ENROLLMENTS.c.id > after,
        _ENROLLMENTS.c.id <= upto,
    )
    if placed < most:  # some in the span were not fresh: exactly those with a new row
        # The rows just made are those with a ledger id above `before`: nobody else writes
        # inside our transaction.
        span += (_ENROLLMENTS.c.id.in_(select(_SENDS.c.enrollment_id).where(_SENDS.c.id > before)),)
    return conn.execute(update(_ENROLLMENTS).where(*span).values(needs_next=False)).rowcount


def _first_row(first: FirstStep, variant, due_at, message_id):
    """The SELECT list of a first-step row, in `_SEND_COLUMNS` order."""
    return (
        _ENROLLMENTS.c.id,
        literal(first.campaign_id, String),
        _ENROLLMENTS.c.candidate_id,
        literal(first.step_id, String),
        literal(first.step_number, Integer),
        variant,
        literal("scheduled", String),
        due_at,
        message_id,
        false(),
        literal(0, Integer),
        literal(first.stamp, DateTime),
        literal(first.stamp, DateTime),
    )


# SQLite: the due time of each (zone, anchor) group of a span, joined in by its primary key.
_FIRST_DUE = Table(
    "nurture_first_due",
    MetaData(),
    Column("zone", String, primary_key=True),
    Column("anchor", String, primary_key=True),  # as stored (text), so it joins exactly
    Column("due_at", String, nullable=False),  # as the DateTime type stores it
    schema="temp",
)
_CREATE_FIRST_DUE = (
    "CREATE TEMP TABLE IF NOT EXISTS nurture_first_due "
    "(zone TEXT NOT NULL, anchor TEXT NOT NULL, due_at TEXT NOT NULL, PRIMARY KEY (zone, anchor))"
)


def _place_sqlite(conn, first: FirstStep, after: int, upto: int, most: int) -> int:
    """One INSERT ... SELECT. The due time comes from a temporary table of the span's groups;
    the Message-ID and the variant (the per-row parts computed in Python) from functions
    registered on the connection for the statement. Returns the number of rows inserted."""
    fresh = _fresh_in(first.campaign_id, after, upto)
    # The candidate row is read only for what needs it: the zone, the address for a variant.
    source = _ENROLLMENTS
    if first.by_zone or first.variant is not None:
        source = source.join(_CANDIDATES, _CANDIDATES.c.id == _ENROLLMENTS.c.candidate_id)
    zone = _ZONE_KEY if first.by_zone else literal("", String)
    anchor = type_coerce(_ANCHOR, String)  # the stored text, not parsed
    if conn.execute(select(exists().where(*fresh))).scalar() is not True:
        return 0
    # Groups of every waiting enrollment of the span: a superset of the fresh ones' is as good,
    # and cheaper to find (no look into the ledger per row).
    groups = conn.execute(select(zone, anchor).select_from(source).where(*fresh[:4]).distinct()).all()
    stored = DateTime().dialect_impl(conn.dialect)  # SQLite keeps datetimes as text
    parse, write = stored.result_processor(conn.dialect, None), stored.bind_processor(conn.dialect)
    conn.exec_driver_sql(_CREATE_FIRST_DUE)
    conn.execute(delete(_FIRST_DUE))
    conn.execute(
        insert(_FIRST_DUE),
        [{"zone": z, "anchor": a, "due_at": write(first.due(z or None, parse(a)))} for z, a in groups],
    )
    # Handed out in enrollment order, sorted: the unique index on message_id is then written
    # front to back instead of at random pages (half the time of a million-row first step),
    # and after every earlier span's entries (`messages.time_prefix`).
    pool = sorted(first.message_ids(most))
    dbapi = conn.connection.dbapi_connection
    dbapi.create_function("nurture_message_id", 0, iter(pool).__next__)
    variant = literal(None, String)
    if first.variant is not None:
        dbapi.create_function("nurture_variant", 1, first.variant, deterministic=True)
        variant = func.nurture_variant(_CANDIDATES.c.email)
    pick = (
        select(*_first_row(first, variant, _FIRST_DUE.c.due_at, func.nurture_message_id()))
        # LEFT JOIN: SQLite then reads the enrollments first, in order, and looks each group up
        # (an inner join may scan the tiny table first and the span once per group). Every
        # group is there: read above in the same transaction.
        .select_from(source.outerjoin(_FIRST_DUE, (_FIRST_DUE.c.zone == zone) & (_FIRST_DUE.c.anchor == anchor)))
        .where(*fresh)
        # Enrollment order, as `needing_next` reads them: the ledger id breaks ties between
        # rows due at the same moment when a daily cap holds some back (the forecast follows).
        .order_by(_ENROLLMENTS.c.id)
    )
    try:
        return conn.execute(sqlite_insert(_SENDS).from_select(_SEND_COLUMNS, pick).on_conflict_do_nothing()).rowcount
    finally:
        dbapi.create_function("nurture_message_id", 0, None)
        dbapi.create_function("nurture_variant", 1, None)


def reserve_send_ids(session, count: int) -> list[int]:
    """PostgreSQL: `count` ids taken from the ledger's sequence now, ascending, for the rows
    that `place_first_steps` will insert (a Session or a Connection). Spans placed at once (`scheduling`) still give
    ledger ids in enrollment order, which is the order claims take rows due at the same time
    in (the daily cap's tie-break). Ids left unused are gaps, as rolled-back inserts leave."""
    if count <= 0:
        return []
    return list(session.execute(_RESERVE, {"n": count}).scalars())


_RESERVE = text("SELECT nextval(pg_get_serial_sequence('sends', 'id')) FROM generate_series(1, :n)")


def _place_postgresql(conn, first: FirstStep, after: int, upto: int, send_ids: Sequence[int] = ()) -> int:
    """The fresh rows are read, their due times, variants and Message-IDs made in Python (one
    due time per group), and written back as arrays joined to the enrollments; the enrollments
    whose row was inserted (RETURNING, not another daemon's) stop waiting in the same statement."""
    rows = conn.execute(
        select(_ENROLLMENTS.c.id, _CANDIDATES.c.email, _ZONE_KEY, _ANCHOR)
        .select_from(_ENROLLMENTS.join(_CANDIDATES, _CANDIDATES.c.id == _ENROLLMENTS.c.candidate_id))
        .where(*_fresh_in(first.campaign_id, after, upto))
        .order_by(_ENROLLMENTS.c.id)
    ).all()
    if not rows:
        return 0
    # The reserved ids, when they cover the rows read; else (none given, or an enrollment
    # committed into the span after it was counted) ids taken from the sequence now.
    ids = list(send_ids[: len(rows)]) if len(send_ids) >= len(rows) else reserve_send_ids(conn, len(rows))
    made = func.unnest(
        cast(bindparam("p_ids"), pg_array(Integer)),
        cast(bindparam("p_due"), pg_array(DateTime)),
        cast(bindparam("p_message_ids"), pg_array(String)),
        cast(bindparam("p_variants"), pg_array(String)),
        cast(bindparam("p_send_ids"), pg_array(Integer)),
    ).table_valued("enrollment_id", "due_at", "message_id", "variant", "send_id").render_derived(name="made")
    pick = (
        select(made.c.send_id, *_first_row(first, made.c.variant, made.c.due_at, made.c.message_id))
        .select_from(made.join(_ENROLLMENTS, _ENROLLMENTS.c.id == made.c.enrollment_id))
        .where(*_fresh_in(first.campaign_id, after, upto))
        .order_by(_ENROLLMENTS.c.id)
    )
    placed = (
        pg_insert(_SENDS).from_select(("id", *_SEND_COLUMNS), pick).on_conflict_do_nothing()
        .returning(_SENDS.c.enrollment_id).cte("placed")
    )
    return conn.execute(
        update(_ENROLLMENTS).where(_ENROLLMENTS.c.id == placed.c.enrollment_id).values(needs_next=False),
        {
            "p_ids": [r[0] for r in rows],
            "p_due": [first.due(r[2] or None, r[3]) for r in rows],
            "p_message_ids": sorted(first.message_ids(len(rows))),  # index locality, as on SQLite
            "p_variants": [first.variant(r[1]) for r in rows] if first.variant else [None] * len(rows),
            "p_send_ids": ids,
        },
    ).rowcount


# --- any next step, row by row ------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """An enrollment whose next step must be placed in the ledger."""

    enrollment_id: int
    candidate_id: int
    email: str
    timezone: str | None
    anchor: datetime  # aware UTC: enrolment time, or the previous step's send
    done: frozenset[str]
    paused_until: datetime | None = None  # an out-of-office: not before this


_NEEDING_NEXT = (
    select(
        _ENROLLMENTS.c.id,
        _ENROLLMENTS.c.candidate_id,
        _CANDIDATES.c.email,
        _CANDIDATES.c.timezone,
        _ANCHOR,
        _ENROLLMENTS.c.paused_until,
        _HAS_ROW,
    )
    .select_from(_ENROLLMENTS.join(_CANDIDATES, _CANDIDATES.c.id == _ENROLLMENTS.c.candidate_id))
    .where(
        _ENROLLMENTS.c.campaign_id == bindparam("campaign"),
        _WAITING,
        _ENROLLMENTS.c.state == "active",
    )
    # No ORDER BY: any batch will do, and reading the partial index as it lies avoids
    # sorting every waiting enrollment once per batch (quadratic over a million).
    .limit(bindparam("limit"))
)
_DONE = select(_SENDS.c.enrollment_id, _SENDS.c.step_id).where(
    _SENDS.c.enrollment_id.in_(bindparam("ids", expanding=True))
)


def needing_next(session: Session, campaign_id: str, limit: int) -> list[Pending]:
    """Up to `limit` enrollments waiting for their next step, with the steps they have rows for."""
    conn = session.connection()
    rows = conn.execute(_NEEDING_NEXT, {"campaign": campaign_id, "limit": limit}).all()
    if not rows:
        return []
    done: dict[int, set[str]] = {r[0]: set() for r in rows}
    with_rows = [r[0] for r in rows if r[6]]
    for start in range(0, len(with_rows), 5000):  # well under every driver's parameter limit
        for eid, step_id in conn.execute(_DONE, {"ids": with_rows[start : start + 5000]}):
            done[eid].add(step_id)
    return [
        Pending(r[0], r[1], r[2], r[3], aware(r[4]), frozenset(done[r[0]]), aware(r[5])) for r in rows
    ]


def add_sends(session: Session, rows: list[dict], completed: Iterable[int], stamp: datetime) -> None:
    """Insert next-step rows (ignoring any another daemon already made) and close enrollments
    that have no step left."""
    conn = session.connection()
    if rows:
        conn.execute(_insert(session, _SENDS).on_conflict_do_nothing(), rows)
        _clear_waiting(conn, [r["enrollment_id"] for r in rows])
    done = list(completed)
    for start in range(0, len(done), 5000):
        conn.execute(
            update(_ENROLLMENTS)
            .where(_ENROLLMENTS.c.id.in_(done[start : start + 5000]), _ENROLLMENTS.c.state == "active")
            .values(state="completed", needs_next=False, exit_reason="completed", exited_at=stamp)
        )


def _clear_waiting(conn, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 5000):
        conn.execute(
            update(_ENROLLMENTS).where(_ENROLLMENTS.c.id.in_(ids[start : start + 5000])).values(needs_next=False)
        )


def new_send_row(
    *,
    enrollment_id: int,
    campaign_id: str,
    candidate_id: int,
    step_id: str,
    step_number: int,
    variant: str | None,
    due_at: datetime,
    message_id: str,
    stamp: datetime,
) -> dict:
    return {
        "enrollment_id": enrollment_id,
        "campaign_id": campaign_id,
        "candidate_id": candidate_id,
        "step_id": step_id,
        "step_number": step_number,
        "variant": variant,
        "state": "scheduled",
        "due_at": naive(due_at),
        "message_id": message_id,
        "data_started": False,
        "attempts": 0,
        "created_at": stamp,
        "updated_at": stamp,
    }
