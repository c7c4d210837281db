"""Segments in SQL, on SQLite and PostgreSQL, agree with the Python evaluator.

PostgreSQL runs when NURTURE_TEST_DATABASE_URL is set (each test in a schema of its own);
with NURTURE_REQUIRE_SERVICES=1 a missing PostgreSQL fails instead of skipping.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, insert, select, text

from nurture_mail import models
from nurture_mail.rules import (
    OPERATORS,
    Audience,
    Condition,
    evaluate,
    evaluate_audience,
    normalise_operand,
)
from nurture_mail.segments import audience_clause, conditions_clause

PG_URL = os.environ.get("NURTURE_TEST_DATABASE_URL", "")
REQUIRE = os.environ.get("NURTURE_REQUIRE_SERVICES") == "1"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CANDIDATES = models.Candidate.__table__
TAGS = models.CandidateTag.__table__
SUPPRESSIONS = models.Suppression.__table__


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request, tmp_path):
    """An engine on an empty schema: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'segments.db'}")
        models.Base.metadata.create_all(engine)
        yield engine
        engine.dispose()
        return
    if not PG_URL:
        if REQUIRE:
            pytest.fail("required service missing: set NURTURE_TEST_DATABASE_URL")
        pytest.skip("PostgreSQL: set NURTURE_TEST_DATABASE_URL")
    schema = "seg_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    models.postgresql_options()  # the partial indexes' WHERE, as database.create_db_engine does
    try:
        models.Base.metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def store(engine, people: list[dict]) -> None:
    """Replace the pool with ``people`` (dicts of fields, attributes, tags, suppressed)."""
    with engine.begin() as conn:
        for table in (TAGS, SUPPRESSIONS, CANDIDATES):
            conn.execute(delete(table))
        if not people:
            return
        builtin = ("email", "first_name", "role", "stage_reached", "status", "decided_at")
        conn.execute(
            insert(CANDIDATES),
            [
                {
                    "id": p["id"],
                    **{k: p.get(k) for k in builtin},
                    "status": p.get("status", "new"),
                    "attributes": p.get("attributes", {}),
                    "token_key": f"k{p['id']}",
                    "created_at": datetime(2026, 1, 1),
                    "updated_at": datetime(2026, 1, 1),
                }
                for p in people
            ],
        )
        tags = [{"candidate_id": p["id"], "tag": t} for p in people for t in p.get("tags", ())]
        if tags:
            conn.execute(insert(TAGS), tags)
        suppressed = [p for p in people if p.get("suppressed")]
        if suppressed:
            conn.execute(
                insert(SUPPRESSIONS),
                [
                    {
                        "email_hash": f"h{p['id']}",
                        "email": p["email"],
                        "reason": "unsubscribed",
                        "created_at": datetime(2026, 1, 1),
                    }
                    for p in suppressed
                ],
            )


def sql_ids(engine, clause) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(CANDIDATES.c.id).where(clause)).scalars())


def python_ids(people, test) -> set[int]:
    return {p["id"] for p in people if test(p)}


