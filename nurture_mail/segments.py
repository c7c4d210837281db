"""Audiences and ``only_if`` rules as SQL that runs inside the database.

``audience_clause`` / ``conditions_clause`` return SQLAlchemy boolean expressions over
``models.Candidate`` that work on SQLite and PostgreSQL; the store puts them in its queries,
so the pool is never loaded into Python. ``evaluate`` / ``evaluate_audience`` are the same
rules in plain Python (see ``nurture_mail.rules`` for the precise semantics, which both
follow). Every condition compiles to a definite true/false (never NULL), so negations of a
clause behave like Python's ``not``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Numeric,
    String,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from nurture_mail.durations import resolve_moment
from nurture_mail.models import Candidate, CandidateTag, Suppression
from nurture_mail.rules import (
    DATETIME_FIELDS,
    MOMENTS,
    NEGATIONS,
    ORDERINGS,
    TEXT_FIELDS,
    Audience,
    Condition,
    EqualityForms,
    check_field,
    equality_forms,
    evaluate,
    evaluate_audience,
    fold,
    moment_text,
)
from nurture_mail.segment_sql import (
    AttributeBoolean,
    AttributeListHas,
    AttributeNumber,
    AttributePresent,
    AttributeText,
    Binary,
    Fold,
    StartsWithDate,
)

__all__ = ["audience_clause", "conditions_clause", "evaluate", "evaluate_audience"]

_CANDIDATES = Candidate.__table__.c
_TAGS = CandidateTag.__table__.c
_SUPPRESSIONS = Suppression.__table__.c
_COMPARE = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "before": operator.lt,
    "after": operator.gt,
}


@dataclass(frozen=True)
class _Access:
    """How SQL reads one field; None where the field can never hold that kind of value."""

    text: ColumnElement | None = None
    number: ColumnElement | None = None
    boolean: ColumnElement | None = None  # 'true' / 'false'
    present: ColumnElement | None = None
    list_has: Callable[[str], ColumnElement] | None = None
    instant: ColumnElement | None = None  # a naive-UTC DateTime column


def audience_clause(audience: Audience, now: datetime) -> ColumnElement[bool]:
    """Members of the audience, minus hired candidates and suppressed addresses."""
    status = Fold(_CANDIDATES.status)
    parts: list[ColumnElement] = [
        or_(_CANDIDATES.status.is_(None), status != "hired"),
        not_(exists().where(_SUPPRESSIONS.email == _CANDIDATES.email)),
    ]
    if audience.statuses is not None:
        parts.append(_definite(status.in_(sorted({fold(s) for s in audience.statuses}))))
    if audience.tags_any:
        parts.append(_has_tag(audience.tags_any))
    parts.extend(_has_tag([tag]) for tag in dict.fromkeys(audience.tags_all))
    if audience.tags_none:
        parts.append(not_(_has_tag(audience.tags_none)))
    parts.append(conditions_clause(audience.where, now))
    return and_(*parts)


def conditions_clause(conditions: Iterable[Condition], now: datetime) -> ColumnElement[bool]:
    """All conditions hold (true for none)."""
    parts = [condition_clause(c, now) for c in conditions]
    return and_(*parts) if parts else true()


def condition_clause(condition: Condition, now: datetime) -> ColumnElement[bool]:
    op = condition.op
    if op in NEGATIONS:
        positive = Condition(condition.field, NEGATIONS[op], condition.value, condition.line)
        return not_(condition_clause(positive, now))
    check_field(condition.field)  # attribute names reach SQL (bound, but keep them sane)
    access = _access(condition.field)
    if op == "exists":
        present = _definite(access.present)
        return present if condition.value else not_(present)
    return _definite(_positive(access, condition.field, op, condition.value, now))


def _positive(
    access: _Access, field: str, op: str, operand: object, now: datetime
) -> ColumnElement:
    if op == "eq":
        return _equals(access, equality_forms([operand]))
    if op == "in":
        return _equals(access, equality_forms(operand))  # type: ignore[arg-type]
    if op == "contains":
        needle = fold(str(operand))
        parts = []
        if access.text is not None:
            parts.append(Fold(access.text).contains(needle, autoescape=True))
        if access.list_has is not None:
            parts.append(access.list_has(needle))
        return or_(*parts) if parts else false()
    if op in ORDERINGS:
        if field in DATETIME_FIELDS:
            raise ValueError(f"{field!r} supports only before, after and exists")
        compare = _COMPARE[op]
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return (
                compare(access.number, _number(operand)) if access.number is not None else false()
            )
        if not isinstance(operand, str) or access.text is None:
            return false()
        return compare(Binary(access.text), literal(operand, String))
    if op in MOMENTS:
        moment = resolve_moment(operand, now)
        compare = _COMPARE[op]
        if access.instant is not None:
            return compare(access.instant, moment.astimezone(UTC).replace(tzinfo=None))
        if access.text is None:
            return false()
        prefix = Binary(_iso_prefix(access.text))
        return and_(
            StartsWithDate(access.text), compare(prefix, literal(moment_text(moment), String))
        )
    raise ValueError(f"unknown operator {op!r}")


def _access(field: str) -> _Access:
    if field in TEXT_FIELDS:
        column = _CANDIDATES[field]
        return _Access(text=column, present=and_(column.is_not(None), column != ""))
    if field in DATETIME_FIELDS:
        column = _CANDIDATES[field]
        return _Access(instant=column, present=column.is_not(None))
    return _Access(
        text=AttributeText(field),
        number=AttributeNumber(field),
        boolean=AttributeBoolean(field),
        present=AttributePresent(field),
        list_has=lambda needle: AttributeListHas(field, needle),
    )


def _equals(access: _Access, forms: EqualityForms) -> ColumnElement:
    parts = []
    if access.text is not None:
        parts.append(Fold(access.text).in_(sorted(forms.texts)))
    if access.number is not None and forms.numbers:
        parts.extend(access.number == _number(n) for n in forms.numbers)
    if access.boolean is not None and forms.bools:
        parts.append(access.boolean.in_(sorted("true" if b else "false" for b in forms.bools)))
    return or_(*parts) if parts else false()


def _number(value: int | float) -> ColumnElement:
    """A numeric parameter typed by its value, so neither side is silently rounded."""
    if isinstance(value, float):
        return literal(value, Float)
    if -(2**63) <= value < 2**63:
        return literal(value, BigInteger)
    return literal(value, Numeric)


def _iso_prefix(text: ColumnElement) -> ColumnElement:
    """SQL twin of ``rules.iso_prefix``: YYYY-MM-DDTHH:MM:SS, a bare date being midnight."""

    def part(start: int, length: int) -> ColumnElement:
        return func.substr(text, start, length, type_=String)

    seconds = case((part(17, 1) == ":", part(18, 2)), else_=literal("00", String))
    with_time = part(1, 10) + literal("T", String) + part(12, 5) + literal(":", String) + seconds
    return case(
        (part(11, 1).in_(["T", " "]), with_time),
        else_=part(1, 10) + literal("T00:00:00", String),
    )


def _has_tag(tags: Iterable[str]) -> ColumnElement:
    wanted = sorted({fold(t) for t in tags})
    return exists().where(_TAGS.candidate_id == _CANDIDATES.id, Fold(_TAGS.tag).in_(wanted))


def _definite(clause: ColumnElement) -> ColumnElement:
    """NULL (unknown) becomes false, so NOT of the result is what Python's ``not`` says."""
    return func.coalesce(clause, false(), type_=Boolean)
