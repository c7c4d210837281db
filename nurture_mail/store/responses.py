"""What came back about the sends a report counts: replies, auto-replies and bounces per
(campaign, step, variant), time to the first reply as an hourly histogram, first replies per
week, and the exact delays of the few hours that `reply_times.py` asks for.

* Inbound mail counts only when it was matched to one of the counted sends (`send_id`, state
  `sent`); mail that matched nothing, or a send whose fate is `unknown`, is not in the rates.
* A send counts once per kind: replied (its first reply gives the time to reply), auto-replied,
  and bounced - a bounce and no reply, since a reply proves delivery; hard when one of its
  bounces is hard (a bounce of no known type is soft).

Inbound rows are read one kind at a time. SQLite reads them from `ix_inbound_report` alone,
in send order, and looks their sends up by primary key; PostgreSQL takes each send's group and
sent_at from the copies its messages carry (models.Inbound; the table in one parallel pass)
and looks up only the sends that were not yet accepted when their messages came. Groups are
found by number. Each counted row becomes one integer key per thing it counts - (group,
kind, hour of delay), and for a first reply also (week) - and the keys are counted:
PostgreSQL hashes them; SQLite, whose GROUP BY would sort every key through a temporary
b-tree, upserts them into a small temporary table keyed by them.
The counted rows are made once into a temporary table (the costly part), read by the tally and
then for the exact delays of the few hours of delay that the percentiles need: on PostgreSQL
every kind, in one pass over the inbound rows; on SQLite only the replies, each kind's
sends looked up as its rows come, the auto-replies and bounces counted as they are looked up.
A report writes nothing but temporary tables.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    cast,
    column,
    exists,
    extract,
    func,
    literal,
    null,
    select,
    true,
    union_all,
    values,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Join

from ..models import Inbound, Send
from .ledger import naive
from .reports import send_filters, week_of, week_of_julian

# (campaign, step, variant): the finest group of a report. A tally numbers them by position.
GroupKey = tuple[str, str, str | None]


class Kind(IntEnum):
    REPLIED = 0  # the send has a reply; counted per hour of delay to the first one
    AUTO_REPLIED = 1  # an auto-reply came back (whether or not a person replied too)
    BOUNCED_SOFT = 2  # bounced, no reply, no hard bounce among its bounces
    BOUNCED_HARD = 3  # bounced, no reply, at least one hard bounce
    REPLY_WEEK = 4  # a first reply, counted per week it came (the weekly series)


@dataclass
class Tally:
    """Counts per group, by its position in the groups the tally was asked for."""

    kinds: dict[int, dict[Kind, int]] = field(default_factory=dict)
    hours: dict[int, dict[int, int]] = field(default_factory=dict)  # hour of delay -> replies
    weekly: dict[int, int] = field(default_factory=dict)  # week (see reports.monday) -> first replies


# A key packs (group, kind) and a value that may be negative (a reply stamped before its send)
# into one 64-bit integer: ((group * 8 + kind) << 32) + (value + 2**31).
_LOW = 1 << 32
_BIAS = 1 << 31


def _key(group: int, kind: Kind, value: int) -> int:
    return ((group * 8 + kind) << 32) + value + _BIAS


def _unkey(key: int) -> tuple[int, Kind, int]:
    high, low = divmod(key, _LOW)
    group, kind = divmod(high, 8)
    return group, Kind(kind), low - _BIAS


def _sql_key(group, kind, value):
    return (group * 8 + kind) * literal(_LOW, BigInteger) + value + literal(_BIAS, BigInteger)


# --- one row per counted send and kind ----------------------------------------------------------


# PostgreSQL: the copies of the send a message carries (models.Inbound), the same on each of
# its rows; sent_at only on the rows matched once the send was accepted. Compared bytewise
# (COLLATE "C"): any one value will do, and a locale's collation costs 40% of the max().
_COPIES = (
    func.max(Inbound.send_sent_at).label("sent_at"),
    func.max(Inbound.campaign_id.collate("C")).label("campaign"),
    func.max(Inbound.step_id.collate("C")).label("step"),
    func.max(Inbound.variant.collate("C")).label("variant"),
)
_ACCEPTED = func.max(Inbound.send_sent_at).is_not(None)  # one of its rows carries the copies


def _per_send(dialect: str) -> tuple:
    """What came back about each send: one select per kind - replies, auto-replies, bounces -
    each with one row per send, (send_id, kind, first, and on PostgreSQL the copies: sent_at,
    campaign, step, variant); `first` is the first reply (SQLite: as a julian day number, the
    least of the numbers: a min of the timestamps would copy each one's text), NULL for the
    other kinds."""
    matched = Inbound.send_id.is_not(None)
    if dialect == "sqlite":
        first = func.min(func.julianday(Inbound.received_at))
        copies = ()  # not read (`CameBack._counted_sends`), and SQLite would make them anyway
    else:
        first = func.min(Inbound.received_at)
        copies = _COPIES
    replies = (
        select(Inbound.send_id, literal(int(Kind.REPLIED)).label("kind"), first.label("first"), *copies)
        .where(matched, Inbound.kind == "reply")
        .group_by(Inbound.send_id)
    )
    auto = (
        select(Inbound.send_id, literal(int(Kind.AUTO_REPLIED)).label("kind"), null().label("first"), *copies)
        .where(matched, Inbound.kind == "auto_reply")
        .group_by(Inbound.send_id)
    )
    other = Inbound.__table__.alias("other")
    answered = exists().where(other.c.send_id == Inbound.send_id, other.c.kind == "reply")
    hard = func.max(case((Inbound.bounce == "hard", 1), else_=0))
    bounced = (
        select(Inbound.send_id, (int(Kind.BOUNCED_SOFT) + hard).label("kind"), null().label("first"), *copies)
        .where(matched, Inbound.kind == "bounce", ~answered)
        .group_by(Inbound.send_id)
    )
    return replies, auto, bounced


def _accepted(per_send):
    """The sends of a `_per_send` select that a message was matched to once accepted: counted
    from the copies."""
    return per_send.having(_ACCEPTED)


def _unaccepted(per_send):
    """The others (normally none: a reply that came while its send was still on the wire): their
    sends are read from the ledger. Only sends in `ix_inbound_unaccepted` are grouped."""
    waiting = select(Inbound.send_id).where(Inbound.send_id.is_not(None), Inbound.send_sent_at.is_(None))
    return per_send.where(Inbound.send_id.in_(waiting)).having(~_ACCEPTED)


class _LeftFirst(Join):
    """An inner join whose left side is read first, row by row: SQLite spells it CROSS JOIN
    (its way to fix the join order), and reads a grouped subquery on the left as it is made
    instead of storing it whole first; other databases get a plain JOIN."""

    inherit_cache = True


@compiles(_LeftFirst, "sqlite")
def _cross_join(join: _LeftFirst, compiler, **kw) -> str:
    kw.pop("asfrom", None)
    left = compiler.process(join.left, asfrom=True, **kw)
    right = compiler.process(join.right, asfrom=True, **kw)
    return f"{left} CROSS JOIN {right} ON {compiler.process(join.onclause, **kw)}"


_GROUPS = Table(
    "report_groups", MetaData(),
    Column("g", Integer, primary_key=True),
    Column("campaign", String, nullable=False),
    Column("step", String, nullable=False),
    Column("variant", String),
    UniqueConstraint("campaign", "step", "variant"),  # each send finds its number by this index
    prefixes=["TEMPORARY"],
)

_COUNTED = Table(
    "report_counted", MetaData(),
    Column("k", BigInteger, nullable=False),  # the tally's key: (group, kind, hour of delay or 0)
    Column("seconds", Float),
    Column("week", Integer),
    prefixes=["TEMPORARY"],
)

_TALLY = Table(
    "report_tally", MetaData(),
    Column("k", Integer, primary_key=True),  # INTEGER PRIMARY KEY: the rowid itself
    Column("n", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)


@contextmanager
def _temporary(connection, table: Table, filled_by=None):
    """A temporary table for the duration of a block (the report's transaction would drop it
    anyway; a pooled connection must not keep it), filled by a SELECT if given.

    PostgreSQL fills it as CREATE TABLE ... AS, which may run in parallel; INSERT ... SELECT may
    not, and the join behind the counted rows is most of a report."""
    postgresql = connection.dialect.name == "postgresql"
    name = ("pg_temp." if postgresql else "temp.") + table.name
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    if postgresql and filled_by is not None:
        select_sql = filled_by.compile(dialect=connection.dialect)
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {table.name} AS {select_sql}", select_sql.params)
    else:
        table.create(connection)
        if filled_by is not None:
            connection.execute(table.insert().from_select([c.name for c in table.c], filled_by))
    try:
        yield table
    finally:
        connection.exec_driver_sql(f"DROP TABLE {name}")


class CameBack:
    """What came back about the counted sends of one report, as a context:

        with CameBack(session, groups, since=..., campaign=...) as came_back:
            tally = came_back.tally()
            exact = came_back.delays(wanted)

    `groups` must hold the group of every counted send (see `reports.state_counts`); the
    tally numbers them by position. The counted rows (on SQLite, the replies only) are kept
    in a temporary table meanwhile, and on SQLite the numbered groups too (PostgreSQL: a
    VALUES list): the rows are made once (the costly part: every inbound row, every send it
    matched, on SQLite) and read by both questions.
    """

    def __init__(self, session: Session, groups: Sequence[GroupKey], *, since=None, campaign=None):
        self.connection = session.connection()
        self.dialect = self.connection.dialect.name
        self.groups = list(groups)
        self.since = since
        self.campaign = campaign
        self._stack = ExitStack()
        self._numbered = None
        self._counted = None

    def __enter__(self) -> CameBack:
        if not self.groups:
            return self
        if self.dialect == "postgresql":
            # A VALUES list, not a temporary table: parallel workers cannot read a session's
            # temporary tables, and the counting query is parallel only without one.
            columns = (column("g", Integer), column("campaign", String), column("step", String),
                       column("variant", String))
            self._numbered = values(*columns, name="report_groups").data(
                [(g, *group) for g, group in enumerate(self.groups)])
        else:
            rows = [{"g": g, "campaign": c, "step": s, "variant": v} for g, (c, s, v) in enumerate(self.groups)]
            self._numbered = self._stack.enter_context(_temporary(self.connection, _GROUPS))
            self.connection.execute(_GROUPS.insert(), rows)
        self._counted = self._stack.enter_context(
            _temporary(self.connection, _COUNTED, filled_by=self._counting()))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _counting(self):
        """The rows kept for the tally and the delays: (k, seconds, week) per counted send and
        kind (see `_keyed`). PostgreSQL keeps every kind, from the copies the inbound rows
        carry (one pass over them, in parallel; see `_counted_sends`); SQLite keeps the
        replies only, their sends looked up by key as they come, and counts the other kinds
        as it looks up theirs (`_uncounted`)."""
        replies, auto, bounces = _per_send(self.dialect)
        kinds = [replies] if self.dialect == "sqlite" else [replies, auto, bounces]
        return self._keyed(kinds)

    def _uncounted(self) -> list:
        """The keys of the kinds that `_counting` did not keep (SQLite: all but the replies);
        their hour of delay is 0, as for every kind but the replies."""
        if self.dialect != "sqlite":
            return []
        _replies, auto, bounces = _per_send(self.dialect)
        return [counted for kind in (auto, bounces) for counted in self._counted_sends(
            [kind], lambda per_send, sent_at: (_sql_key(self._numbered.c.g, per_send.c.kind, 0),))]

    def _keyed(self, kinds):
        """(k, seconds, week) for each counted send of the `_per_send` selects `kinds`: k is
        the tally's key (group, kind, hour of delay; made once, for the tally and the delays
        both), seconds the delay to the first reply (NULL for a send without a time) and week
        the week of the first reply, both NULL for the other kinds."""

        def columns(per_send, sent_at):
            first = per_send.c.first
            if self.dialect == "sqlite":
                seconds = (first - func.julianday(sent_at)) * 86400.0
                week = week_of_julian(first)
            else:
                seconds = cast(extract("epoch", first - sent_at), Float)
                week = week_of(self.dialect, first)
            key = _sql_key(self._numbered.c.g, per_send.c.kind, func.coalesce(self._hour(seconds), 0))
            return key.label("k"), seconds.label("seconds"), week.label("week")

        selects = self._counted_sends(kinds, columns)
        return selects[0] if len(selects) == 1 else union_all(*selects)

    def _counted_sends(self, kinds, columns) -> list:
        """`columns(per_send, sent_at)` for each counted send of the `_per_send` selects
        `kinds`, its group found by number. PostgreSQL: from the copies its messages carry,
        or, for a send that was not yet accepted when they came, from the send itself (two
        selects, each over one union of the kinds); hashing the ledger to join it was most of
        a report. SQLite: every send looked up by rowid as the rows come (one select), which
        costs it no more than the copies' max() (0.12 s against 0.20 s for 100,000 replies)."""

        def per_send(selects, name):
            return (selects[0] if len(selects) == 1 else union_all(*selects)).subquery(name)

        if self.dialect == "sqlite":
            return [self._from_sends(per_send(kinds, "per_send"), columns)]
        copied, numbered = per_send([_accepted(kind) for kind in kinds], "copied"), self._numbered
        same_group = and_(numbered.c.campaign == copied.c.campaign, numbered.c.step == copied.c.step,
                          numbered.c.variant.is_not_distinct_from(copied.c.variant))
        filters = []
        if self.campaign is not None:
            filters.append(copied.c.campaign == self.campaign)
        if self.since is not None:
            filters.append(copied.c.sent_at >= naive(self.since))
        from_copies = (select(*columns(copied, copied.c.sent_at))
                       .select_from(copied.join(numbered, same_group)).where(*filters))
        looked_up = per_send([_unaccepted(kind) for kind in kinds], "looked_up")
        return [from_copies, self._from_sends(looked_up, columns)]

    def _from_sends(self, per_send, columns):
        """`columns` for the sends of `per_send` (a subquery of `_per_send` rows) that count,
        each looked up by key (on SQLite as the rows come), its group by number."""
        sends, numbered = Send.__table__, self._numbered
        same_group = and_(numbered.c.campaign == sends.c.campaign_id, numbered.c.step == sends.c.step_id,
                          numbered.c.variant.is_not_distinct_from(sends.c.variant))
        lookup = _LeftFirst(per_send, sends, sends.c.id == per_send.c.send_id).join(numbered, same_group)
        return (select(*columns(per_send, sends.c.sent_at)).select_from(lookup)
                .where(sends.c.state == "sent", *send_filters(self.since, self.campaign)))

    def _hour(self, seconds):
        """The hour of delay a reply is counted in: any bucket that keeps the order will do."""
        if self.dialect == "sqlite":
            return cast(seconds / 3600, Integer)  # truncated towards 0
        return cast(func.floor(seconds / 3600), BigInteger)

    def tally(self) -> Tally:
        """Replies, auto-replies and bounces per group, replies per hour of delay, and first
        replies per week."""
        out = Tally()
        counted = self._counted
        if counted is None:
            return out
        # A key per counted send and kind, and per first reply a second one, for its week.
        keys = union_all(
            select(counted.c.k),
            select(_sql_key(0, int(Kind.REPLY_WEEK), counted.c.week)).where(counted.c.week.is_not(None)),
            *self._uncounted(),
        ).subquery("keys")
        if self.dialect == "sqlite":
            rows = self._count_in_table(keys)
        else:
            rows = self.connection.execute(select(keys.c.k, func.count()).group_by(keys.c.k)).all()
        for k, n in rows:
            g, kind, value = _unkey(int(k))
            if kind is Kind.REPLY_WEEK:
                out.weekly[value] = int(n)
                continue
            counts = out.kinds.setdefault(g, {})
            counts[kind] = counts.get(kind, 0) + int(n)  # a reply's key is per hour: add them up
            if kind is Kind.REPLIED:
                out.hours.setdefault(g, {})[value] = int(n)
        return out

    def _count_in_table(self, keys) -> list[tuple[int, int]]:
        """SQLite: count the keys by upserting them into a temporary table keyed by them - a
        lookup in a b-tree of a few hundred rows per key, where GROUP BY would sort them all."""
        with _temporary(self.connection, _TALLY):
            upsert = sqlite_insert(_TALLY).from_select(
                ["k", "n"], select(keys.c.k, literal(1)).where(true()))  # WHERE: not read as ON CONFLICT's ON
            self.connection.execute(upsert.on_conflict_do_update(index_elements=[_TALLY.c.k],
                                                                 set_={"n": _TALLY.c.n + 1}))
            return [(k, n) for k, n in self.connection.execute(select(_TALLY.c.k, _TALLY.c.n))]

    def delays(self, wanted: Collection[tuple[int, int]]) -> dict[tuple[int, int], list[float]]:
        """(group, hour) -> the exact delays, in seconds, of the first replies in that hour."""
        wanted = set(wanted)
        out: dict[tuple[int, int], list[float]] = {}
        counted = self._counted
        if not wanted or counted is None:
            return out
        # Asked for by key, so that an hour wanted by one group is not read for all the others.
        # A reply to a send without a time is tallied in hour 0 but has no delay: not read.
        keys = {_key(g, Kind.REPLIED, hour): (g, hour) for g, hour in wanted}
        query = select(counted.c.k, counted.c.seconds).where(
            counted.c.k.in_(sorted(keys)), counted.c.seconds.is_not(None))
        for k, seconds in self.connection.execute(query).all():
            out.setdefault(keys[k], []).append(float(seconds))
        return out