# A small pool that exercises every kind of stored value.
POOL = [
    {
        "id": 1,
        "email": "ada@example.com",
        "first_name": "Ada",
        "status": "rejected",
        "role": "Senior Backend Engineer",
        "stage_reached": "onsite",
        "decided_at": datetime(2027, 1, 1, 9, 0),
        "attributes": {
            "country": "DE",
            "skills": ["Python", "Go"],
            "years": 7,
            "open_to_work": True,
            "joined": "2026-05-01",
            "score": 4.5,
        },
        "tags": ["silver-medalist"],
    },
    {
        "id": 2,
        "email": "bo@example.com",
        "first_name": "Bo",
        "status": "withdrawn",
        "role": "Designer",
        "stage_reached": "final",
        "decided_at": datetime(2027, 2, 25, 9, 30),
        "attributes": {
            "country": "de",
            "skills": "python, sql",
            "years": "3",
            "open_to_work": False,
            "joined": "2027-02-20T10:00:00",
        },
        "tags": ["Silver-Medalist", "referral"],
    },
    {
        "id": 3,
        "email": "cy@example.com",
        "status": "rejected",
        "attributes": {
            "country": "AT",
            "skills": [],
            "years": 12,
            "open_to_work": "yes",
            "joined": "not a date",
            "score": 3,
        },
        "tags": ["do-not-contact"],
    },
    {
        "id": 4,
        "email": "di@example.com",
        "status": "Hired",
        "role": "Engineer",
        "attributes": {"country": "DE"},
    },
    {
        "id": 5,
        "email": "ed@example.com",
        "status": "rejected",
        "role": "engineer",
        "suppressed": True,
    },
    {
        "id": 6,
        "email": "fy@example.com",
        "first_name": "",
        "status": "new",
        "role": "100% remote_ok",
        "attributes": {"country": None, "skills": "", "years": 7.0, "note": {"a": 1}},
    },
]

# (field, op, operand, ids that match): every operator, built-in and custom, scalar and list.
OPERATOR_CASES = [
    ("role", "eq", "ENGINEER", {4, 5}),
    ("country", "eq", "DE", {1, 2, 4}),
    ("years", "eq", 7, {1, 6}),
    ("years", "eq", 3, {2}),  # the text "3" equals the number 3
    ("years", "eq", "12", {3}),  # and the other way round
    ("open_to_work", "eq", True, {1, 3}),  # "yes" is true, as the importer reads it
    ("open_to_work", "eq", False, {2}),
    ("score", "eq", 4.5, {1}),
    ("skills", "eq", "python", set()),  # a list never equals
    ("country", "ne", "DE", {3, 5, 6}),  # missing and null satisfy ne
    ("open_to_work", "ne", False, {1, 3, 4, 5, 6}),
    ("role", "ne", "designer", {1, 3, 4, 5, 6}),
    ("stage_reached", "in", ("onsite", "FINAL"), {1, 2}),
    ("years", "in", (3, 12), {2, 3}),
    ("stage_reached", "not_in", ("onsite",), {2, 3, 4, 5, 6}),
    ("country", "not_in", ("de", "at"), {5, 6}),
    ("role", "contains", "ENGINEER", {1, 4, 5}),
    ("role", "contains", "%", {6}),  # LIKE wildcards are matched literally
    ("role", "contains", "_", {6}),
    ("role", "contains", "0% r", {6}),
    ("skills", "contains", "python", {1, 2}),  # list item or substring
    ("skills", "contains", "py", {2}),  # list items must match whole
    ("skills", "not_contains", "python", {3, 4, 5, 6}),
    ("role", "not_contains", "engineer", {2, 3, 6}),
    ("skills", "exists", True, {1, 2}),  # [] and "" do not exist
    ("skills", "exists", False, {3, 4, 5, 6}),
    ("country", "exists", True, {1, 2, 3, 4}),  # null does not exist
    ("note", "exists", True, {6}),
    ("first_name", "exists", True, {1, 2}),
    ("decided_at", "exists", True, {1, 2}),
    ("decided_at", "exists", False, {3, 4, 5, 6}),
    ("years", "gt", 5, {1, 3, 6}),  # the text "3" is no number
    ("years", "gte", 7, {1, 3, 6}),
    ("years", "lt", 10, {1, 6}),
    ("years", "lte", 7.0, {1, 6}),
    ("score", "lt", 4, {3}),
    ("joined", "gt", "2026-12-31", {2, 3}),  # text order: "not a date" > "2026..."
    ("role", "gte", "E", {1, 4, 5}),  # code point order: "e" > "E" > "D" > "1"
    ("decided_at", "before", "30d", {1}),
    ("decided_at", "after", "30d", {2}),
    ("decided_at", "after", "2027-02-25", {2}),
    ("decided_at", "before", "2027-01-01T09:00:00Z", set()),  # strictly before
    ("joined", "before", "2027-01-01", {1}),
    ("joined", "after", "10d", {2}),
    ("joined", "after", "2027-02-20T10:00:00", set()),
    ("joined", "before", "2027-02-20T10:00:01", {1, 2}),
]


