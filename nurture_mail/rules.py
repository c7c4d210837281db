"""The rule language of `audience.where` and `only_if`, and its meaning in plain Python.

`segments` compiles the same rules to SQL; `evaluate` here is the reference that the SQL must
agree with (a property test checks it on SQLite and PostgreSQL).

A condition is ``field: {op: value}``. Every condition of a block must hold. What each
operator means, for a candidate value ``v`` and an operand ``o``:

* Text comparisons ignore the case of ASCII letters (``"DE"`` equals ``"de"``); other letters
  compare exactly, because SQLite's ``lower()`` folds ASCII only and both databases must agree.
* ``eq`` / ``in``: ``v`` equals ``o`` (or one of the list). Values of different kinds meet
  through their spelling: the text ``"42"`` equals the number ``42``, the texts ``"TRUE"``
  and ``"yes"`` equal the boolean ``true`` (``"false"``/``"no"``: ``false``), because the
  CSV importer converts such cells and JSON imports may not. A number matches a number
  numerically (a stored text matches a number only when spelled the same: ``"5.0"`` is not
  ``5``); ``true`` never equals ``1``. A list value never equals anything (use ``contains``).
* ``contains``: ``o`` is a substring of the text ``v``, or, when ``v`` is a list (a custom
  attribute), one of its text items equals ``o``.
* ``exists: true``: ``v`` is present, not null, not empty text and not an empty list.
* ``gt`` / ``gte`` / ``lt`` / ``lte``: with a number operand, ``v`` must be a number; with a
  text operand (such as an ISO date), ``v`` must be text and is compared code point by code
  point (so ISO dates order correctly).
* ``before`` / ``after``: ``o`` is a duration (``30d`` = 30 days before now) or an ISO date.
  Date-time columns (``decided_at``, ``created_at``) compare as instants (naive = UTC). Text
  values must start with ``YYYY-MM-DD``; they compare by their ``YYYY-MM-DDTHH:MM:SS``
  prefix (a bare date is midnight, missing seconds are 0, fractions and zone offsets are
  ignored: times in custom attributes are taken as UTC).
* A missing (or null) value satisfies none of the above, so it DOES satisfy the negations:
  ``ne`` = not ``eq``, ``not_in`` = not ``in``, ``not_contains`` = not ``contains``,
  ``exists: false`` = not ``exists: true``.

The audience adds: ``status`` (one of the list, case-insensitive), ``tags`` ``any`` / ``all``
/ ``none`` (case-insensitive), and two implicit exclusions: status ``hired`` and suppressed
addresses.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from nurture_mail.durations import resolve_moment

# Candidate columns a rule can name; anything else is a custom attribute.
TEXT_FIELDS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "full_name",
        "status",
        "timezone",
        "owner",
        "role",
        "stage_reached",
        "source",
    }
)
DATETIME_FIELDS = frozenset({"decided_at", "created_at"})
BUILTIN_FIELDS = TEXT_FIELDS | DATETIME_FIELDS

# Custom attribute names end up in JSON paths: this shape keeps them harmless there.
ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)

OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "before",
    "after",
)
# Each negation is exactly "not" its positive operator, so missing values satisfy it.
NEGATIONS = {"ne": "eq", "not_in": "in", "not_contains": "contains"}
ORDERINGS = ("gt", "gte", "lt", "lte")
MOMENTS = ("before", "after")
_DATETIME_OPERATORS = ("exists", "before", "after")

# Words people reach for, mapped to our operator (difflib alone would miss most of them).
_OPERATOR_ALIASES = {
    "equals": "eq",
    "equal": "eq",
    "is": "eq",
    "=": "eq",
    "==": "eq",
    "not": "ne",
    "neq": "ne",
    "!=": "ne",
    "is_not": "ne",
    "one_of": "in",
    "any_of": "in",
    "nin": "not_in",
    "not_one_of": "not_in",
    "has": "contains",
    "includes": "contains",
    "like": "contains",
    "present": "exists",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "older_than": "before",
    "since": "after",
    "newer_than": "after",
}

_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FOLD = str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())
_NUMBER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", re.ASCII)
# The importer turns these CSV cells into booleans, so they must keep matching their text.
_BOOL_TEXTS = {True: ("true", "yes"), False: ("false", "no")}
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


@dataclass(frozen=True)
class Condition:
    """One ``field: {op: value}`` test; ``line`` is where the operator is written."""

    field: str
    op: str
    value: object
    line: int = 0


@dataclass(frozen=True)
class Audience:
    """Who a campaign enrols. ``statuses`` None = any status."""

    statuses: tuple[str, ...] | None = None
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class EqualityForms:
    """What an ``eq``/``in`` operand matches, by kind of stored value."""

    texts: frozenset[str]  # folded spellings a text value may have
    numbers: tuple[int | float, ...]
    bools: tuple[bool, ...]


def fold(text: str) -> str:
    """Lower-case ASCII letters only, exactly as SQLite's ``lower()`` does."""
    return text.translate(_FOLD)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {match[0]!r}?)" if match else ""


