"""SQL building blocks for segments that SQLite and PostgreSQL spell differently.

Custom attributes live in one JSON column (JSONB on PostgreSQL). Each block below is one
SQLAlchemy expression compiled per dialect, always with the attribute name and every value
as a bound parameter. Blocks never fail at run time on odd data: a value of the wrong JSON
kind reads as NULL (PostgreSQL would raise on a bad cast or on ``jsonb_array_elements`` of a
non-array, so those are guarded by CASE).
"""

from __future__ import annotations

from sqlalchemy import Boolean, String, literal
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from nurture_mail.models import Candidate

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ATTRIBUTES = Candidate.__table__.c.attributes

# {c}: the attributes column, {k}: the attribute name, {n}: a needle, {x}: any expression.
_SQLITE_PATH = "'$.\"' || {k} || '\"'"
_SQLITE_TYPE = f"json_type({{c}}, {_SQLITE_PATH})"
_SQLITE_VALUE = f"json_extract({{c}}, {_SQLITE_PATH})"
_PG_VALUE = "({c} -> CAST({k} AS TEXT))"
_PG_TEXT = "({c} ->> CAST({k} AS TEXT))"
_PG_TYPE = f"jsonb_typeof({_PG_VALUE})"


class _Template(FunctionElement):
    """An expression given as one SQL template per dialect."""

    inherit_cache = True
    sqlite = ""
    postgresql = ""
    slots: tuple[str, ...] = ()


def _render(element: _Template, compiler: SQLCompiler, template: str, **kw: object) -> str:
    args = [compiler.process(arg, **kw) for arg in element.clauses]
    return template.format(**dict(zip(element.slots, args, strict=True)))


def _sqlite(element: _Template, compiler: SQLCompiler, **kw: object) -> str:
    return _render(element, compiler, element.sqlite, **kw)


def _postgresql(element: _Template, compiler: SQLCompiler, **kw: object) -> str:
    return _render(element, compiler, element.postgresql, **kw)


def _unsupported(element: _Template, compiler: SQLCompiler, **kw: object) -> str:
    raise CompileError(f"segments support SQLite and PostgreSQL, not {compiler.dialect.name}")


class _Attribute(_Template):
    inherit_cache = True
    slots = ("c", "k")

    def __init__(self, name: str):
        super().__init__(_ATTRIBUTES, literal(name, String))


class AttributeText(_Attribute):
    """The attribute when it is a JSON string, else NULL."""

    inherit_cache = True
    type = String()
    sqlite = f"CASE WHEN {_SQLITE_TYPE} = 'text' THEN {_SQLITE_VALUE} END"
    postgresql = f"CASE WHEN {_PG_TYPE} = 'string' THEN {_PG_TEXT} END"


class AttributeNumber(_Attribute):
    """The attribute when it is a JSON number, else NULL."""

    inherit_cache = True
    sqlite = f"CASE WHEN {_SQLITE_TYPE} IN ('integer', 'real') THEN {_SQLITE_VALUE} END"
    postgresql = f"CASE WHEN {_PG_TYPE} = 'number' THEN CAST({_PG_TEXT} AS NUMERIC) END"


class AttributeBoolean(_Attribute):
    """'true' / 'false' when the attribute is a JSON boolean, else NULL.

    Text rather than a boolean: SQLite's json_extract returns 1/0, indistinguishable from
    numbers, so the kind comes from json_type.
    """

    inherit_cache = True
    type = String()
    sqlite = f"CASE {_SQLITE_TYPE} WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END"
    postgresql = f"CASE WHEN {_PG_TYPE} = 'boolean' THEN {_PG_TEXT} END"


class AttributePresent(_Attribute):
    """Present, not null, not empty text, not an empty list."""

    inherit_cache = True
    type = Boolean()
    sqlite = (
        f"CASE {_SQLITE_TYPE} WHEN 'text' THEN {_SQLITE_VALUE} <> '' "
        f"WHEN 'array' THEN json_array_length({{c}}, {_SQLITE_PATH}) > 0 "
        f"WHEN 'null' THEN 0 ELSE {_SQLITE_TYPE} IS NOT NULL END"
    )
    postgresql = (
        f"CASE {_PG_TYPE} WHEN 'string' THEN {_PG_TEXT} <> '' "
        f"WHEN 'array' THEN jsonb_array_length({_PG_VALUE}) > 0 "
        f"WHEN 'null' THEN false ELSE {_PG_TYPE} IS NOT NULL END"
    )


class AttributeListHas(_Template):
    """The attribute is a JSON list with a text item equal to the (folded) needle, ignoring
    ASCII case."""

    inherit_cache = True
    type = Boolean()
    slots = ("c", "k", "n")
    sqlite = (
        f"({_SQLITE_TYPE} = 'array' AND EXISTS (SELECT 1 FROM json_each({{c}}, {_SQLITE_PATH}) "
        "AS item WHERE item.type = 'text' AND lower(item.value) = {n}))"
    )
    postgresql = (
        "EXISTS (SELECT 1 FROM jsonb_array_elements("
        f"CASE WHEN {_PG_TYPE} = 'array' THEN {_PG_VALUE} ELSE '[]'::jsonb END) AS item(v) "
        f"WHERE jsonb_typeof(item.v) = 'string' "
        f"AND translate(item.v #>> '{{{{}}}}', '{_UPPER}', '{_UPPER.lower()}') = {{n}})"
    )

    def __init__(self, name: str, needle: str):
        super().__init__(_ATTRIBUTES, literal(name, String), literal(needle, String))


class Fold(_Template):
    """Lower-case ASCII letters only (SQLite's lower(); translate() on PostgreSQL, whose
    lower() would also fold other letters and disagree with SQLite)."""

    inherit_cache = True
    type = String()
    slots = ("x",)
    sqlite = "lower({x})"
    postgresql = f"translate({{x}}, '{_UPPER}', '{_UPPER.lower()}')"

    def __init__(self, expr: ColumnElement):
        super().__init__(expr)


class Binary(_Template):
    """Compare text by code point, as Python and SQLite do, whatever the database locale."""

    inherit_cache = True
    type = String()
    slots = ("x",)
    sqlite = "{x}"
    postgresql = '({x}) COLLATE "C"'

    def __init__(self, expr: ColumnElement):
        super().__init__(expr)


class StartsWithDate(_Template):
    """The text starts with YYYY-MM-DD (digits only)."""

    inherit_cache = True
    type = Boolean()
    slots = ("x",)
    sqlite = "({x} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*')"
    postgresql = "({x} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}')"

    def __init__(self, expr: ColumnElement):
        super().__init__(expr)


for _cls in (
    AttributeText,
    AttributeNumber,
    AttributeBoolean,
    AttributePresent,
    AttributeListHas,
    Fold,
    Binary,
    StartsWithDate,
):
    compiles(_cls)(_unsupported)
    compiles(_cls, "sqlite")(_sqlite)
    compiles(_cls, "postgresql")(_postgresql)