@pytest.mark.parametrize(
    "field, op, operand, expected",
    OPERATOR_CASES,
    ids=[f"{f}-{o}-{v}" for f, o, v, _ in OPERATOR_CASES],
)
def test_each_operator(db_engine, field, op, operand, expected):
    store(db_engine, POOL)
    condition = Condition(field, op, normalise_operand(field, op, operand))

    assert sql_ids(db_engine, conditions_clause([condition], NOW)) == expected
    assert python_ids(POOL, lambda p: evaluate([condition], flat(p), NOW)) == expected


AUDIENCE_CASES = [
    (Audience(), {1, 2, 3, 6}),  # hired (any case) and suppressed never match
    (Audience(statuses=("REJECTED",)), {1, 3}),
    (Audience(statuses=("hired", "rejected")), {1, 3}),
    (Audience(tags_any=("silver-medalist", "nobody")), {1, 2}),
    (Audience(tags_all=("silver-medalist", "Referral")), {2}),
    (Audience(tags_none=("do-not-contact",)), {1, 2, 6}),
    (
        Audience(
            statuses=("rejected", "withdrawn"),
            tags_any=("silver-medalist",),
            tags_none=("do-not-contact",),
            where=(
                Condition("stage_reached", "in", ("onsite", "final")),
                Condition("skills", "contains", "python"),
                Condition("decided_at", "before", "3d"),
            ),
        ),
        {1, 2},
    ),
    (Audience(where=(Condition("country", "eq", "DE"), Condition("years", "gt", 5))), {1}),
]


@pytest.mark.parametrize("audience, expected", AUDIENCE_CASES)
def test_audience(db_engine, audience, expected):
    store(db_engine, POOL)

    assert sql_ids(db_engine, audience_clause(audience, NOW)) == expected
    assert python_ids(POOL, lambda p: evaluate_audience(audience, flat(p), NOW)) == expected


def test_negated_audience_is_the_complement(db_engine):
    store(db_engine, POOL)
    audience = Audience(where=(Condition("country", "eq", "DE"),))

    inside = sql_ids(db_engine, audience_clause(audience, NOW))
    outside = sql_ids(db_engine, ~audience_clause(audience, NOW))

    assert inside | outside == {p["id"] for p in POOL}
    assert not inside & outside


def test_values_are_bound_never_spliced(db_engine):
    tricky = "x'); DELETE FROM candidates; --"
    people = [{"id": 1, "email": "a@example.com", "attributes": {"note": tricky}, "role": tricky}]
    store(db_engine, people)
    clause = conditions_clause(
        [Condition("note", "eq", tricky), Condition("role", "contains", "DELETE")], NOW
    )

    sql = str(select(CANDIDATES.c.id).where(clause).compile(db_engine))

    assert "DELETE" not in sql and "note" not in sql
    assert sql_ids(db_engine, clause) == {1}


def test_bad_attribute_name_never_reaches_sql():
    with pytest.raises(ValueError, match="bad field name"):
        conditions_clause([Condition("x'] OR 1=1 --", "eq", "a")], NOW)


def test_only_ascii_letters_are_folded(db_engine):
    # Both databases must agree: SQLite's lower() leaves É alone, so PostgreSQL must too.
    people = [{"id": 1, "email": "a@example.com", "attributes": {"city": "ÉVRY"}}]
    store(db_engine, people)

    assert sql_ids(db_engine, conditions_clause([Condition("city", "eq", "Évry")], NOW)) == {1}
    assert sql_ids(db_engine, conditions_clause([Condition("city", "eq", "évry")], NOW)) == set()