def number_text(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def equality_forms(operands: Iterable[object]) -> EqualityForms:
    texts: set[str] = set()
    numbers: list[int | float] = []
    bools: list[bool] = []
    for o in operands:
        if isinstance(o, bool):
            texts.update(_BOOL_TEXTS[o])
            bools.append(o)
        elif isinstance(o, int | float):
            texts.add(number_text(o))
            numbers.append(o)
        else:
            text = str(o)
            texts.add(fold(text))
            if _NUMBER_TEXT.fullmatch(text):
                numbers.append(float(text) if "." in text else int(text))
            if fold(text) in _BOOL_TEXTS[True] + _BOOL_TEXTS[False]:
                bools.append(fold(text) in _BOOL_TEXTS[True])
    return EqualityForms(frozenset(texts), tuple(dict.fromkeys(numbers)), tuple(set(bools)))


def moment_text(moment: datetime) -> str:
    """An instant as the ``YYYY-MM-DDTHH:MM:SS`` UTC text that text values compare against."""
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def iso_prefix(text: str) -> str | None:
    """A text value's comparable ``YYYY-MM-DDTHH:MM:SS`` prefix, None when it is no date."""
    if not _DATE_PREFIX.match(text):
        return None
    if text[10:11] not in ("T", " "):
        return f"{text[:10]}T00:00:00"
    seconds = text[17:19] if text[16:17] == ":" else "00"  # "10:00" means 10:00:00
    return f"{text[:10]}T{text[11:16]}:{seconds}"


# --- validation (the loader calls these; messages are shown to recruiters) -------------------


def check_field(field: str) -> None:
    """Raise ValueError unless ``field`` names a built-in field or a valid attribute name."""
    if field == "tags":
        raise ValueError(
            "'tags' is not a field here: select tags with audience 'tags: {any: [...]}'"
        )
    if field not in BUILTIN_FIELDS and not ATTRIBUTE_NAME.fullmatch(field):
        raise ValueError(
            f"bad field name {field!r}: use letters, digits and '_', "
            "not starting with a digit, at most 64 characters"
        )


def check_operator(field: str, op: str) -> None:
    if op in OPERATORS:
        if field in DATETIME_FIELDS and op not in _DATETIME_OPERATORS:
            raise ValueError(f"{field!r} is a date-time: use before, after or exists, not {op!r}")
        return
    alias = _OPERATOR_ALIASES.get(op.lower())
    hint = f" (did you mean {alias!r}?)" if alias else suggest(op, OPERATORS)
    if not hint:
        hint = f" (expected one of: {', '.join(OPERATORS)})"
    raise ValueError(f"unknown operator {op!r} for {field!r}{hint}")


def describe(value: object) -> str:
    """A value as messages show it: ``'lots'``, ``0``, ``a list``."""
    if value is None:
        return "nothing"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return repr(value.isoformat())
    return repr(value)


def _scalar(field: str, op: str, value: object, *, text_only: bool) -> object:
    """One comparable value: text, number or boolean; dates become ISO text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, list | tuple | dict):
        extra = " (use 'exists: false' for a missing value)" if value is None else ""
        raise ValueError(
            f"{op!r} on {field!r} needs a single value (text, number or true/false), "
            f"got {describe(value)}{extra}"
        )
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL refuses NUL in a parameter
        raise ValueError(f"{op!r} on {field!r}: text with a NUL character (\\0) can never match")
    if text_only:
        if isinstance(value, bool):
            return "true" if value else "false"
        return number_text(value) if isinstance(value, int | float) else str(value)
    return value


def normalise_operand(field: str, op: str, value: object) -> object:
    """The operand as the rule engine stores it; ValueError with a user message if invalid."""
    text_only = field in TEXT_FIELDS
    if op in ("eq", "ne"):
        return _scalar(field, op, value, text_only=text_only)
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{op!r} on {field!r} needs a non-empty list, got {describe(value)}")
        return tuple(_scalar(field, op, v, text_only=text_only) for v in value)
    if op in ("contains", "not_contains"):
        if isinstance(value, list | tuple | dict) or value is None:
            raise ValueError(f"{op!r} on {field!r} needs a text value, got {describe(value)}")
        text = _scalar(field, op, value, text_only=True)
        if text == "":
            raise ValueError(f"{op!r} on {field!r} needs a non-empty text value")
        return text
    if op == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"'exists' on {field!r} must be true or false, got {describe(value)}")
        return value
    if op in ORDERINGS:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(
                f"{op!r} on {field!r} needs a number or an ISO date, got {describe(value)}"
            )
        if field in TEXT_FIELDS and not isinstance(value, str):
            raise ValueError(f"{field!r} is text: {op!r} needs a text value such as an ISO date")
        return value
    if op in MOMENTS:
        operand = value.isoformat() if isinstance(value, datetime | date) else value
        try:
            # Any fixed instant will do: this only checks that the operand can be resolved.
            resolve_moment(operand, datetime(2000, 1, 1, tzinfo=UTC))
        except ValueError:
            raise ValueError(
                f"bad duration or date {describe(value)} for {op!r} on {field!r}: "
                "expected e.g. 30d or 2026-01-31"
            ) from None
        return operand
    check_operator(field, op)
    raise AssertionError(op)  # pragma: no cover - check_operator raised


# --- evaluation in Python ------------------------------------------------------------------


def field_value(candidate: Mapping, field: str) -> object:
    if field in BUILTIN_FIELDS:
        return candidate.get(field)
    return (candidate.get("attributes") or {}).get(field)


def _equals(value: object, forms: EqualityForms) -> bool:
    if isinstance(value, bool):
        return value in forms.bools
    if isinstance(value, int | float):
        return any(value == n for n in forms.numbers)
    if isinstance(value, str):
        return fold(value) in forms.texts
    return False


def _contains(value: object, needle: str) -> bool:
    needle = fold(needle)
    if isinstance(value, str):
        return needle in fold(value)
    if isinstance(value, list | tuple):
        return any(isinstance(item, str) and fold(item) == needle for item in value)
    return False


def _exists(value: object) -> bool:
    return value is not None and value != "" and not (isinstance(value, list | tuple) and not value)


def _ordered(value: object, op: str, operand: object) -> bool:
    if isinstance(operand, int | float) and not isinstance(operand, bool):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
    elif not isinstance(value, str) or not isinstance(operand, str):
        return False
    if op == "gt":
        return value > operand
    if op == "gte":
        return value >= operand
    if op == "lt":
        return value < operand
    return value <= operand


def _as_instant(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _moment(value: object, op: str, operand: object, now: datetime, field: str) -> bool:
    moment = resolve_moment(operand, now)
    if field in DATETIME_FIELDS:
        if isinstance(value, str):
            value = resolve_moment(value, now)
        if not isinstance(value, datetime):
            return False
        # The database keeps naive UTC with microseconds; compare at the same precision.
        instant = _as_instant(value)
        return instant < moment if op == "before" else instant > moment
    if not isinstance(value, str):
        return False
    prefix = iso_prefix(value)
    if prefix is None:
        return False
    return prefix < moment_text(moment) if op == "before" else prefix > moment_text(moment)


def holds(condition: Condition, candidate: Mapping, now: datetime) -> bool:
    """Whether one condition holds for a candidate (see the module docstring)."""
    op, operand = condition.op, condition.value
    if op in NEGATIONS:
        return not holds(Condition(condition.field, NEGATIONS[op], operand), candidate, now)
    value = field_value(candidate, condition.field)
    if op == "eq":
        return _equals(value, equality_forms([operand]))
    if op == "in":
        return _equals(value, equality_forms(operand))  # type: ignore[arg-type]
    if op == "contains":
        return _contains(value, str(operand))
    if op == "exists":
        return _exists(value) == bool(operand)
    if op in ORDERINGS:
        if condition.field in DATETIME_FIELDS:
            raise ValueError(f"{condition.field!r} supports only before, after and exists")
        return _ordered(value, op, operand)
    if op in MOMENTS:
        return _moment(value, op, operand, now, condition.field)
    raise ValueError(f"unknown operator {op!r}")


def evaluate(conditions: Iterable[Condition], candidate: Mapping, now: datetime) -> bool:
    """All conditions hold. ``candidate``: built-in fields, ``attributes`` dict, ``tags`` list."""
    return all(holds(c, candidate, now) for c in conditions)


def evaluate_audience(audience: Audience, candidate: Mapping, now: datetime) -> bool:
    """Membership, implicit exclusions included (``candidate["suppressed"]``: a bool)."""
    status = fold(candidate.get("status") or "")
    if status == "hired" or candidate.get("suppressed"):
        return False
    if audience.statuses is not None and status not in {fold(s) for s in audience.statuses}:
        return False
    tags = {fold(t) for t in candidate.get("tags") or ()}
    if audience.tags_any and not tags & {fold(t) for t in audience.tags_any}:
        return False
    if any(fold(t) not in tags for t in audience.tags_all):
        return False
    if tags & {fold(t) for t in audience.tags_none}:
        return False
    return evaluate(audience.where, candidate, now)
