"""A synthetic audience member: the fields every candidate of a campaign is sure to have.

`nurture check` renders every template for such a candidate, so a template that uses a field
some members lack (without ``| default``) fails at check time instead of in a sent email.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from nurture_mail.durations import resolve_moment
from nurture_mail.rules import (
    BUILTIN_FIELDS,
    DATETIME_FIELDS,
    Audience,
    Condition,
    evaluate,
    iso_prefix,
)

if TYPE_CHECKING:
    from nurture_mail.campaigns import Campaign, Step

# Only illustrative: the values must satisfy the rules, not describe a real moment.
_REFERENCE_NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)

_BUILTIN_EXAMPLES: dict[str, object] = {
    "email": "candidate@example.com",
    "first_name": "Alex",
    "last_name": "Morgan",
    "full_name": "Alex Morgan",
    "status": "new",
    "timezone": "Europe/Berlin",
    "owner": "Dana Reyes",
    "role": "Software Engineer",
    "stage_reached": "onsite",
    "source": "referral",
}


def guaranteed_fields(
    source: Campaign | Audience | Step,
    step: Step | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, object]:
    """Field name -> a plausible value, for every field each audience member must have.

    ``email``, ``status`` and ``tags`` always; plus every field that a condition of the
    audience (and of ``step.only_if``, or of ``source`` itself when it is a Step) forces to
    exist. Fields only constrained by ``ne``/``not_in``/``not_contains``/``exists: false``
    may be missing, so they are left out.
    """
    now = now or _REFERENCE_NOW
    audience = getattr(source, "audience", source if isinstance(source, Audience) else Audience())
    conditions = list(audience.where)
    for extra in (source, step):
        if extra is not None and not isinstance(extra, Audience):
            conditions.extend(getattr(extra, "only_if", ()))  # a Campaign has none
    statuses = audience.statuses
    fields: dict[str, object] = {
        "email": _BUILTIN_EXAMPLES["email"],
        "status": statuses[0] if statuses else _BUILTIN_EXAMPLES["status"],
        "tags": list(dict.fromkeys(audience.tags_all + audience.tags_any[:1])),
    }
    by_field: dict[str, list[Condition]] = {}
    for condition in conditions:
        by_field.setdefault(condition.field, []).append(condition)
    for name, group in by_field.items():
        options = [v for c in group for v in _examples(c, now)]
        if name == "status" and statuses:
            options = [s for s in statuses if _satisfies(name, s, group, now)] + options
        chosen = next((v for v in options if _satisfies(name, v, group, now)), None)
        if chosen is None and options:
            chosen = options[0]  # contradictory rules: nobody matches, any value will do
        if chosen is not None:
            fields[name] = chosen
    return fields


def _satisfies(name: str, value: object, group: Iterable[Condition], now: datetime) -> bool:
    candidate = {name: value} if name in BUILTIN_FIELDS else {"attributes": {name: value}}
    return evaluate(group, candidate, now)


def _examples(condition: Condition, now: datetime) -> list[object]:
    """Values that would satisfy one positive condition (none for negations)."""
    name, op, operand = condition.field, condition.op, condition.value
    if op == "eq":
        return [operand]
    if op == "in":
        return list(operand)  # type: ignore[call-overload]
    if op == "contains":
        return [operand]
    if op == "exists" and operand is True:
        if name in DATETIME_FIELDS:
            return [now - timedelta(days=30)]
        return [_BUILTIN_EXAMPLES.get(name, "example")]
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered_examples(op, operand)
    if op in ("before", "after"):
        moment = resolve_moment(operand, now)
        if op == "before":
            instant = moment - timedelta(days=1)
        elif moment < now:
            instant = moment + min(timedelta(days=1), (now - moment) / 2)  # not in the future
        else:
            instant = moment + timedelta(days=1)
        if name in DATETIME_FIELDS:
            return [instant]
        return [instant.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()]
    return []


def _ordered_examples(op: str, operand: object) -> list[object]:
    step = {"gt": 1, "gte": 0, "lt": -1, "lte": 0}[op]
    if isinstance(operand, int | float) and not isinstance(operand, bool):
        return [operand + step]
    text = str(operand)
    if iso_prefix(text) is not None and step:
        try:
            return [(date.fromisoformat(text[:10]) + timedelta(days=step)).isoformat(), text]
        except ValueError:
            pass
    if step > 0:
        return [text + "z"]
    if step < 0:
        return [text[:-1]]
    return [text]