def test_text_dates_compare_by_their_iso_prefix(db_engine):
    stored = {
        1: "2027-02-20",  # midnight
        2: "2027-02-20 10:00",  # a space instead of T
        3: "2027-02-20T09:59:59+05:00",  # the offset is ignored
        4: "2027-02-20T10:00:00.999Z",  # fractions are ignored
        5: "20270220",  # no YYYY-MM-DD prefix: never a date
        6: "2027-02-21",
    }
    people = [
        {"id": i, "email": f"{i}@example.com", "attributes": {"seen": v}} for i, v in stored.items()
    ]
    store(db_engine, people)

    def both(op: str, operand: str) -> set[int]:
        rule = [Condition("seen", op, operand)]
        sql = sql_ids(db_engine, conditions_clause(rule, NOW))
        assert sql == python_ids(people, lambda p: evaluate(rule, flat(p), NOW))
        return sql

    assert both("after", "2027-02-20") == {2, 3, 4, 6}
    assert both("before", "2027-02-20T10:00:00Z") == {1, 3}
    assert both("after", "2027-02-20T09:59:59") == {2, 4, 6}
    assert both("before", "2027-02-20T10:00") == {1, 3}
    assert both("after", "2027-02-20T12:00:00+02:00") == {6}  # the operand's offset counts


# --- property: SQL and Python agree on random pools and rules -------------------------------

ATTRIBUTES = ("country", "skills", "years", "flag", "joined")
TEXT_FIELDS = ("role", "first_name", "status", "email")
DATES = (
    "2026-05-01",
    "2027-02-20T10:00:00",
    "2027-02-20 10:00",
    "2027-03-01T12:00:00Z",
    "2027-02-28",
)
# Small universes, so that values and operands often meet (equal, contain, order).
texts = st.one_of(
    st.text(alphabet="aAbé%_/", max_size=3),
    st.sampled_from(DATES + ("true", "No", "7", "2.5", "", "A/b", "-T:0É")),
)
numbers = st.one_of(st.integers(-3, 12), st.sampled_from([0.5, 2.5, 7.0, -1.5]))
scalars = st.one_of(st.booleans(), numbers, texts)
json_values = st.one_of(
    st.none(),
    scalars,
    st.lists(st.one_of(texts, numbers), max_size=3),
    st.just({"a": 1}),
)
moments = st.sampled_from(["1d", "30d", "400d", "12h", "2027-01-01", "2027-02-20", *DATES[:2]])
dates = st.sampled_from((*DATES, "2027-02-20", "2027-02-20T10:00:00.5"))
attributes = st.fixed_dictionaries(
    {},
    optional={
        "joined": st.one_of(dates, json_values),
        **dict.fromkeys(ATTRIBUTES[:4], json_values),
    },
)
OPERANDS = {
    "eq": scalars,
    "ne": scalars,
    "in": st.lists(scalars, min_size=1, max_size=3),
    "not_in": st.lists(scalars, min_size=1, max_size=3),
    "contains": texts,
    "not_contains": texts,
    "exists": st.booleans(),
    "gt": st.one_of(numbers, texts),
    "gte": st.one_of(numbers, texts),
    "lt": st.one_of(numbers, texts),
    "lte": st.one_of(numbers, texts),
    "before": moments,
    "after": moments,
}


@st.composite
def people(draw) -> list[dict]:
    count = draw(st.integers(1, 8))
    return [
        {
            "id": i,
            "email": f"c{i}@example.com",
            "first_name": draw(st.one_of(st.none(), texts)),
            "role": draw(st.one_of(st.none(), texts)),
            "status": draw(st.sampled_from(["new", "rejected", "Rejected", "hired", "withdrawn"])),
            "decided_at": draw(
                st.one_of(st.none(), st.datetimes(datetime(2026, 1, 1), datetime(2027, 6, 1)))
            ),
            "attributes": draw(attributes),
            "tags": draw(
                st.lists(st.sampled_from(["vip", "VIP", "referral", "silver"]), unique=True)
            ),
            "suppressed": draw(st.booleans()),
        }
        for i in range(1, count + 1)
    ]


