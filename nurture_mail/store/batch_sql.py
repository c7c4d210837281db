"""Statements that read or write a whole batch of rows at once, sent through the driver.

SQLAlchemy Core pays, per row of an executemany or a multi-row insert, for building parameter
dicts and running bind processors through its generic machinery: more than SQLite itself
spends on the row. psycopg parses and caches only statements under 4 kB with at most 50
parameters, so a multi-row INSERT or an IN list of a few hundred values is parsed again on
every execution, and it writes an array parameter in text, quoting each element in Python.
So, for the reply sync's batches (store/inbound.py):

* `ValuesInsert` (SQLite): INSERT ... VALUES (...), (...), rendered once per row count;
* `UnnestInsert` (PostgreSQL): INSERT ... SELECT FROM unnest(one array per column): one
  statement per batch whose text never changes, the arrays in binary (`Binary`);
* `OneOf`: a SELECT testing a column against a list bound as ONE parameter (= ANY(array) on
  PostgreSQL, IN json_each(...) on SQLite), so its text never changes either;
* `ExecuteMany`: a statement run once per row, on SQLite through the driver's executemany;
  with an `UnnestUpdate` beside it, on PostgreSQL as one UPDATE ... FROM unnest(arrays).

Every statement is rendered by SQLAlchemy from Core (with the dialect's casts), and every value
goes through its column's or bind's own processor: the rows stored are those Core stores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import any_, bindparam, func, literal_column, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import ARRAY, String, Text


def pg_array(item_type) -> ARRAY:
    """PostgreSQL's ARRAY of `item_type`. Its dialect is imported here, on first use: importing
    it costs every process ~150 million instructions (a tenth of the daemon's imports), for
    nothing on SQLite; so every PostgreSQL-only statement below is built when first run."""
    from sqlalchemy.dialects.postgresql import ARRAY as PgArray

    return PgArray(item_type)


def pg_insert(table):
    """PostgreSQL's INSERT (ON CONFLICT), its dialect imported on first use (`pg_array`)."""
    from sqlalchemy.dialects.postgresql import insert

    return insert(table)


def dialect_insert(dialect_name: str, table):
    """The dialect's INSERT, the one with ON CONFLICT (PostgreSQL's imported only there)."""
    return pg_insert(table) if dialect_name == "postgresql" else sqlite.insert(table)


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class OneOf:
    """A SELECT that tests a column against a list bound as one parameter, built once per
    dialect: `column = ANY(:list)` (an array, sent in binary) on PostgreSQL, `column IN
    (SELECT value FROM json_each(:list))` (a JSON array) on SQLite. The text does not change
    with the list's length, so it is compiled once, and psycopg, which parses and caches only
    short statements with few parameters, does not re-parse hundreds of placeholders a batch."""

    def __init__(self, name: str, item_type, build: Callable):
        self.name, self.item_type, self.build = name, item_type, build
        self.postgresql: Binary | None = None  # built on first use (`pg_array`)
        values = select(literal_column("value")).select_from(func.json_each(bindparam(name)))
        self.sqlite = build(lambda column: column.in_(values))
        self._sqlite_text: str | None = None

    def execute(self, conn, values: Iterable, **params):
        values = list(values)
        if conn.dialect.name == "postgresql":
            if self.postgresql is None:
                array = bindparam(self.name, type_=pg_array(self.item_type))
                self.postgresql = Binary(self.build(lambda column: column == any_(array)))
            return self.postgresql.execute(conn, {self.name: values, **params})
        return conn.execute(self.sqlite, {self.name: json.dumps(values), **params})

    def execute_raw(self, conn, values: Iterable):
        """`execute` with no other parameter, whose rows come as the driver gives them, without
        SQLAlchemy's result processing: on SQLite a DateTime is then the stored text and a JSON
        column its text (PostgreSQL's rows come from the driver either way: `Binary`)."""
        if conn.dialect.name == "postgresql":
            return self.execute(conn, values)
        if self._sqlite_text is None:
            compiled = self.sqlite.compile(dialect=conn.dialect)
            if list(compiled.positiontup or ()) != [self.name]:
                raise RuntimeError(f"execute_raw takes the list alone, not {compiled.positiontup}")
            self._sqlite_text = compiled.string
        return conn.exec_driver_sql(self._sqlite_text, (json.dumps(list(values)),))


class Binary:
    """A statement run on PostgreSQL through the driver with its array parameters in binary
    (`%(name)b`): psycopg writes a binary array of 500 strings in a twentieth of the time of
    the text form, which quotes and escapes each element in Python. Rendered once by the
    dialect (with its casts); values pass through the binds' own processors."""

    def __init__(self, stmt):
        self.stmt = stmt
        self._compiled: dict[tuple[str, str], tuple] = {}

    def _compile(self, dialect) -> tuple:
        compiled = self.stmt.compile(dialect=dialect)
        text = compiled.string
        binds = []
        for name, bind in compiled.binds.items():
            if isinstance(bind.type, ARRAY):  # PostgreSQL's ARRAY is one of these
                text = text.replace(f"%({name})s", f"%({name})b")
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, bind.key, bind.required, None if bind.required else bind.effective_value, proc))
        return text, binds

    def execute(self, conn, params: Mapping):
        dialect = conn.dialect
        key = (dialect.name, dialect.driver)
        plan = self._compiled.get(key)
        if plan is None:
            plan = self._compiled[key] = self._compile(dialect)
        text, binds = plan
        values = {}
        for name, key, required, literal, proc in binds:
            value = params[key] if required or key in params else literal
            values[name] = proc(value) if proc is not None else value
        return conn.exec_driver_sql(text, values)