def _near(value: object) -> st.SearchStrategy:
    """The value itself, or (for text) a case-swapped or shortened spelling of it."""
    if isinstance(value, str) and value:
        return st.sampled_from([value, value.swapcase(), value[1:], value[:-1]])
    return st.just(value)


def draw_condition(data: st.DataObject, op: str, pool: list[dict]) -> Condition:
    """A condition for ``op`` whose operand is often close to a value in the pool."""
    if op in ("before", "after"):
        field = data.draw(st.sampled_from(("joined", "decided_at", *ATTRIBUTES[:4], *TEXT_FIELDS)))
    else:
        field = data.draw(st.sampled_from(ATTRIBUTES + TEXT_FIELDS))
    seen: list[object] = []
    for person in pool:
        value = flat(person)["attributes"].get(field) if field in ATTRIBUTES else person.get(field)
        seen.extend(v for v in (value if isinstance(value, list) else [value]) if v is not None)
    fresh = OPERANDS[op]
    scalar_seen = [v for v in seen if isinstance(v, str | int | float)]
    if op in ("before", "after"):
        # Instants right at a stored value test strictness and precision.
        instants = [v.isoformat() for v in seen if isinstance(v, datetime)]
        instants += [v.replace(microsecond=0).isoformat() for v in seen if isinstance(v, datetime)]
        instants += [v for v in scalar_seen if isinstance(v, str) and v[:1] == "2"]
        instants += [v[:10] for v in instants]
        operand = data.draw(st.one_of(st.sampled_from(instants), moments) if instants else moments)
    elif scalar_seen and op not in ("exists", "before", "after"):
        near = st.sampled_from(scalar_seen).flatmap(_near)
        if op in ("in", "not_in"):
            near = st.lists(st.one_of(near, scalars), min_size=1, max_size=3)
        operand = data.draw(st.one_of(near, fresh))
    else:
        operand = data.draw(fresh)
    try:
        return Condition(field, op, normalise_operand(field, op, operand))
    except ValueError:
        return Condition(field, "exists", True)  # an operand the loader would refuse


tag_lists = st.lists(st.sampled_from(["vip", "Vip", "referral", "silver", "gold"]), max_size=2)
audiences = st.builds(
    Audience,
    statuses=st.one_of(
        st.none(),
        st.lists(st.sampled_from(["new", "REJECTED", "withdrawn"]), min_size=1).map(tuple),
    ),
    tags_any=tag_lists.map(tuple),
    tags_all=tag_lists.map(tuple),
    tags_none=tag_lists.map(tuple),
)


def flat(person: dict) -> dict:
    """A stored person as `evaluate` sees a candidate."""
    return {**person, "attributes": person.get("attributes") or {}, "tags": person.get("tags", [])}


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pool=people(), data=st.data(), audience=audiences)
def test_sql_agrees_with_python(db_engine, pool, data, audience):
    store(db_engine, pool)
    # Every operator in each example, one at a time (a conjunction is mostly empty and would
    # hide disagreements), then a conjunction inside an audience with its implicit exclusions.
    rules = [draw_condition(data, op, pool) for op in OPERATORS]

    for rule in rules:
        sql = sql_ids(db_engine, conditions_clause([rule], NOW))
        python = python_ids(pool, lambda p, r=rule: evaluate([r], flat(p), NOW))
        assert sql == python, rule

    picked = data.draw(st.lists(st.sampled_from(rules), max_size=2))
    audience = replace(audience, where=tuple(picked))
    sql_members = sql_ids(db_engine, audience_clause(audience, NOW))
    python_members = python_ids(pool, lambda p: evaluate_audience(audience, flat(p), NOW))
    assert sql_members == python_members, audience