ROWS_PER_STATEMENT = 250  # SQLite: rows in one multi-row INSERT (16 columns x 250 parameters)


class ValuesInsert:
    """INSERT ... VALUES (...), (...), ... for the driver, as Core renders one row of it."""

    def __init__(self, conn, stmt, columns: Sequence[str]):
        dialect = conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
        if not dialect.positional:
            raise RuntimeError(f"{dialect.name}: multi-row VALUES needs positional parameters")
        head, _, rest = compiled.string.partition(" VALUES ")
        end = _closing(rest)
        self.prefix, self.group, self.suffix = head + " VALUES ", rest[: end + 1], rest[end + 1 :]
        order = list(compiled.positiontup)
        if sorted(order) != sorted(columns):
            raise RuntimeError(f"unexpected parameters rendering {stmt}: {order}")
        self.columns = tuple(order)
        self.processors = tuple(
            (i, quick_datetimes(proc)) for i, name in enumerate(order)
            if (proc := stmt.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )
        self._sql: dict[int, str] = {}

    def _text(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            text = self._sql[rows] = self.prefix + ", ".join([self.group] * rows) + self.suffix
        return text

    def _params(self, rows: Sequence[Mapping]) -> tuple:
        columns, processors = self.columns, self.processors
        flat: list = []
        for row in rows:
            values = [row[c] for c in columns]
            for i, proc in processors:
                values[i] = proc(values[i])
            flat.extend(values)
        return tuple(flat)

    def execute(self, conn, rows: Sequence[Mapping]) -> Iterator:
        """Every row, ROWS_PER_STATEMENT per statement; yields each statement's result."""
        for chunk in _chunks(rows, ROWS_PER_STATEMENT):
            yield conn.exec_driver_sql(self._text(len(chunk)), self._params(chunk))


class UnnestInsert:
    """INSERT INTO t (a, b, ...) SELECT * FROM unnest(:a, :b, ...): one array per column.
    Text columns travel as text[] (an explicit cast to varchar(n)[] would truncate silently;
    the insert itself refuses an over-long value, as a plain INSERT does)."""

    def __init__(self, stmt_for: Callable, table, columns: Sequence[str]):
        def array_of(column):
            item = column.type
            return pg_array(Text if isinstance(item, String) else item)

        arrays = [bindparam(c, type_=array_of(table.c[c])) for c in columns]
        rows = func.unnest(*arrays).table_valued(*columns).render_derived(name="batch")
        self.stmt = stmt_for(table).from_select(list(columns), select(*(rows.c[c] for c in columns)))
        self.columns = tuple(columns)
        self.binary = Binary(self.stmt)

    def finish(self, finish: Callable) -> UnnestInsert:
        self.stmt = finish(self.stmt)
        self.binary = Binary(self.stmt)
        return self

    def execute(self, conn, rows: Sequence[Mapping]) -> Iterator:
        yield self.binary.execute(conn, {c: [row[c] for row in rows] for c in self.columns})


_PROBES = (datetime(2027, 3, 9, 12, 0), datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59, 999999),
           datetime(2027, 11, 22, 2, 3, 4, 50))


def quick_datetimes(proc: Callable) -> Callable:
    """SQLite's DATETIME bind processor formats with "%04d-%02d-%02d %02d:%02d:%02d.%06d", a
    tenth of a batch's Python time; datetime.isoformat writes the same text for a naive
    datetime in C. Used only where it gives the very text the processor gives."""

    def quick(value):
        if value.__class__ is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return proc(value)

    try:
        same = all(quick(p) == proc(p) for p in _PROBES) and proc(None) is None
    except (TypeError, ValueError, AttributeError):
        same = False
    return quick if same else proc


class UnnestUpdate:
    """UPDATE t SET ... FROM unnest(:a, :b, ...) AS batch(a, b, ...) WHERE ...: a batch of
    per-row updates as one statement on PostgreSQL. Pipelined, psycopg still has the server
    plan and run one statement per row, a round trip's worth of server time each; here the
    batch is one statement with one array per column, in binary.

    `columns` names the per-row values and their types; `build(batch)` returns the UPDATE,
    with `batch.c.<name>` where the row's value goes and plain bindparams for what all rows
    share (given once, as keyword arguments of the call)."""

    def __init__(self, columns: Mapping[str, Any], build: Callable):
        self.columns = tuple(columns)
        self._types, self._build = dict(columns), build
        self._binary: Binary | None = None  # built on first use (`pg_array`)

    @property
    def binary(self) -> Binary:
        if self._binary is None:
            arrays = [bindparam(name, type_=pg_array(kind)) for name, kind in self._types.items()]
            batch = func.unnest(*arrays).table_valued(*self.columns).render_derived(name="batch")
            self._binary = Binary(self._build(batch))
        return self._binary

    def __call__(self, conn, rows: Sequence[Mapping], **shared):
        return self.binary.execute(conn, {**{c: [row[c] for row in rows] for c in self.columns}, **shared})


def update_each(columns: Mapping[str, Any], shared: Mapping[str, Any], build: Callable) -> ExecuteMany:
    """An UPDATE run for each row of a batch, written once: `build(value)` returns it, where
    `value(name)` stands for the row's value of `name`. On SQLite every name is a bind of the
    executemany; on PostgreSQL (`UnnestUpdate`) the names in `columns` (name -> type) come from
    the batch's arrays and those in `shared` (name -> type, the same in every row) are bound
    once. The rows of one call must not name a target row twice: UPDATE ... FROM would take
    only one of them."""
    def from_batch(batch):
        return build(lambda name: batch.c[name] if name in columns else bindparam(name, type_=shared[name]))

    return ExecuteMany(build(bindparam), postgresql=UnnestUpdate(columns, from_batch))


class ExecuteMany:
    """conn.execute(stmt, rows) for a statement run once per row (the effects' UPDATEs), on
    SQLite straight through the driver's executemany: rendered once, each row's parameters
    put in order with the statement's own bind processors. PostgreSQL keeps Core's path
    (psycopg pipelines a short statement's executions by itself), or runs `postgresql`, the
    same change as one set-based statement, when given: its parameters other than the
    columns must then be the same in every row (a stamp, an owner), and are read from the
    first."""

    def __init__(self, stmt, *, postgresql: UnnestUpdate | None = None):
        self.stmt = stmt
        self.postgresql = postgresql
        self._plans: dict[str, _RowPlan | None] = {}

    def __call__(self, conn, rows: Sequence[Mapping]):
        """Run it for every row; the result (its `rowcount` sums the rows), None for none."""
        if not rows:
            return None
        dialect = conn.dialect
        if self.postgresql is not None and dialect.name == "postgresql":
            columns = self.postgresql.columns
            shared = {k: v for k, v in rows[0].items() if k not in columns}
            return self.postgresql(conn, rows, **shared)  # Binary binds only what it names
        if dialect.name not in self._plans:
            self._plans[dialect.name] = self._plan(dialect, rows[0]) if dialect.positional else None
        plan = self._plans[dialect.name]
        if plan is None or any(row.keys() != plan.keys for row in rows):
            return conn.execute(self.stmt, list(rows))
        params = plan.params(rows)
        if dialect.name != "sqlite" or not conn.in_transaction():
            return conn.exec_driver_sql(plan.sql, params)
        # Inside a transaction on SQLite: the driver's cursor itself. SQLAlchemy's execution
        # context (events, result wrapping) costs more than SQLite's work for a group's rows.
        # Same connection and transaction; errors come out as SQLAlchemy's.
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(plan.sql, params)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(plan.sql, params, exc, dialect.loaded_dbapi.Error) from exc
        return cursor

    def _plan(self, dialect, row: Mapping) -> _RowPlan:
        compiled = self.stmt.compile(dialect=dialect, column_keys=list(row))
        keys, literals, processed = [], [], []
        for at, name in enumerate(compiled.positiontup):
            bind = compiled.binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in row:
                keys.append(bind.key)
                if proc is not None:
                    processed.append((at, quick_datetimes(proc)))
            elif not bind.required:  # a literal of the statement
                value = bind.effective_value
                literals.append((at, proc(value) if proc is not None else value))
            else:
                raise RuntimeError(f"no value for {name} in {self.stmt}")
        return _RowPlan(compiled.string, frozenset(row), keys, literals, processed)


class _RowPlan:
    """How a row (a mapping) becomes the statement's parameters, in order."""

    def __init__(self, sql: str, keys: frozenset, names: list, literals: list, processed: list):
        self.sql, self.keys = sql, keys
        self.literals, self.processed = tuple(literals), tuple(processed)
        self.take = itemgetter(*names) if len(names) > 1 else (lambda row, name=names[0]: (row[name],))

    def params(self, rows: Sequence[Mapping]) -> list:
        # Each row's values in C (itemgetter); then the statement's literals in their places
        # and the values that need a processor (datetimes, as text on SQLite), a naive
        # datetime seen before in the batch (its stamp) processed once.
        params = list(map(self.take, rows))
        literals, processed = self.literals, self.processed
        if not literals and not processed:
            return params
        seen: dict = {}
        for number, values in enumerate(params):
            values = list(values)
            for at, value in literals:
                values.insert(at, value)
            for at, proc in processed:
                value = values[at]
                if value.__class__ is datetime and value.tzinfo is None:  # the batch's stamp
                    done = seen.get((at, value))
                    if done is None:
                        done = seen[at, value] = proc(value)
                else:
                    done = proc(value)
                values[at] = done
            params[number] = tuple(values)
        return params




def _closing(text: str) -> int:
    """Where the parenthesis that opens `text` closes."""
    depth = 0
    for at, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return at
    raise RuntimeError(f"unbalanced VALUES group: {text}")
